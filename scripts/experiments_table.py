#!/usr/bin/env python3
"""Tables of scripts/experiments.sh: reads OUT/<run>-<seed>.json (`lorkd-train eval --json`)
and prints docs/results.md (markdown, mean ± sample std over seeds, paired differences)."""
import argparse
import datetime
import json
import math
import os
import platform
import statistics


def load(out, name, seed):
    with open(os.path.join(out, f"{name}-{seed}.json")) as f:
        return json.load(f)


def ms(xs):
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seeds", nargs="+", required=True)
    ap.add_argument("--ranks", nargs="+", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--seconds", type=int, default=0)
    ap.add_argument("--transfer", default="1")
    ap.add_argument("--transfer-desc", default="")
    ap.add_argument("--inits", nargs="*", default=[])
    a = ap.parse_args()
    seeds, r0 = a.seeds, a.ranks[0]
    get = lambda name: [load(a.out, name, s) for s in seeds]

    rows = [
        ("Teacher (ResNet-18), department slice", "teacher", "mean_experts"),
        ("Teacher, unified head over all classes (paper protocol)", "teacher", "unified_top1"),
        ("STL", "stl", "mean_experts"),
        ("STL-KD", "stl-kd", "mean_experts"),
        ("MTL", "mtl", "mean_experts"),
        ("MTL-KD", "mtl-kd", "mean_experts"),
        (f"LoRKD (r = {r0}), shared W0 only", f"lorkd-r{r0}", "mean_shared"),
        (f"LoRKD (r = {r0})", f"lorkd-r{r0}", "mean_experts"),
        (f"LoRKD (r = {r0}), no teacher", f"lorkd-r{r0}-nokd", "mean_experts"),
    ]
    p = print
    p("# Results: the paper's tables on synthetic departments, over seeds")
    p()
    p(f"Made by `{a.command}` on {datetime.date.today()} ({cpu()}, {os.cpu_count()} cores,"
      f" the last invocation {a.seconds} s; runs already done are reused). Seeds {', '.join(seeds)}: each seed draws its own data"
      " (the spec's `seed`) and its own initialisation and order (`fit --seed`).")
    p("Numbers are test-split means over departments, then mean ± sample std over seeds.")
    p("Regenerate with the command above; do not edit by hand.")
    p()
    p("## Table 1: methods")
    p()
    p("| method | top-1 | balanced acc. | AUC (one-vs-rest) |")
    p("|---|---|---|---|")
    for label, name, key in rows:
        rs = get(name)
        if key == "unified_top1":
            p(f"| {label} | {ms([r.get(key) for r in rs])} | | |")
        elif key == "mean_shared":
            p(f"| {label} | {ms([r[key] for r in rs])} | | |")
        else:
            p(f"| {label} | {ms([r[key] for r in rs])} | "
              f"{ms([r['mean_balanced_accuracy'] for r in rs])} | {ms([r['mean_auc'] for r in rs])} |")
    p()
    depts = [d["name"] for d in get(f"lorkd-r{r0}")[0]["departments"]]
    p("Per department (top-1):")
    p()
    p("| method | " + " | ".join(depts) + " |")
    p("|---|" + "---|" * len(depts))
    for label, name, key in rows:
        if key != "mean_experts":
            continue
        rs = get(name)
        cells = [ms([next(d["experts"] for d in r["departments"] if d["name"] == n) for r in rs])
                 for n in depts]
        p(f"| {label} | " + " | ".join(cells) + " |")
    p()
    p("Paired differences of mean top-1 (same seed, same data), mean ± std over seeds:")
    p()
    p("| comparison | difference | seeds where the first is higher |")
    p("|---|---|---|")
    pairs = [
        (f"LoRKD (r = {r0}), no teacher − MTL (both without KD)", f"lorkd-r{r0}-nokd", "mtl"),
        (f"LoRKD (r = {r0}) − MTL", f"lorkd-r{r0}", "mtl"),
        (f"LoRKD (r = {r0}) − MTL-KD", f"lorkd-r{r0}", "mtl-kd"),
        (f"LoRKD (r = {r0}) − STL", f"lorkd-r{r0}", "stl"),
        ("STL-KD − STL", "stl-kd", "stl"),
        ("MTL-KD − MTL", "mtl-kd", "mtl"),
    ] + [(f"LoRKD (r = {r}) − MTL-KD (both with KD)", f"lorkd-r{r}", "mtl-kd") for r in a.ranks[1:]]
    for label, x, y in pairs:
        d = [u["mean_experts"] - v["mean_experts"] for u, v in zip(get(x), get(y))]
        p(f"| {label} | {ms(d)} | {sum(v > 0 for v in d)} of {len(d)} |")
    p()
    p(f"## Distillation ablation (LoRKD, r = {r0})")
    p()
    p("| setting | top-1 | AUC |")
    p("|---|---|---|")
    for label, name in [
        ("no teacher (β = 0)", f"lorkd-r{r0}-nokd"),
        ("teacher, α = 10, β = 1 (paper)", f"lorkd-r{r0}"),
        ("teacher, α = 4, β = 1", f"lorkd-r{r0}-a4"),
        ("teacher, α = 10, β = 0.1", f"lorkd-r{r0}-b01"),
        ("teacher, feature KD (projection, β = 1)", f"lorkd-r{r0}-feat"),
    ]:
        rs = get(name)
        p(f"| {label} | {ms([r['mean_experts'] for r in rs])} | {ms([r['mean_auc'] for r in rs])} |")
    d = [u["mean_experts"] - v["mean_experts"]
         for u, v in zip(get(f"lorkd-r{r0}"), get(f"lorkd-r{r0}-nokd"))]
    p()
    p(f"With − without the teacher (paired): {ms(d)} ({sum(v > 0 for v in d)} of {len(d)} seeds higher).")
    p()
    p("## Table 3: rank")
    p()
    p("| rank r | top-1 | AUC | gain over shared W0 |")
    p("|---|---|---|---|")
    for r in a.ranks:
        rs = get(f"lorkd-r{r}")
        gain = [x["mean_experts"] - x["mean_shared"] for x in rs]
        p(f"| {r} | {ms([x['mean_experts'] for x in rs])} | {ms([x['mean_auc'] for x in rs])} | {ms(gain)} |")
    if a.transfer == "1":
        transfer_table(a.out, seeds, a.transfer_desc, a.inits)


def transfer_table(out, seeds, desc, inits, p=print):
    get = lambda name: [load(out, name, s) for s in seeds]
    p()
    p("## Transfer to a downstream task")
    p()
    p(f"Task: {desc}. New head, whole network fine-tuned (`lorkd-train transfer`).")
    p()
    p("| initialisation | top-1 | balanced acc. | AUC |")
    p("|---|---|---|---|")
    label = {"shared": "shared backbone W0", "scratch": "scratch"}
    names = ["transfer-" + i.replace(":", "-") for i in inits]
    for init, name in zip(inits, names):
        rs = get(name)
        init = label.get(init, init.replace("expert:", "expert of ") + " (fused)")
        p(f"| {init} | {ms([r['mean_experts'] for r in rs])} | "
          f"{ms([r['mean_balanced_accuracy'] for r in rs])} | {ms([r['mean_auc'] for r in rs])} |")
    p()
    experts = [n for n in names if n.startswith("transfer-expert")]
    for a in experts:
        for b in ("transfer-shared", "transfer-scratch"):
            if b not in names:
                continue
            d = [u["mean_experts"] - v["mean_experts"] for u, v in zip(get(a), get(b))]
            p(f"- {a[16:]} expert − {b[9:]} (paired): {ms(d)} ({sum(v > 0 for v in d)} of {len(d)} seeds higher)")


if __name__ == "__main__":
    main()
