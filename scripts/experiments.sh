#!/usr/bin/env bash
# The paper's experiments over several seeds, written to docs/results.md (mean ± std):
# Defaults: 5 seeds, ~35 min of one CPU core on a 2-core AMD EPYC.
#   Table 1  teacher (slice and all-classes protocol), STL, STL-KD, MTL, MTL-KD, LoRKD
#   KD       LoRKD without the teacher (β = 0) against LoRKD with it (β = 1, 0.1; α = 10, 4;
#            feature-level KD through a learned projection)
#   Table 3  LoRKD at rank 4, 8, 16
#   Transfer a downstream task (same look as one department, new labels) from that
#            department's expert, from the shared backbone, and from scratch
# Every run is one `lorkd-train fit` / `teacher` / `eval --json`; the tables are computed
# by scripts/experiments_table.py from the eval JSON files under $OUT.
# Knobs (env): SEEDS (default "1 2 3 4 5"), DATA (a spec with `seed={seed}` substituted per seed;
#   MedMNIST: DATA=medmnist:DIR:pathmnist,dermamnist — no substitution then), EPOCHS,
#   TEACHER_EPOCHS, ARCH, RANKS, OUT (run directory, default runs/experiments), RESULTS
#   (default docs/results.md), LR, BATCH, LORKD_TRAIN (a prebuilt lorkd-train to use);
#   transfer: DOWN_DATA (spec, `{seed}` substituted), TASK (its department), INITS (the
#   initialisations: expert:NAME, shared, scratch), TRANSFER_EPOCHS, TRANSFER_LR; TRANSFER=0 skips.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
lorkd_torch

SEEDS="${SEEDS:-1 2 3 4 5}"
default_data='synthetic:departments=3,classes=3,size=32,per_class=60,seed={seed}'
DATA="${DATA:-$default_data}"
EPOCHS="${EPOCHS:-8}"
TEACHER_EPOCHS="${TEACHER_EPOCHS:-6}"
ARCH="${ARCH:-shufflenet_v2_x0_5}"
RANKS="${RANKS:-4 8 16}"
LR="${LR:-0.01}"
BATCH="${BATCH:-32}"
OUT="${OUT:-runs/experiments}"
default_down='synthetic:departments=5,classes=3,size=32,per_class=60,seed={seed}'
DOWN_DATA="${DOWN_DATA:-$default_down}"
TASK="${TASK:-ultrasound-2}"
# ultrasound-2 has ultrasound's look and xray's deciding cue (size): both experts are tried.
INITS="${INITS:-expert:ultrasound expert:xray shared scratch}"
TRANSFER="${TRANSFER:-1}"
TRANSFER_EPOCHS="${TRANSFER_EPOCHS:-$EPOCHS}"
TRANSFER_LR="${TRANSFER_LR:-0.001}"
RESULTS="${RESULTS:-docs/results.md}"
# One libtorch thread per run: reproducible, and the OpenMP pool starves on a small shared CPU.
TRAIN=(--threads 1 --batch "$BATCH" --quiet)

if [ -n "${LORKD_TRAIN:-}" ]; then
  T="$LORKD_TRAIN" # a prebuilt binary (a long run that must not see a rebuild)
else
  cargo build -q -p lorkd-trainer
  T="${CARGO_TARGET_DIR:-target}/debug/lorkd-train"
fi
mkdir -p "$OUT"
start=$(date +%s)
first_rank="${RANKS%% *}"

run_eval() { # NAME DIR DATA
  "$T" eval "$2" --data "$3" --split test --json > "$OUT/$1.json"
}

for seed in $SEEDS; do
  pat='{seed}'
  data="${DATA//"$pat"/$seed}"
  d="$OUT/seed$seed"
  mkdir -p "$d"
  echo "== seed $seed: $data"
  fit() { # NAME ARGS...
    local name="$1"; shift
    [ -f "$OUT/$name-$seed.json" ] && return 0
    rm -rf "$d/$name"
    echo "   $name"
    "$T" fit --data "$data" --arch "$ARCH" --epochs "$EPOCHS" --lr "$LR" --seed "$seed" \
      --lora-alpha 8 "${TRAIN[@]}" "$@" -o "$d/$name" 2> "$d/$name.log" \
      || { echo "fit $name failed (log: $d/$name.log)"; tail -3 "$d/$name.log"; exit 1; }
    run_eval "$name-$seed" "$d/$name" "$data"
  }
  if [ ! -f "$OUT/teacher-$seed.json" ]; then
    echo "   teacher"
    "$T" teacher --arch resnet18 --data "$data" --epochs "$TEACHER_EPOCHS" --lr "$LR" \
      --seed "$seed" "${TRAIN[@]}" -o "$d/teacher" 2> "$d/teacher.log" \
      || { echo "teacher failed (log: $d/teacher.log)"; tail -3 "$d/teacher.log"; exit 1; }
    run_eval "teacher-$seed" "$d/teacher" "$data"
  fi
  # The paper's distillation weighting (α = 10, β = 1) for every KD row, whatever fit's
  # default; the ablation below varies it.
  teacher=(--teacher "$d/teacher")
  kd=(--alpha 10 --beta 1)
  fit stl --method stl
  fit stl-kd --method stl-kd "${teacher[@]}" "${kd[@]}"
  fit mtl --method mtl
  fit mtl-kd --method mtl-kd "${teacher[@]}" "${kd[@]}"
  for r in $RANKS; do
    fit "lorkd-r$r" --method lorkd --rank "$r" "${teacher[@]}" "${kd[@]}"
  done
  fit "lorkd-r$first_rank-nokd" --method lorkd --rank "$first_rank"
  fit "lorkd-r$first_rank-a4" --method lorkd --rank "$first_rank" "${teacher[@]}" --alpha 4 --beta 1
  fit "lorkd-r$first_rank-b01" --method lorkd --rank "$first_rank" "${teacher[@]}" --alpha 10 --beta 0.1
  fit "lorkd-r$first_rank-feat" --method lorkd --rank "$first_rank" "${teacher[@]}" --kd features --beta 1
  [ "$TRANSFER" = 1 ] || continue
  down="${DOWN_DATA//"$pat"/$seed}"
  for init in $INITS; do
    name="transfer-${init/:/-}"
    [ -f "$OUT/$name-$seed.json" ] && continue
    rm -rf "$d/$name"
    echo "   $name ($init → $TASK)"
    "$T" transfer --from "$d/lorkd-r$first_rank" --init "$init" --data "$down" --task "$TASK" \
      --epochs "$TRANSFER_EPOCHS" --lr "$TRANSFER_LR" --seed "$seed" "${TRAIN[@]}" \
      -o "$d/$name" 2> "$d/$name.log" \
      || { echo "transfer $init failed (log: $d/$name.log)"; tail -3 "$d/$name.log"; exit 1; }
    run_eval "$name-$seed" "$d/$name" "$down"
  done
done

secs=$(( $(date +%s) - start ))
python3 scripts/experiments_table.py "$OUT" --seeds $SEEDS --ranks $RANKS --transfer "$TRANSFER" \
  --inits $INITS --transfer-desc "$TASK of $DOWN_DATA, $TRANSFER_EPOCHS epochs, AdamW lr $TRANSFER_LR" \
  --command "SEEDS=\"$SEEDS\" DATA=\"$DATA\" EPOCHS=$EPOCHS TEACHER_EPOCHS=$TEACHER_EPOCHS ARCH=$ARCH RANKS=\"$RANKS\" LR=$LR BATCH=$BATCH scripts/experiments.sh" \
  --seconds "$secs" > "$RESULTS"
echo "wrote $RESULTS (${secs} s)"
