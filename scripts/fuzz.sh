#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS]: runs every cargo-fuzz target of runtime/fuzz (`cargo fuzz list`)
# for SECONDS each (default 60), one after the other, and prints one line per target:
#   fuzz <target>: <executions> executions in <s> s, cov <edges>, ft <features>, corpus <n>
# Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) when missing and builds with the
# stable toolchain (RUSTC_BOOTSTRAP=1 unlocks the -Z flags libFuzzer builds need), so it runs
# on a clean machine. Corpora: runtime/fuzz/corpus/<target> (git-ignored; none needed: the
# targets make their seeds in memory). A crash leaves its input in runtime/fuzz/artifacts and
# fails the script after the other targets ran.
#   FUZZ_SANITIZER=address|none (default none: safe Rust, twice the executions)
#   FUZZ_JOBS=N            libFuzzer -fork=N processes per target (default 1)
set -uo pipefail
secs="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked || { echo "fuzz.sh: cargo install cargo-fuzz failed" >&2; exit 1; }
fi
# Its own target dir: the fuzz build's flags would invalidate the host build's cache.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz"
fi
cd "$root/runtime/fuzz"
mapfile -t targets < <(cargo fuzz list)
[ "${#targets[@]}" -gt 0 ] || { echo "fuzz.sh: no fuzz targets" >&2; exit 1; }
logdir="$(mktemp -d)"
trap 'rm -rf "$logdir"' EXIT
san="${FUZZ_SANITIZER:-none}"
failed=()
lines=()
for t in "${targets[@]}"; do
  corpus="$root/runtime/fuzz/corpus/$t"
  mkdir -p "$corpus"
  echo "== fuzz $t (${secs}s, sanitizer $san)"
  # Build first, so the time limit is spent fuzzing (and a build error is reported as one).
  if ! cargo fuzz build -s "$san" -a "$t" >"$logdir/$t.build" 2>&1; then
    tail -20 "$logdir/$t.build"
    failed+=("$t (build)")
    continue
  fi
  args=(-max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1)
  [ "${FUZZ_JOBS:-1}" -gt 1 ] && args+=(-fork="$FUZZ_JOBS")
  cargo fuzz run -s "$san" -a "$t" "$corpus" -- "${args[@]}" >"$logdir/$t.log" 2>&1
  rc=$?
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$logdir/$t.log" | grep -oE '[0-9]+$' | tail -1)
  last=$(grep -E '^#[0-9]+' "$logdir/$t.log" | tail -1)
  cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.*ft: ([0-9]+).*/\1/p' <<<"$last")
  [ -n "$execs" ] || execs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last")
  ncorp=$(find "$corpus" -type f | wc -l)
  line="fuzz $t: ${execs:-?} executions in ${secs} s, cov ${cov:-?}, ft ${ft:-?}, corpus $ncorp"
  echo "$line"
  lines+=("$line")
  if [ "$rc" != 0 ]; then
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$logdir/$t.log" | head -10
    failed+=("$t")
  fi
done
echo
printf '%s\n' "${lines[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, no crash"
