#!/usr/bin/env bash
# The demo: the whole product on synthetic departments, from training to a field update.
#   teacher (ResNet-18) → LoRKD decomposition (ShuffleNetV2 0.5x, EKS) and the MTL baseline →
#   int8 bundle → every department through the runtime → switch timing → one department
#   fine-tuned (its factors and head only) → signed delta update applied to a device flash
#   image → that department's version and accuracy from the image, before and after → table,
#   report.json and PNG plots in $RUN.
# Knobs (env): RUN (output dir, default runs/demo), EPOCHS, TEACHER_EPOCHS, FT_EPOCHS, DATA,
#   ARCH, RANK, DEPT (the department updated; default: the bundle's first).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
lorkd_torch

RUN="${RUN:-runs/demo}"
DATA="${DATA:-synthetic:departments=4,classes=3,size=32,per_class=100,seed=0}"
EPOCHS="${EPOCHS:-6}"
TEACHER_EPOCHS="${TEACHER_EPOCHS:-3}"
FT_EPOCHS="${FT_EPOCHS:-6}"
ARCH="${ARCH:-shufflenet_v2_x0_5}"
RANK="${RANK:-8}"
# One libtorch thread: its OpenMP pool starves itself on a small shared CPU (docs/training.md).
TRAIN=(--threads 1 --batch 32)

step "build"
lorkd_bins
rm -rf "$RUN" && mkdir -p "$RUN"
start=$(date +%s)

step "teacher: ResNet-18 over all departments' classes ($TEACHER_EPOCHS epochs)"
$T teacher --arch resnet18 --data "$DATA" --epochs "$TEACHER_EPOCHS" "${TRAIN[@]}" --lr 0.01 -o "$RUN/teacher"

step "LoRKD: $ARCH, rank $RANK, distilled from the teacher ($EPOCHS epochs)"
$T fit --method lorkd --arch "$ARCH" --rank "$RANK" --data "$DATA" --teacher "$RUN/teacher" \
  --epochs "$EPOCHS" "${TRAIN[@]}" --lr 0.01 --lora-alpha 8 --seed 0 -o "$RUN/lorkd"

step "baseline: MTL (shared model + department heads, $EPOCHS epochs)"
$T fit --method mtl --arch "$ARCH" --data "$DATA" --epochs "$EPOCHS" "${TRAIN[@]}" --lr 0.01 --seed 0 -o "$RUN/mtl"

step "evaluate in libtorch (test split; the teacher per department: argmax over its class slice)"
$T eval "$RUN/teacher" --data "$DATA" --threads 1 --json > "$RUN/eval-teacher.json"
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

step "field update: fine-tune one department, ship it as a signed delta, apply it to a device flash image"
DEPT="${DEPT:-$($L inspect "$RUN/model.lorkd" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["departments"][0]["name"])')}"
FLASH=(--image "$RUN/flash.img" --pubkey "$RUN/key.pub")
$L delta image --base "$RUN/model.lorkd" -o "$RUN/flash.img"
echo "-- the device before the update ($DEPT, test split, from the flash image):"
$L eval "${FLASH[@]}" --data "$DATA" --dept "$DEPT" --save-inputs "$RUN/inputs" --quiet --json > "$RUN/eval-flash-before.json"
$L eval "${FLASH[@]}" --data "$DATA" --dept "$DEPT" --quiet
$L run "${FLASH[@]}" --dept "$DEPT" "$RUN/inputs/$DEPT.npy"
$T finetune --from "$RUN/lorkd" --dept "$DEPT" --teacher "$RUN/teacher" --data "$DATA" --epochs "$FT_EPOCHS" \
  "${TRAIN[@]}" -o "$RUN/finetune-$DEPT"
$L delta make --base "$RUN/model.lorkd" --from "$RUN/finetune-$DEPT/model.safetensors" --dept "$DEPT" \
  --version 2 --key "$RUN/key" --calib-data "$DATA" -o "$RUN/$DEPT-v2.lkdu"
$L delta verify "$RUN/$DEPT-v2.lkdu" --base "$RUN/model.lorkd" --pubkey "$RUN/key.pub"
$L delta apply "$RUN/$DEPT-v2.lkdu" "${FLASH[@]}"
$L delta status "${FLASH[@]}"
echo "-- the device after the update (every department, test split, from the flash image):"
$L run "${FLASH[@]}" --dept "$DEPT" "$RUN/inputs/$DEPT.npy"
$L eval "${FLASH[@]}" --data "$DATA" --quiet --json > "$RUN/eval-flash-after.json"
$L eval "${FLASH[@]}" --data "$DATA" --quiet
python3 - "$RUN" "$DEPT" > "$RUN/update.json" <<'PY'
import json, sys
run, dept = sys.argv[1], sys.argv[2]
def pick(f):
    d = [x for x in json.load(open(f"{run}/{f}"))["departments"] if x["name"] == dept][0]
    return {"version": d["version"], "source": d["source"], "accuracy": round(d["accuracy"], 4)}
print(json.dumps({"department": dept, "before": pick("eval-flash-before.json"), "after": pick("eval-flash-after.json")}))
PY

step "report"
$L report --out "$RUN" \
  --column teacher="$RUN/eval-teacher.json" --column mtl="$RUN/eval-mtl.json" \
  --column lorkd-f32="$RUN/eval-lorkd.json" --column lorkd-int8-bundle="$RUN/eval-bundle-int8.json" \
  --column device-after-update="$RUN/eval-flash-after.json" \
  --curve teacher="$RUN/teacher/metrics.jsonl" --curve mtl="$RUN/mtl/metrics.jsonl" \
  --curve lorkd="$RUN/lorkd/metrics.jsonl" --curve "finetune-$DEPT"="$RUN/finetune-$DEPT/metrics.jsonl" \
  --fact bundle=@"$RUN/inspect.json" --fact bench_materialized=@"$RUN/bench-materialized.json" \
  --fact bench_streaming=@"$RUN/bench-streaming.json" --fact update=@"$RUN/update.json"
echo "demo finished in $(( $(date +%s) - start )) s; outputs in $RUN (report.json, accuracy.png, curves.png)"
