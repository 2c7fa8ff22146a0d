#!/usr/bin/env bash
# The 5-class training and test sets of the shipped models (uncommitted; resumable, shard by shard).
#   test:  10 000 jets per class, seed 2000                -> $DATA/test/<process>_jetclass.root
#   train: SHARDS x 10 000 jets per class, seeds 1000 + k  -> $DATA/train/<k>/<process>_jetclass.root
#   more QCD for the rejections: QCD_EXTRA x 10 000 QCD jets, seeds 2001 + k -> $DATA/test_qcd/<k>/qcd_jetclass.root
#     (1/eps_b at 50 % counts the QCD jets that pass: 10 at R50 = 1000 with 10 000; 40 with 40 000)
#   the joint (classes + mass) study, with the generator's mass targets: JOINT=1 ->
#     $JOINT_DATA/train (8 000 jets per class, seed 3000, JetClass layout) and $JOINT_DATA/test (4 000 per class,
#     seed 4000, both layouts: `evaluate` reads the JetClass copy, `run` the NanoAOD one)
# Shards go class by class within a shard, so any prefix of shards is a balanced set. A finished file is
# never made again; an interrupted one is never left behind (written to a temporary folder, then moved).
set -euo pipefail
cd "$(dirname "$0")/.."
J=${JETTAGGER:-.venv/bin/jettagger}
DATA=${DATA:-samples/v2}
SHARDS=${SHARDS:-10}
QCD_EXTRA=${QCD_EXTRA:-3}
JOBS=${JOBS:-2}
PROCESSES="qcd wqq zqq tbqq hbb"

make_one() {  # folder seed njets process [format]
  local out=$1 seed=$2 njets=$3 p=$4 format=${5:-jetclass}
  [ -f "$out/${p}_jetclass.root" ] && return 0
  local tmp="$out/.tmp-$p"
  rm -rf "$tmp"
  $J generate --process "$p" --njets "$njets" --seed "$seed" --jobs "$JOBS" --format "$format" -o "$tmp"
  mv "$tmp/${p}"_*.root "$out/"
  rm -rf "$tmp"
}

if [ "${JOINT:-0}" = 1 ]; then
  JOINT_DATA=${JOINT_DATA:-samples/v3}
  for p in $PROCESSES; do make_one "$JOINT_DATA/train" 3000 8000 "$p"; done
  for p in $PROCESSES; do make_one "$JOINT_DATA/test" 4000 4000 "$p" both; done
  exit 0
fi

for p in $PROCESSES; do make_one "$DATA/test" 2000 10000 "$p"; done
for k in $(seq 0 $((QCD_EXTRA - 1))); do make_one "$DATA/test_qcd/$k" $((2001 + k)) 10000 qcd; done
for k in $(seq 0 $((SHARDS - 1))); do
  for p in $PROCESSES; do make_one "$DATA/train/$k" $((1000 + k)) 10000 "$p"; done
done
