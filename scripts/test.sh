#!/usr/bin/env bash
# The test command (what CI runs, .ci/run): installs what is missing, then
#   1. cargo fmt --check            2. cargo clippy --workspace --all-targets -D warnings
#   3. cargo test --workspace       4. lorkd-runtime built for thumbv7em-none-eabihf (build-std)
#   5. lorkd-runtime's tests (with the `threads` feature) for aarch64-unknown-linux-gnu under qemu-aarch64
#      (engine_simd again on -cpu cortex-a53: the NEON table without dotprod)
#   6. firmware/run-qemu (the firmware self-checks on emulated Cortex-M4F and M7)
#   7. scripts/fuzz.sh: every cargo-fuzz target for ${LORKD_FUZZ_SECONDS:-20} s (installs cargo-fuzz)
# Every step runs; the script fails if any failed, and ends with the test runners' summaries.
# ARM builds use their own target dir ($CARGO_TARGET_DIR/arm, default target/arm) so the host
# build cache stays valid.
set -uo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
t0=$SECONDS
logdir="$(mktemp -d)"
trap 'rm -rf "$logdir"' EXIT
failed=()
results=()

step() {
  local name="$1"
  shift
  local s=$SECONDS
  echo
  echo "== [$name] $*"
  "$@" 2>&1 | tee "$logdir/$name.log"
  local rc=${PIPESTATUS[0]}
  results+=("$(printf '%-10s %-4s %4ss' "$name" "$([ "$rc" = 0 ] && echo ok || echo FAIL)" "$((SECONDS - s))")")
  [ "$rc" = 0 ] || failed+=("$name")
  return 0
}

# --- install (idempotent; fast when warm) ---------------------------------------------------
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || { echo "test.sh: cargo (rustup) not found" >&2; exit 1; }
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done
source scripts/env.sh || { echo "test.sh: libtorch venv setup failed" >&2; exit 1; }
"$root/scripts/setup-arm.sh" >/dev/null || { echo "test.sh: ARM toolchain setup failed" >&2; exit 1; }
echo "test.sh: toolchains ready ($((SECONDS - t0))s)"

host_target="${CARGO_TARGET_DIR:-$root/target}"
arm_target="$host_target/arm"
debian() {
  env RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_DIR="$arm_target" \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64 \
    /usr/bin/cargo "$@"
}

# --- checks -----------------------------------------------------------------------------------
step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step test cargo test --workspace
step thumbv7em debian build -p lorkd-runtime --target thumbv7em-none-eabihf -Z build-std=core
step aarch64 debian test -p lorkd-runtime --features threads --target aarch64-unknown-linux-gnu
# qemu-aarch64's default CPU has dotprod; the SIMD twins again on one without it (cortex-a53).
step a64-nodot debian --config "target.aarch64-unknown-linux-gnu.runner=['qemu-aarch64','-cpu','cortex-a53']" \
  test -p lorkd-runtime --features threads --target aarch64-unknown-linux-gnu --test engine_simd
step qemu env LORKD_ARM_TARGET="$arm_target" "$root/firmware/run-qemu"
step fuzz "$root/scripts/fuzz.sh" "${LORKD_FUZZ_SECONDS:-20}"

# --- summary ----------------------------------------------------------------------------------
echo
echo "== summary"
for n in test aarch64; do
  [ -f "$logdir/$n.log" ] || continue
  grep -h '^test result:' "$logdir/$n.log" | awk -v n="$n" '
    { p += $4; f += $6; i += $8 } END { printf "%-10s %d test binaries: %d passed, %d failed, %d ignored\n", n, NR, p, f, i }'
done
grep -h '^fuzz [a-z_]*:' "$logdir/fuzz.log" 2>/dev/null
grep -h '^\[fw\] result:\|^\[fw\] SKIPPED\|^firmware/run-qemu:' "$logdir/qemu.log" 2>/dev/null | sort | uniq -c
printf '%s\n' "${results[@]}"
echo "total $((SECONDS - t0))s"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all steps passed"
