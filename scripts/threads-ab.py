#!/usr/bin/env python3
"""Engine threads, builds A/B: the speed-up of N threads over one, measured in one process.

    scripts/threads-ab.py ROUNDS NAME=LORKD_BIN... [--threads N] [--bundles B.lorkd:ITERS...]

Each round runs every build in turn on every bundle (default: the BENCHMARKS bundles
`x1_0-224-int8.lorkd:20` and `x0_5-64-int8.lorkd:200` in $LORKD_BENCH_DIR, /tmp/speed-bench
if unset) with `lorkd bench BUNDLE --iters ITERS --threads N --vs-one-thread --json`: a
one-thread engine and an N-thread engine in the same process, in alternating blocks, each
run reporting the median of its blocks' ratios (on a shared VM whose speed drifts between
runs, back-to-back blocks cancel most of the drift that separate processes do not). Prints
per (bundle, build) the median over rounds of each run's ratio and of its N-thread and
one-thread medians, with the range over rounds, and the ratio of the N-thread engine with
balanced cuts that the same runs time (`Engine::set_balanced_cuts`).
"""
import json
import os
import statistics as st
import subprocess
import sys


def main():
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        sys.exit(__doc__)
    rounds, threads, builds, bundles = int(args[0]), 2, [], []
    i = 1
    while i < len(args):
        if args[i] == "--threads":
            threads, i = int(args[i + 1]), i + 2
        elif args[i] == "--bundles":
            i += 1
            while i < len(args) and not args[i].startswith("--"):
                bundles.append(args[i])
                i += 1
        else:
            builds.append(args[i])
            i += 1
    if not builds:
        sys.exit("give at least one NAME=LORKD_BIN")
    if not bundles:
        d = os.environ.get("LORKD_BENCH_DIR", "/tmp/speed-bench")
        bundles = [f"{d}/x1_0-224-int8.lorkd:20", f"{d}/x0_5-64-int8.lorkd:200"]
    res = {}
    for _ in range(rounds):
        for b in builds:
            name, exe = b.split("=", 1)
            for spec in bundles:
                bundle, iters = spec.rsplit(":", 1)
                cmd = [exe, "bench", bundle, "--iters", iters, "--threads", str(threads),
                       "--vs-one-thread", "--json"]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    sys.exit(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
                s = json.loads(out.stdout)["speedup"]
                key = (os.path.basename(bundle), name)
                # (Builds before session 53 time no balanced engine: "-".)
                res.setdefault(key, []).append(
                    (s["ratio_median"], s["threads_ms_median"], s["one_thread_ms_median"],
                     s.get("balanced_cuts_ratio_median")))
    print(f"| bundle | build | speed-up at {threads} threads (median of runs) [min–max] "
          f"| {threads} threads ms [min–max] | 1 thread ms [min–max] "
          f"| balanced cuts' speed-up [min–max] |")
    print("|---|---|---|---|---|---|")
    for (bundle, name), v in res.items():
        def f(i):
            xs = [x[i] for x in v if x[i] is not None]
            if not xs:
                return "-"
            return f"{st.median(xs):.2f} [{min(xs):.2f}–{max(xs):.2f}]"
        print(f"| {bundle} | {name} | {f(0)} | {f(1)} | {f(2)} | {f(3)} |")


if __name__ == "__main__":
    main()
