#!/usr/bin/env python3
"""Checks the per-layer switch plan's cost model (runtime/src/format/plan.rs) against
measurements on this machine.

    scripts/plan-check.py LORKD_BIN BUNDLE.lorkd... [--rounds N] [--iters N] [--json]

For each bundle: `lorkd inspect --json` gives every expert conv's modelled costs (units of
one int8 multiply-add); `lorkd bench --profile --json` in materialized and streaming mode,
alternating for N rounds, gives each op's median time. Per 1x1 expert the measured
streaming cost is (streaming op time − materialized op time); the script prints the time
per model unit of the streaming costs, of the switch (materialized switch time / modelled
rebuild of every expert) and of the inference (median / modelled inference), and the
measured auto plan (switch / inference, inference / materialized). If the three
"ns per unit" agree within a small factor, the model ranks layers and sizes its budget right
on this machine.
"""
import argparse
import json
import statistics
import subprocess


def run_json(cmd):
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lorkd")
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = []
    for b in a.bundles:
        plan = run_json([a.lorkd, "inspect", b, "--json"])["switch_plan"]
        ops = {e["op"]: e for e in plan["expert_costs"]}
        runs = {m: [] for m in ("materialized", "streaming", "auto")}
        for _ in range(a.rounds):
            for m in runs:
                runs[m].append(
                    run_json([a.lorkd, "bench", b, "--mode", m, "--iters", str(a.iters), "--profile", "--json"])
                )

        def med(m, key):
            return statistics.median(r[key] for r in runs[m])

        def op_us(m, i):
            return statistics.median(
                next(o["us_median"] for o in r["profile"]["ops"] if o["index"] == i) for r in runs[m]
            )

        extra_us, units = 0.0, 0
        for i, e in ops.items():
            if e["k"] == 1:
                extra_us += op_us("streaming", i) - op_us("materialized", i)
                units += e["stream"]
        rebuild_units = sum(e["rebuild"] for e in ops.values())
        row = {
            "bundle": b,
            "infer_ms": {m: med(m, "infer_ms_median") for m in runs},
            "switch_ms": {m: med(m, "switch_ms_median") for m in runs},
            "ns_per_unit": {
                "stream_1x1": 1e3 * extra_us / max(units, 1),
                "rebuild": 1e6 * med("materialized", "switch_ms_median") / max(rebuild_units, 1),
                "inference": 1e6 * med("materialized", "infer_ms_median") / plan["inference_cost_units"],
            },
            "auto_streamed": len(plan["auto_streamed_ops"]),
            "experts": plan["experts"],
            "predicted": {
                "auto_switch_per_inference": plan["predicted_switch_per_inference"]["auto"],
                "auto_inference_overhead": plan["predicted_auto_inference_overhead"],
            },
        }
        # Ratios within each round (the modes ran back to back), then their median: the
        # machine's speed drifts between rounds far more than within one.
        def per_round(f):
            return statistics.median(f(k) for k in range(a.rounds))

        def r_(m, key, k):
            return runs[m][k][key]

        row["measured"] = {
            "auto_switch_per_inference": per_round(
                lambda k: r_("auto", "switch_ms_median", k) / r_("auto", "infer_ms_median", k)
            ),
            "auto_inference_per_materialized": per_round(
                lambda k: r_("auto", "infer_ms_median", k) / r_("materialized", "infer_ms_median", k)
            ),
            "materialized_switch_per_inference": per_round(
                lambda k: r_("materialized", "switch_ms_median", k)
                / r_("materialized", "infer_ms_median", k)
            ),
        }
        out.append(row)
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print("| bundle | streamed | ns/unit stream 1x1 | ns/unit rebuild | ns/unit inference | "
          "mat switch/infer | auto switch/infer (pred) | auto infer/mat (pred) |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"(medians of {a.rounds} rounds' ratios; each round runs materialized, streaming, auto"
          f" back to back, {a.iters} timed iterations each)")
    for r in out:
        n, p, m = r["ns_per_unit"], r["predicted"], r["measured"]
        print(
            f"| {r['bundle'].split('/')[-1]} | {r['auto_streamed']}/{r['experts']} | {n['stream_1x1']:.3f} | "
            f"{n['rebuild']:.3f} | {n['inference']:.3f} | {m['materialized_switch_per_inference']:.2f} | "
            f"{m['auto_switch_per_inference']:.2f} ({p['auto_switch_per_inference']:.2f}) | "
            f"{m['auto_inference_per_materialized']:.2f} ({1 + p['auto_inference_overhead']:.2f}) |"
        )


if __name__ == "__main__":
    main()
