"""Trade-off plot and table from evaluation reports: few-shot probe (x) vs retain drop (y).

Each ``--report LABEL=PATH`` is a report.json written by recipes/evaluate.py for an adapter (rows
mode). The unlearned model gives one point per report (mean over the report's detail rows); the
first report with base and retrain values also gives the ``base`` and ``retrain`` points (their
retain drop: 0 for the base, base RA - retrain RA for the retrain). Prints a Markdown table with the
CKA and relearning columns the reports hold, and writes the PNG.

    python recipes/probe_tradeoff.py --report boundary=runs/eval-a/report.json \
        --report centroid-5=runs/eval-b/report.json --output runs/tradeoff.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _mean(values, rows):
    if values is None:
        return None
    if not isinstance(values, list):
        return float(values)
    vals = [values[c] for c in rows if c < len(values) and values[c] is not None]
    return sum(vals) / len(vals) if vals else None


def summarize(report: dict) -> dict:
    """Means over the report's detail rows: FA, drop, probe, CKA and relearning, by model."""
    rows = report["settings"].get("detail_rows") or report["settings"].get("rows") or []
    acc = report["accuracy"]
    out = {"rows": rows, "forget_acc": _mean(acc.get("forget_acc_per_class"), rows),
           "retain_drop": _mean(acc.get("retain_drop_per_class"), rows)}
    retrain = report.get("retrain") or {}
    base_ra = _mean(acc.get("base_retain_acc_per_class"), rows)
    retrain_ra = _mean(retrain.get("retain_acc_per_class"), rows)
    out["retrain_drop"] = base_ra - retrain_ra if base_ra is not None and retrain_ra is not None else None
    for key in ("few_shot_probe", "cka_to_retrain"):
        for model, values in (report.get(key) or {}).items():
            out[f"{key}/{model}"] = _mean(values, rows)
    for setting, by_model in (report.get("relearn") or {}).items():
        for model, values in by_model.items():
            out[f"relearn_{setting}/{model}"] = _mean(values, rows)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="append", required=True, help="LABEL=path/to/report.json (repeat)")
    parser.add_argument("--benchmark", default=None,
                        help="benchmark.json of recipes/benchmark.py: adds every peer method (mean over the peer classes)")
    parser.add_argument("--point", action="append", default=[],
                        help="LABEL=PROBE,DROP: a peer point read from a recorded table (say where it comes from)")
    parser.add_argument("--output", required=True, help="PNG to write")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    from hf_unlearn.evaluation.plots import plot_probe_tradeoff

    summaries, shots = {}, 5
    for item in args.report:
        label, sep, path = item.partition("=")
        if not sep or not label or not Path(path).is_file():
            parser.error(f"--report {item!r}: expected LABEL=path/to/report.json of an existing file")
        report = json.loads(Path(path).read_text())
        shots = report.get("settings", {}).get("few_shot_shots", shots)
        summaries[label] = summarize(report)
    points, kinds = {}, {}
    first = next(iter(summaries.values()))
    if first.get("few_shot_probe/base") is not None:
        points["base"], kinds["base"] = (first["few_shot_probe/base"], 0.0), "base"
    if first.get("few_shot_probe/retrain") is not None and first.get("retrain_drop") is not None:
        points["retrain"], kinds["retrain"] = (first["few_shot_probe/retrain"], first["retrain_drop"]), "retrain"
    for label, s in summaries.items():
        points[label], kinds[label] = (s["few_shot_probe/unlearned"], s["retain_drop"]), "wf"
    if args.benchmark:
        bench = json.loads(Path(args.benchmark).read_text())
        for name, m in bench["methods"].items():
            summ = m.get("summary_peer_classes") or {}
            if name not in ("wf", "base", "retrain") and summ.get("few_shot_probe") is not None:
                points[name], kinds[name] = (summ["few_shot_probe"], summ["retain_drop"]), "peer"
    for item in args.point:
        label, sep, xy = item.partition("=")
        try:
            x, y = (float(v) for v in xy.split(","))
        except ValueError:
            parser.error(f"--point {item!r}: expected LABEL=PROBE,DROP, e.g. neggrad=52.88,-0.31")
        points[label], kinds[label] = (x, y), "peer"
    plot_probe_tradeoff(points, args.output, kinds=kinds, shots=shots, title=args.title)
    keys = sorted({k for s in summaries.values() for k in s if k.startswith(("cka", "relearn"))})
    header = ["setting", "FA %", "retain drop pt", f"{shots}-shot probe %"] + keys
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, s in summaries.items():
        cells = [label, s["forget_acc"], s["retain_drop"], s["few_shot_probe/unlearned"]] + [s.get(k) for k in keys]
        lines.append("| " + " | ".join(f"{c:.2f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    print("\n".join(lines))
    print(f"base {points.get('base')}, retrain {points.get('retrain')}; wrote {args.output}", file=sys.stderr)
    return summaries


if __name__ == "__main__":
    main()
