#!/usr/bin/env bash
# Trains and exports the shipped bundles on this 2-core CPU machine.
#   pfn, pfn-kinpid (the 13 kinpid inputs of NanoAOD v15), particlenet-lite: several passes within a wall-time
#   budget (cheap per jet: passes pay off).
#   part, part-irc, particlenet (full size): ONLY=curves, every network one pass over the same 200k distinct
#   jets (shards 0..CURVE_SHARDS-1) with a learning curve; each exported from it once its run has finished
#   (ParT ~1 h, IRC-safe ParT ~1.2 h, ParticleNet ~2.7 h on one core here: stopped runs resume exactly).
# Data: models/make_dataset.sh (5 classes, JetClass layout, generator with Delphes-like tracks):
#   train: samples/v2/train/<k>/ (seeds 1000 + k, 10k jets per class each), test: samples/v2/test (seed 2000);
#   SHARDS (default: every finished shard) sets how many training shards are used.
# R = 1.0 W/Z model: `make samples` (seeds 21 / 22).
set -euo pipefail
cd "$(dirname "$0")/.."
J=${JETTAGGER:-.venv/bin/jettagger}
OUT=${OUT:-runs}
CFG=src/jettagger_coffea/configs
DATA=${DATA:-samples/v2}
PROCESSES="qcd hbb wqq zqq tbqq"
SHARDS=${SHARDS:-$(for d in "$DATA"/train/*/; do if [ -f "$d/hbb_jetclass.root" ]; then echo x; fi; done | wc -l)}
shards() {  # the training files of shards 0..$1-1
  for k in $(seq 0 $(($1 - 1))); do for p in $PROCESSES; do echo -n "$DATA/train/$k/${p}_jetclass.root "; done; done
}
TRAIN=$(shards "$SHARDS")
TEST=$(for p in $PROCESSES; do echo -n "$DATA/test/${p}_jetclass.root "; done)
card() {  # the model card's data commands for a run on shards 0..$1-1
  echo "{\"data_command\": \"models/make_dataset.sh (SHARDS=$1: $1 x 10000 jets per class, seeds 1000..$((999 + $1)))\", \"test_command\": \"models/make_dataset.sh (test: 10000 jets per class, seed 2000)\"}"
}
DATA_CARD=$(card "$SHARDS")
SMALL_PART='{"num_layers": 3, "embed_dims": [64, 128, 64], "pair_embed_dims": [32, 32], "num_heads": 4, "num_cls_layers": 1}'
# IRC-safe ParT: angular tokens + the energy-free features of jetclass5_full.yaml (charge, 5 PID flags, d0, d0err,
# dz, dzerr), ln E attention bias (the seed's), jet pT and mass (IRC safe) on the class token
IRC_PART='{"num_layers": 3, "embed_dims": [64, 128, 64], "pair_embed_dims": [32, 32], "num_heads": 4, "num_cls_layers": 1, "token_features": [5, 6, 7, 8, 9, 10, 11, 12, 13, 14], "energy_bias": "energy", "jet_kinematics": true}'
NJ=${NJETS:-1000000}

train() {  # name network options minutes [data config, default jetclass5_full]
  $J train --data-config "$CFG/${5:-jetclass5_full}.yaml" --network "$2" --network-options "$3" --train $TRAIN \
    --output "$OUT/$1" --epochs 30 --max-minutes "$4" --max-train-jets "$NJ" --batch-size 128 --lr 2e-3 --threads 2 \
    ${INIT:+--init "$INIT"}
  $J export "$OUT/$1" --output "models/$1" --name "$1" --reference $TEST --card "$DATA_CARD"
}

CS=${CURVE_SHARDS:-5}
CURVE_TRAIN=$(shards "$CS")
CURVE_CARD=$(card "$CS")
curve() {  # name network options jets: one pass, validation metrics at 8 log-spaced counts of distinct jets
  # (--resume: a run stopped mid-pass, by SIGTERM or a session's end, goes on exactly where it was)
  $J train --data-config $CFG/jetclass5_full.yaml --network "$2" --network-options "$3" --train $CURVE_TRAIN \
    --output "$OUT/curve/$1" --epochs 1 --max-train-jets "$4" --max-val-jets 10000 --curve-points 8 \
    --batch-size 128 --lr 2e-3 --threads 1 --resume
}

finished() {  # folder run...: exit 75 (run again to go on) unless every run has ended
  local folder=$1 m
  for m in "${@:2}"; do
    if [ ! -f "$folder/$m/best_state.pt" ] || grep -q '"interrupted"' "$folder/$m/summary.json"; then exit 75; fi
  done
}

ONLY=${ONLY:-"pfn pfn-kinpid particlenet-lite curves r10"}
case " $ONLY " in *" pfn "*) train pfn pfn '{}' "${MIN_PFN:-8}";; esac
# the kinpid inputs (no impact parameters): what standard NanoAOD v15 provides
case " $ONLY " in *" pfn-kinpid "*) train pfn-kinpid pfn '{}' "${MIN_PFN:-8}" jetclass5_kinpid;; esac
case " $ONLY " in *" particlenet-lite "*) train particlenet-lite particlenet-lite '{}' "${MIN_PNL:-18}";; esac
case " $ONLY " in *" curves "*)  # two runs at a time, one thread each (as fast in all as one at a time)
  CJ=${CURVE_JETS:-200000}
  { curve pfn pfn '{}' "$CJ"; curve particlenet-lite particlenet-lite '{}' "$CJ"; curve part-irc part-irc "$IRC_PART" "$CJ"; } &
  { curve part part "$SMALL_PART" "$CJ"; curve particlenet particlenet '{}' "${CURVE_PN_JETS:-$CJ}"; } &
  wait  # a stream stopped before its end (exit 75: SIGTERM, --stop-after-jets) leaves the runs after it undone
  unfinished=0
  for m in pfn particlenet-lite part part-irc particlenet; do
    if [ -f "$OUT/curve/$m/best_state.pt" ] && ! grep -q '"interrupted"' "$OUT/curve/$m/summary.json"; then
      case $m in part | part-irc | particlenet)  # shipped from these runs; pfn, particlenet-lite: budget runs above
        $J export "$OUT/curve/$m" --output "models/$m" --name "$m" --reference $TEST --card "$CURVE_CARD";; esac
    else unfinished=1; fi
  done
  python models/learning_curves.py --runs "$OUT/curve"
  [ $unfinished = 0 ] || exit 75;;  # run again to go on
esac
# ONLY=finetune (not in the default; ~1.5-2 h on the 2 cores at FT_JETS=50000, both runs at once): the official
# JetClass ParticleNet (kin inputs, 10 classes; ../shared/reference/weights) fine-tuned on our 5 classes with a
# new head at 50 x lr (the ParT repository's recipe), against the same network from scratch on the same jets;
# one pass each with a learning curve, so the two compare at every count of distinct jets. The fine-tuned
# bundle's card says what it started from (init: path, sha256, the head's tensors not loaded).
case " $ONLY " in *" finetune "*)
  FT_WEIGHTS=${FT_WEIGHTS:-../shared/reference/weights/ParticleNet_kin.pt}
  FT_JETS=${FT_JETS:-50000}
  FT_VAL_JETS=${FT_VAL_JETS:-10000}  # validation jets at each curve point (full-size ParticleNet: ~1 min per 1000)
  ft() {  # name lr [extra train options]: one pass over FT_JETS distinct jets (shards 0..CURVE_SHARDS-1)
    $J train --data-config $CFG/jetclass5_kin.yaml --network particlenet --train $CURVE_TRAIN \
      --output "$OUT/finetune/$1" --epochs 1 --max-train-jets "$FT_JETS" --max-val-jets "$FT_VAL_JETS" --curve-points 8 \
      --batch-size 128 --lr "$2" --threads 1 --resume "${@:3}"
  }
  { ft particlenet-kin-ft 2e-4 --init "$FT_WEIGHTS" --lr-mult 'mod.fc.*=50'; } &
  { ft particlenet-kin-scratch 2e-3; } &
  wait
  finished "$OUT/finetune" particlenet-kin-ft particlenet-kin-scratch
  $J export "$OUT/finetune/particlenet-kin-ft" --output models/particlenet-kin-ft --name particlenet-kin-ft \
    --reference $TEST --card "$CURVE_CARD"
  # the scratch run is compared, not shipped: the same test-set metrics in a bundle under $OUT
  $J export "$OUT/finetune/particlenet-kin-scratch" --output "$OUT/finetune/particlenet-kin-scratch-bundle" \
    --name particlenet-kin-scratch --reference $TEST --card "$CURVE_CARD"
  python models/learning_curves.py --runs "$OUT/finetune" --figure docs/figures/finetune_curves.png \
    --compare particlenet-kin-ft particlenet-kin-scratch;;
esac
# ONLY=joint (not in the default; ~50 min on the 2 cores, both runs at once): ParticleNet-lite with the 5 classes
# and the jet mass in one head (jetclass5_joint.yaml: the resonance's generated mass, the generated jet's
# soft-drop mass for QCD) against the classifier alone (jetclass5_full.yaml, the same inputs), on the same
# jets for the same epochs. Data: JOINT_DATA/{train,test} made by the generator with its mass targets
# (`JOINT=1 models/make_dataset.sh`: 8000 training / 4000 test jets per class, seeds 3000 / 4000).
case " $ONLY " in *" joint "*)
  JDATA=${JOINT_DATA:-samples/v3}
  JTRAIN=$(for p in $PROCESSES; do echo -n "$JDATA/train/${p}_jetclass.root "; done)
  JTEST=$(for p in $PROCESSES; do echo -n "$JDATA/test/${p}_jetclass.root "; done)
  JCARD="{\"data_command\": \"jettagger generate --process <each of the 5> --njets 8000 --seed 3000 --jobs 2 --format jetclass\", \"test_command\": \"jettagger generate --process <each> --njets 4000 --seed 4000 --jobs 2\"}"
  jt() {  # name config: the same jets, epochs and seed for both
    $J train --data-config "$CFG/$2.yaml" --network particlenet-lite --train $JTRAIN --output "$OUT/joint/$1" \
      --epochs "${JOINT_EPOCHS:-12}" --batch-size 128 --lr 2e-3 --threads 1 --seed 1 --resume
  }
  { jt particlenet-lite-mass jetclass5_joint; } &
  { jt particlenet-lite-classes jetclass5_full; } &
  wait
  finished "$OUT/joint" particlenet-lite-mass particlenet-lite-classes
  $J export "$OUT/joint/particlenet-lite-mass" --output models/particlenet-lite-mass --name particlenet-lite-mass \
    --reference $JTEST --card "$JCARD"
  $J export "$OUT/joint/particlenet-lite-classes" --output "$OUT/joint/particlenet-lite-classes-bundle" \
    --name particlenet-lite-classes --reference $JTEST --card "$JCARD"
  $J evaluate --model models/particlenet-lite-mass --input $JTEST -o "$OUT/joint/eval-mass"
  $J evaluate --model "$OUT/joint/particlenet-lite-classes-bundle" --input $JTEST -o "$OUT/joint/eval-classes"
  python models/joint_table.py "$OUT/joint/eval-mass/metrics.json" "$OUT/joint/eval-classes/metrics.json"
  cp "$OUT/joint/eval-mass/response_mass.png" docs/figures/joint_mass_response.png
  # jet by jet: paired-bootstrap AUC differences, a second classifier seed (the training spread), sculpting
  $J train --data-config "$CFG/jetclass5_full.yaml" --network particlenet-lite --train $JTRAIN \
    --output "$OUT/joint/particlenet-lite-classes-seed2" --epochs "${JOINT_EPOCHS:-12}" --batch-size 128 \
    --lr 2e-3 --threads 1 --seed 2 --resume
  $J export "$OUT/joint/particlenet-lite-classes-seed2" --output "$OUT/joint/classes-seed2-bundle" \
    --name particlenet-lite-classes-seed2
  for b in models/particlenet-lite-mass "$OUT/joint/particlenet-lite-classes-bundle" "$OUT/joint/classes-seed2-bundle"; do
    $J predict --model "$b" --input $JTEST -o "$OUT/joint/$(basename "$b").parquet"
  done
  python models/joint_compare.py "$OUT/joint/particlenet-lite-mass.parquet" \
    "$OUT/joint/particlenet-lite-classes-bundle.parquet" --classes-seed2 "$OUT/joint/classes-seed2-bundle.parquet" \
    --test $JTEST;;
esac
case " $ONLY " in *" r10 "*) ;; *) exit 0;; esac

# seed-1 style W / Z vs QCD on R = 1.0 jets
$J train --data-config $CFG/wz_r10_kin.yaml --network particlenet-lite \
  --train samples/train_r10/qcd_jetclass.root samples/train_r10/wqq_jetclass.root samples/train_r10/zqq_jetclass.root \
  --output "$OUT/wz-r10-particlenet-lite" --epochs 30 --max-minutes "${MIN_R10:-8}" --max-train-jets 30000 \
  --batch-size 128 --lr 2e-3 --threads 2
$J export "$OUT/wz-r10-particlenet-lite" --output models/wz-r10-particlenet-lite --name wz-r10-particlenet-lite \
  --reference samples/test_r10/qcd_jetclass.root samples/test_r10/wqq_jetclass.root samples/test_r10/zqq_jetclass.root \
  --card '{"data_command": "jettagger generate --process qcd wqq zqq --njets 15000 --seed 21 --radius 1.0 --jobs 2 --format jetclass -o samples/train_r10"}'
