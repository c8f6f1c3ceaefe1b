#!/usr/bin/env python3
"""Engine threads: speed-up at N threads against one, and what the machine gives two processes.

    scripts/threads-bench.py ROUNDS BUNDLE.lorkd:ITERS... -- NAME=LORKD_BIN... [--threads N]

Each round runs, for every bundle and build in turn, `lorkd bench BUNDLE --iters ITERS
--threads T --json` at T = 1 and T = N (default 2), then N single-threaded runs side by
side (separate processes: the throughput the machine's cores give with no coordination at
all, the ceiling a fork-join per op can approach). On a shared VM single medians move by
tens of percent between runs, so it prints per (bundle, build): the fastest and the median
run at 1 and N threads, and the per-round ratios (1 thread / N threads, run back to back)
as median [min–max], with the ceiling's likewise; then the department switch's the same
way. The arena is the same for every T (it is printed once per run and compared).
"""
import json
import statistics as st
import subprocess
import sys


def bench(exe, bundle, iters, threads):
    cmd = [exe, "bench", bundle, "--iters", iters, "--threads", str(threads), "--json"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def result(p):
    out, _ = p.communicate()
    if p.returncode != 0:
        sys.exit(f"lorkd bench failed ({p.returncode})")
    d = json.loads(out)
    return d["infer_ms_median"], d["arena_bytes"], d["switch_ms_median"]


def spread(v):
    return f"{st.median(v):.2f} [{min(v):.2f}–{max(v):.2f}]"


def main():
    args = sys.argv[1:]
    n = 2
    if "--threads" in args:
        i = args.index("--threads")
        n = int(args[i + 1])
        del args[i : i + 2]
    if "--" not in args or len(args) < 4:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    cut = args.index("--")
    rounds = int(args[0])
    bundles = [a.rsplit(":", 1) for a in args[1:cut]]
    builds = [a.split("=", 1) for a in args[cut + 1 :]]
    runs = {}
    for r in range(rounds):
        for bundle, iters in bundles:
            for name, exe in builds:
                one, a1, s1 = result(bench(exe, bundle, iters, 1))
                many, an, sn = result(bench(exe, bundle, iters, n))
                side = [bench(exe, bundle, iters, 1) for _ in range(n)]
                apart = st.mean(result(p)[0] for p in side)
                if a1 != an:
                    sys.exit(f"arena differs: {a1} at 1 thread, {an} at {n} ({bundle}, {name})")
                runs.setdefault((bundle, name), []).append((one, many, apart, s1, sn))
                print(f"round {r} {bundle} {name}: 1 thread {one:.3f} ms, {n} threads {many:.3f} ms, "
                      f"{n} processes side by side {apart:.3f} ms each", file=sys.stderr, flush=True)
    # One table for the inference (with the ceiling) and one for the switch.
    for what, i, j, ceiling in (("", 0, 1, True), ("switch, ", 3, 4, False)):
        extra = f" ceiling per round ({n} processes) |" if ceiling else ""
        print(f"\n| bundle | build | {what}1 thread ms (fastest / median) | {what}{n} threads ms "
              f"(fastest / median) | speed-up per round |{extra}")
        print("|---" * (5 + ceiling) + "|")
        for bundle, _ in bundles:
            for name, _ in builds:
                v = runs[(bundle, name)]
                ones, manys = [x[i] for x in v], [x[j] for x in v]
                row = (f"| {bundle.rsplit('/', 1)[-1]} | {name} | {min(ones):.3f} / {st.median(ones):.3f} "
                       f"| {min(manys):.3f} / {st.median(manys):.3f} | {spread([a / b for a, b in zip(ones, manys)])} |")
                if ceiling:
                    row += f" {spread([n * x[0] / x[2] for x in v])} |"
                print(row)


if __name__ == "__main__":
    main()
