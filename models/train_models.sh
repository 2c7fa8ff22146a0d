#!/usr/bin/env bash
# Trains and exports the shipped bundles on this 2-core CPU machine, with wall-time budgets.
# Data: `make samples` (R = 0.8: seeds 11 train / 12 test; R = 1.0: seeds 21 / 22).
set -euo pipefail
cd "$(dirname "$0")/.."
J=${JETTAGGER:-.venv/bin/jettagger}
OUT=${OUT:-runs}
CFG=src/jettagger_coffea/configs
TRAIN="samples/train/qcd_jetclass.root samples/train/wqq_jetclass.root samples/train/zqq_jetclass.root samples/train/tbqq_jetclass.root"
TEST="samples/test/qcd_jetclass.root samples/test/wqq_jetclass.root samples/test/zqq_jetclass.root samples/test/tbqq_jetclass.root"
DATA='{"data_command": "jettagger generate --process qcd wqq zqq tbqq --njets 25000 --seed 11 --jobs 2 --format jetclass -o samples/train", "test_command": "jettagger generate --process qcd wqq zqq tbqq --njets 5000 --seed 12 --jobs 2 --format jetclass -o samples/test"}'
SMALL_PART='{"num_layers": 3, "embed_dims": [64, 128, 64], "pair_embed_dims": [32, 32], "num_heads": 4, "num_cls_layers": 1}'
# IRC-safe ParT: angular tokens + the energy-free features of wzt_full.yaml (charge, 5 PID flags, d0, d0err, dz, dzerr),
# ln E attention bias (the seed's), jet pT and mass (IRC safe) on the class token
IRC_PART='{"num_layers": 3, "embed_dims": [64, 128, 64], "pair_embed_dims": [32, 32], "num_heads": 4, "num_cls_layers": 1, "token_features": [5, 6, 7, 8, 9, 10, 11, 12, 13, 14], "energy_bias": "energy", "jet_kinematics": true}'
NJ=${NJETS:-40000}

train() {  # name network options minutes [extra]
  $J train --data-config $CFG/wzt_full.yaml --network "$2" --network-options "$3" --train $TRAIN \
    --output "$OUT/$1" --epochs 30 --max-minutes "$4" --max-train-jets "$NJ" --batch-size 128 --lr 2e-3 --threads 2
  $J export "$OUT/$1" --output "models/$1" --name "$1" --reference $TEST --card "$DATA"
}

ONLY=${ONLY:-"pfn particlenet-lite part part-irc r10"}
case " $ONLY " in *" pfn "*) train pfn pfn '{}' "${MIN_PFN:-8}";; esac
case " $ONLY " in *" particlenet-lite "*) train particlenet-lite particlenet-lite '{}' "${MIN_PNL:-18}";; esac
case " $ONLY " in *" part "*) train part part "$SMALL_PART" "${MIN_PART:-22}";; esac
case " $ONLY " in *" part-irc "*) train part-irc part-irc "$IRC_PART" "${MIN_IRC:-24}";; esac
# The shipped part-irc continues from that run with the float32-stable features (continuous pair feature,
# delta = 0.01; massless pair-sum jet mass): two warm-started runs of 25 min on samples/train (10k jets per
# class; the first 10k of the 25k above), the first at delta = 0.001, then:
case " $ONLY " in *" part-irc-warm "*)
  $J train --data-config $CFG/wzt_full.yaml --network part-irc --network-options "$IRC_PART" --train $TRAIN \
    --output "$OUT/part-irc" --epochs 30 --max-minutes 25 --max-train-jets 40000 --batch-size 128 --lr 1e-3 \
    --threads 2 --init "${IRC_INIT:-$OUT/part-irc-d1e-3/best_state.pt}"
  $J export "$OUT/part-irc" --output models/part-irc --name part-irc --reference $TEST --card "$DATA";; esac
case " $ONLY " in *" r10 "*) ;; *) exit 0;; esac

# seed-1 style W / Z vs QCD on R = 1.0 jets
$J train --data-config $CFG/wz_r10_kin.yaml --network particlenet-lite \
  --train samples/train_r10/qcd_jetclass.root samples/train_r10/wqq_jetclass.root samples/train_r10/zqq_jetclass.root \
  --output "$OUT/wz-r10-particlenet-lite" --epochs 30 --max-minutes "${MIN_R10:-8}" --max-train-jets 30000 \
  --batch-size 128 --lr 2e-3 --threads 2
$J export "$OUT/wz-r10-particlenet-lite" --output models/wz-r10-particlenet-lite --name wz-r10-particlenet-lite \
  --reference samples/test_r10/qcd_jetclass.root samples/test_r10/wqq_jetclass.root samples/test_r10/zqq_jetclass.root \
  --card '{"data_command": "jettagger generate --process qcd wqq zqq --njets 15000 --seed 21 --radius 1.0 --jobs 2 --format jetclass -o samples/train_r10"}'
