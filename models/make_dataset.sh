#!/usr/bin/env bash
# The 5-class training and test sets of the shipped models (uncommitted; resumable, shard by shard).
#   test:  10 000 jets per class, seed 2000                -> $DATA/test/<process>_jetclass.root
#   train: SHARDS x 10 000 jets per class, seeds 1000 + k  -> $DATA/train/<k>/<process>_jetclass.root
#   more QCD for the rejections: QCD_EXTRA x 10 000 QCD jets, seeds 2001 + k -> $DATA/test_qcd/<k>/qcd_jetclass.root
#     (1/eps_b at 50 % counts the QCD jets that pass: 10 at R50 = 1000 with 10 000; 40 with 40 000)
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

make_one() {  # folder seed njets process
  local out=$1 seed=$2 njets=$3 p=$4
  [ -f "$out/${p}_jetclass.root" ] && return 0
  local tmp="$out/.tmp-$p"
  rm -rf "$tmp"
  $J generate --process "$p" --njets "$njets" --seed "$seed" --jobs "$JOBS" --format jetclass -o "$tmp"
  mv "$tmp/${p}_jetclass.root" "$out/${p}_jetclass.root"
  rm -rf "$tmp"
}

for p in $PROCESSES; do make_one "$DATA/test" 2000 10000 "$p"; done
for k in $(seq 0 $((QCD_EXTRA - 1))); do make_one "$DATA/test_qcd/$k" $((2001 + k)) 10000 qcd; done
for k in $(seq 0 $((SHARDS - 1))); do
  for p in $PROCESSES; do make_one "$DATA/train/$k" $((1000 + k)) 10000 "$p"; done
done
