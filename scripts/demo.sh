#!/usr/bin/env bash
# The demo: the whole product on synthetic departments, from training to a field update.
#   teacher (ResNet-18) → LoRKD decomposition (ShuffleNetV2 0.5x, EKS) and the MTL baseline →
#   int8 bundle → every department through the runtime → switch timing → signed delta update
#   applied to a device flash image → table, report.json and PNG plots in $RUN.
# Knobs (env): RUN (output dir, default runs/demo), EPOCHS, TEACHER_EPOCHS, DATA.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

RUN="${RUN:-runs/demo}"
DATA="${DATA:-synthetic:departments=4,classes=3,size=32,per_class=100,seed=0}"
EPOCHS="${EPOCHS:-6}"
TEACHER_EPOCHS="${TEACHER_EPOCHS:-3}"
ARCH="${ARCH:-shufflenet_v2_x0_5}"
RANK="${RANK:-8}"
# One libtorch thread: its OpenMP pool starves itself on a small shared CPU (docs/training.md).
TRAIN=(--threads 1 --batch 32)

step() { printf '\n== %s\n' "$*"; }

# The dev profile builds every dependency (libtorch bindings, tract) at opt-level 3 and shares
# its cache with the tests, so the demo does not pay for a second, release build of tract.
step "build"
cargo build -q -p lorkd-trainer -p lorkd-tools
T="${CARGO_TARGET_DIR:-target}/debug/lorkd-train"
L="${CARGO_TARGET_DIR:-target}/debug/lorkd"
rm -rf "$RUN" && mkdir -p "$RUN"
start=$(date +%s)

step "teacher: ResNet-18 over all departments' classes ($TEACHER_EPOCHS epochs)"
$T teacher --arch resnet18 --data "$DATA" --epochs "$TEACHER_EPOCHS" "${TRAIN[@]}" --lr 0.01 -o "$RUN/teacher.safetensors"

step "LoRKD: $ARCH, rank $RANK, distilled from the teacher ($EPOCHS epochs)"
$T fit --method lorkd --arch "$ARCH" --rank "$RANK" --data "$DATA" --teacher "$RUN/teacher.safetensors" \
  --epochs "$EPOCHS" "${TRAIN[@]}" --lr 0.01 --lora-alpha 8 --seed 0 -o "$RUN/lorkd"

step "baseline: MTL (shared model + department heads, $EPOCHS epochs)"
$T fit --method mtl --arch "$ARCH" --data "$DATA" --epochs "$EPOCHS" "${TRAIN[@]}" --lr 0.01 --seed 0 -o "$RUN/mtl"

step "evaluate in libtorch (test split)"
$T eval "$RUN/mtl" --data "$DATA" --threads 1 --json > "$RUN/eval-mtl.json"
$T eval "$RUN/lorkd" --data "$DATA" --threads 1 --json > "$RUN/eval-lorkd.json"

step "pack an int8 bundle (int8 shared weights, int8 deltas, per-department calibration), signed"
$L keygen -o "$RUN/key"
$L pack "$RUN/lorkd/model.safetensors" --weights int8 --delta int8 --calib-data "$DATA" \
  --sign "$RUN/key" -o "$RUN/model.lorkd"
$L pack "$RUN/lorkd/model.safetensors" -o "$RUN/model-f32.lorkd"
$L inspect "$RUN/model.lorkd" --pubkey "$RUN/key.pub"
$L inspect "$RUN/model.lorkd" --pubkey "$RUN/key.pub" --json > "$RUN/inspect.json"

step "verify the float bundle against tract (ONNX export of every department)"
$L verify "$RUN/model-f32.lorkd"

step "every department through the runtime (no libtorch)"
$T eval-bundle "$RUN/model-f32.lorkd" --data "$DATA" --json > "$RUN/eval-bundle-f32.json"
$T eval-bundle "$RUN/model.lorkd" --data "$DATA" --json > "$RUN/eval-bundle-int8.json"
$T eval-bundle "$RUN/model.lorkd" --data "$DATA"

step "switch and inference time (materialized and streaming)"
$L bench "$RUN/model.lorkd" --mode materialized --iters 30 --json | tee "$RUN/bench-materialized.json"
$L bench "$RUN/model.lorkd" --mode streaming --iters 30 --json | tee "$RUN/bench-streaming.json"

step "field update: a signed delta for one department, applied to a device flash image"
DEPT=$($L inspect "$RUN/model.lorkd" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["departments"][0]["name"])')
$L delta image --base "$RUN/model.lorkd" -o "$RUN/flash.img"
$L delta make --base "$RUN/model.lorkd" --from "$RUN/lorkd/model.safetensors" --dept "$DEPT" \
  --version 2 --key "$RUN/key" -o "$RUN/$DEPT-v2.lkdu"
$L delta verify "$RUN/$DEPT-v2.lkdu" --base "$RUN/model.lorkd" --pubkey "$RUN/key.pub"
$L delta apply "$RUN/$DEPT-v2.lkdu" --image "$RUN/flash.img" --pubkey "$RUN/key.pub"
$L delta status --image "$RUN/flash.img" --pubkey "$RUN/key.pub"

step "report"
$L report --out "$RUN" \
  --column mtl="$RUN/eval-mtl.json" \
  --column lorkd-f32="$RUN/eval-lorkd.json" --column lorkd-int8-bundle="$RUN/eval-bundle-int8.json" \
  --curve mtl="$RUN/mtl/metrics.jsonl" --curve lorkd="$RUN/lorkd/metrics.jsonl" \
  --fact bundle=@"$RUN/inspect.json" --fact bench_materialized=@"$RUN/bench-materialized.json" \
  --fact bench_streaming=@"$RUN/bench-streaming.json"
echo "demo finished in $(( $(date +%s) - start )) s; outputs in $RUN (report.json, accuracy.png, curves.png)"
