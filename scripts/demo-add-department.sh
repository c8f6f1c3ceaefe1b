#!/usr/bin/env bash
# The second demo: a department the factory bundle never had, added in the field.
#   a LoRKD model over four synthetic departments, packed int8 and signed, written to a device
#   flash image → `lorkd-train add-department` trains a fifth department's factors and head
#   (the four and the shared weights bit-identical) → `lorkd delta make --add` ships it as a
#   signed package → `lorkd delta apply` adds it to the image → the image, booted like the
#   device, answers for five departments: the fifth from its slot, int8, next to the float
#   accuracy the trainer measured; the factory four with byte-identical answers.
# Reuses $RUN's trained model and bundle when `scripts/demo.sh` made them (RUN=runs/demo),
# else trains one. Knobs (env): RUN, EPOCHS, ADD_EPOCHS, DATA (four departments; the fifth is
#   the same spec with departments=5), ARCH, RANK.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
lorkd_torch

RUN="${RUN:-runs/demo}"
DATA="${DATA:-synthetic:departments=4,classes=3,size=32,per_class=100,seed=0}"
DATA5="${DATA/departments=4/departments=5}"
[[ "$DATA5" != "$DATA" ]] || { echo "DATA must contain departments=4" >&2; exit 1; }
EPOCHS="${EPOCHS:-6}"
ADD_EPOCHS="${ADD_EPOCHS:-6}"
ARCH="${ARCH:-shufflenet_v2_x0_5}"
RANK="${RANK:-8}"
TRAIN=(--threads 1 --batch 32)

step "build"
lorkd_bins
mkdir -p "$RUN"
start=$(date +%s)

if [[ ! -f "$RUN/model.lorkd" || ! -f "$RUN/lorkd/model.safetensors" || ! -f "$RUN/key" ]]; then
  step "the factory model: LoRKD over four departments ($EPOCHS epochs), int8 bundle, signed"
  rm -rf "$RUN/lorkd"
  $T fit --method lorkd --arch "$ARCH" --rank "$RANK" --data "$DATA" \
    --epochs "$EPOCHS" "${TRAIN[@]}" --lr 0.01 --lora-alpha 8 --seed 0 -o "$RUN/lorkd"
  [[ -f "$RUN/key" ]] || $L keygen -o "$RUN/key"
  $L pack "$RUN/lorkd/model.safetensors" --weights int8 --delta int8 --calib-data "$DATA" \
    --sign "$RUN/key" -o "$RUN/model.lorkd"
else
  step "the factory model: reusing $RUN/lorkd and $RUN/model.lorkd"
fi
$L inspect "$RUN/model.lorkd" --pubkey "$RUN/key.pub"

step "the device as it left the factory (four departments, from a flash image)"
IMG="$RUN/flash-add.img"
FLASH=(--image "$IMG" --pubkey "$RUN/key.pub")
$L delta image --base "$RUN/model.lorkd" -o "$IMG"
rm -rf "$RUN/add-inputs" "$RUN/add-answers" && mkdir -p "$RUN/add-answers"
$L eval "${FLASH[@]}" --data "$DATA" --save-inputs "$RUN/add-inputs" --quiet --json > "$RUN/eval-add-before.json"
$L eval "${FLASH[@]}" --data "$DATA" --quiet
DEPTS=$(python3 -c 'import json,sys; print(" ".join(d["name"] for d in json.load(open(sys.argv[1]))["departments"]))' "$RUN/eval-add-before.json")
for d in $DEPTS; do $L run "${FLASH[@]}" --dept "$d" "$RUN/add-inputs/$d.npy" --json > "$RUN/add-answers/$d-before.json"; done

step "train the fifth department (its factors and head only; $ADD_EPOCHS epochs)"
rm -rf "$RUN/add"
$T add-department --from "$RUN/lorkd" --data "$DATA5" --epochs "$ADD_EPOCHS" "${TRAIN[@]}" -o "$RUN/add"
NEW=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["department"])' "$RUN/add/run.json")
$T eval "$RUN/add" --data "$DATA5" --threads 1 --json > "$RUN/eval-add-float.json"

step "ship it: a signed package that adds department $NEW"
$L delta make --add --base "$RUN/model.lorkd" --from "$RUN/add/model.safetensors" --dept "$NEW" \
  --version 1 --key "$RUN/key" --calib-data "$DATA5" -o "$RUN/$NEW-v1.lkdu"
$L delta verify "$RUN/$NEW-v1.lkdu" --base "$RUN/model.lorkd" --pubkey "$RUN/key.pub"

step "add it in the field"
$L delta apply "$RUN/$NEW-v1.lkdu" "${FLASH[@]}"
$L delta status "${FLASH[@]}"
$L eval "${FLASH[@]}" --data "$DATA5" --save-inputs "$RUN/add-inputs" --quiet --json > "$RUN/eval-add-after.json"
$L eval "${FLASH[@]}" --data "$DATA5" --quiet
$L run "${FLASH[@]}" --dept "$NEW" "$RUN/add-inputs/$NEW.npy"
for d in $DEPTS; do $L run "${FLASH[@]}" --dept "$d" "$RUN/add-inputs/$d.npy" --json > "$RUN/add-answers/$d-after.json"; done

step "check"
python3 - "$RUN" "$NEW" $DEPTS <<'PY' | tee "$RUN/add-department.json"
import json, sys
run, new, depts = sys.argv[1], sys.argv[2], sys.argv[3:]
after = {d["name"]: d for d in json.load(open(f"{run}/eval-add-after.json"))["departments"]}
before = {d["name"]: d for d in json.load(open(f"{run}/eval-add-before.json"))["departments"]}
flt = {d["name"]: d for d in json.load(open(f"{run}/eval-add-float.json"))["departments"]}
same = all(json.load(open(f"{run}/add-answers/{d}-before.json"))["results"]
           == json.load(open(f"{run}/add-answers/{d}-after.json"))["results"] for d in depts)
f = flt[new]
float_acc = f.get("experts", f.get("accuracy"))
out = {
    "added": new,
    "device_int8": {"accuracy": round(after[new]["accuracy"], 4), "source": after[new]["source"], "version": after[new]["version"]},
    "trainer_float": round(float_acc, 4),
    "factory_answers_byte_identical": same,
    "factory_accuracy_before_after": {d: [round(before[d]["accuracy"], 4), round(after[d]["accuracy"], 4)] for d in depts},
}
print(json.dumps(out))
assert same, "a factory department's answers changed"
assert after[new]["source"].startswith("slot"), after[new]
PY
echo "add-department demo finished in $(( $(date +%s) - start )) s; outputs in $RUN"
