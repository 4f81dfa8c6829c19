"""The quickstart: from nothing to a model that no longer knows one class, offline, on 2 CPU cores.

    bash scripts/quickstart.sh                # set-up, then this script
    python recipes/quickstart.py --help

1. trains a base ResNet (preset ``resnet-tiny``) on Fashion-MNIST;
2. untrains all 10 classes in one round (``recipes/configs/fashion_mnist_resnet.yaml``);
3. prints the forget/retain accuracy of every row next to the base model's;
4. exports a plain transformers model with one class forgotten and shows, through
   ``pipeline("image-classification")``, that it no longer recognises that class;
5. writes ``report.md`` (+ JSON and plots) in the output folder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RECIPES = Path(__file__).resolve().parent


def parse_args(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/quickstart")
    parser.add_argument("--config", default=str(RECIPES / "configs" / "fashion_mnist_resnet.yaml"),
                        help="untraining config (its base_model/output_dir are replaced by the quickstart's)")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--preset", default="resnet-tiny")
    parser.add_argument("--base_epochs", type=int, default=8)
    parser.add_argument("--forget", default="Trouser", help="the class the exported model forgets")
    parser.add_argument("--pipeline_images", type=int, default=200, help="test images per group for the pipeline check")
    parser.add_argument("--num_threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--reuse_base", action="store_true", help="reuse a base model already in output_dir/base")
    parser.add_argument("--max_train_samples", type=int, default=None, help="(smoke tests) subsample the training split")
    parser.add_argument("--untrain_epochs", type=float, default=None, help="override the config's epochs")
    return parser.parse_args(argv)


def pipeline_accuracy(model_dir, images, labels) -> float:
    """Share (%) of ``images`` that transformers' ``pipeline("image-classification")`` labels right."""
    from transformers import pipeline

    clf = pipeline("image-classification", model=str(model_dir), top_k=1)
    names = clf.model.config.id2label
    preds = [o[0]["label"] for o in clf(images, batch_size=64)]
    return 100.0 * sum(p == names[y] for p, y in zip(preds, labels)) / len(labels)


def base_step(args, base_dir: Path) -> dict:
    """1. the base classifier (trained, or reused with --reuse_base); returns its metrics."""
    from hf_unlearn.commands.train_base import TrainBaseArguments
    from hf_unlearn.training.base import train_base

    print(f"[1/5] training the base classifier ({args.preset}, {args.dataset}, {args.base_epochs} epochs)", flush=True)
    if args.reuse_base and (base_dir / "metrics.json").is_file():
        base_metrics = json.loads((base_dir / "metrics.json").read_text())
        print(f"      reusing {base_dir}")
    else:
        base_metrics = train_base(TrainBaseArguments(
            preset=args.preset, dataset=args.dataset, epochs=args.base_epochs, output_dir=str(base_dir), seed=0,
            max_train_samples=args.max_train_samples))
    print(f"      test accuracy {base_metrics['test_accuracy'] * 100:.2f}% in {base_metrics['train_time_s']:.0f} s")
    return base_metrics


def untrain_step(args, base_dir: Path, adapter_dir: Path, base_metrics: dict) -> dict:
    """2-3. untrain every class at once with the --config recipe, print every row; returns the metrics."""
    from hf_unlearn.commands.arguments import load_config
    from hf_unlearn.training.job import ARGUMENT_CLASSES, run_untraining, untraining_job_arguments

    print("[2/5] untraining all classes in one round", flush=True)
    options = load_config(args.config, ARGUMENT_CLASSES)
    options.update(base_model=str(base_dir), output_dir=str(adapter_dir), dataset=args.dataset)
    if args.max_train_samples:
        options["max_train_samples"] = args.max_train_samples
    if args.untrain_epochs:  # an epoch schedule, as `--epochs` on the command line: no step budget, no check
        options.update(epochs=args.untrain_epochs, eval_every=0, max_steps=0)
    metrics = run_untraining(*untraining_job_arguments(**options))
    ev, names = metrics["accuracy"], base_metrics["class_names"]
    print("[3/5] every row on the test split (accuracy %, each row = that class forgotten)")
    print(f"      {'class':<12} {'base acc':>8} {'forget':>7} {'retain':>7} {'base retain':>11} {'drop':>6}")
    for c, name in enumerate(names):
        print(f"      {name:<12} {base_metrics['per_class_accuracy'][name] * 100:8.2f} {ev['forget_acc_per_class'][c]:7.2f} "
              f"{ev['retain_acc_per_class'][c]:7.2f} {ev['base_retain_acc_per_class'][c]:11.2f} "
              f"{ev['base_retain_acc_per_class'][c] - ev['retain_acc_per_class'][c]:6.2f}")
    print(f"      mean: forget {ev['mean_forget_acc']:.2f}%, retain {ev['mean_retain_acc']:.2f}% "
          f"(base {ev['mean_base_retain_acc']:.2f}%, drop {ev['mean_retain_drop']:.2f} pt, worst {ev['worst_retain_drop']:.2f} pt)")
    ratio = metrics["untraining_time_s"] / base_metrics["train_time_s"]
    print(f"      untraining all classes: {metrics['untraining_time_s']:.0f} s = {ratio:.2f}x the base training time")
    return metrics


def export_step(args, out: Path, base_dir: Path) -> dict:
    """4. export one class away and check it with the transformers pipeline; returns the check."""
    from hf_unlearn import UnlearnAdapter
    from hf_unlearn.data.loading import load_image_dataset
    from hf_unlearn.hub.cards import write_exported_card

    print(f"[4/5] exporting a plain model without {args.forget!r} and checking it with pipeline()", flush=True)
    adapter = UnlearnAdapter.from_pretrained(out / "adapter")
    target = adapter.class_id(args.forget)
    name = adapter.id2label[target]
    exported_dir = out / f"exported-without-{name.replace('/', '-').replace(' ', '-')}"
    plain = adapter.export(forget=target)
    plain.save_pretrained(exported_dir)
    adapter.image_processor.save_pretrained(exported_dir)
    write_exported_card(plain, exported_dir, adapter_repo=str(out / "adapter"))  # its model card, as on the Hub
    test = load_image_dataset(args.dataset, split="test")
    labels = test.dataset[test.label_column]
    own = [i for i, y in enumerate(labels) if y == target][: args.pipeline_images]
    other = [i for i, y in enumerate(labels) if y != target][: args.pipeline_images]
    images = test.dataset[test.image_column]
    own_imgs, other_imgs = [images[i] for i in own], [images[i] for i in other]
    other_labels = [labels[i] for i in other]
    check = {
        "class": name,
        "base_on_class": pipeline_accuracy(base_dir, own_imgs, [target] * len(own)),
        "exported_on_class": pipeline_accuracy(exported_dir, own_imgs, [target] * len(own)),
        "base_on_others": pipeline_accuracy(base_dir, other_imgs, other_labels),
        "exported_on_others": pipeline_accuracy(exported_dir, other_imgs, other_labels),
        "images_per_group": len(own),
    }
    print(f"      pipeline on {len(own)} test images of {name!r}: base {check['base_on_class']:.1f}% correct, "
          f"exported {check['exported_on_class']:.1f}%")
    print(f"      pipeline on {len(other)} images of other classes: base {check['base_on_others']:.1f}%, "
          f"exported {check['exported_on_others']:.1f}%")
    return check


def report_lines(args, base_metrics: dict, metrics: dict, check: dict, total: float, matrix_plot: bool) -> list:
    """5. ``report.md``: the run in a few lines and every row's accuracies."""
    ev, env, names = metrics["accuracy"], metrics["environment"], base_metrics["class_names"]
    ratio = metrics["untraining_time_s"] / base_metrics["train_time_s"]
    target = check["class"]
    lines = [
        "# hf_unlearn quickstart report", "",
        f"Machine: {env.get('processor') or env.get('machine')}, {env['cpu_count']} CPUs, "
        f"torch {env['versions']['torch']}; seed 0; total {total:.0f} s.", "",
        f"- Base `{args.preset}` on `{args.dataset}`: test accuracy {base_metrics['test_accuracy'] * 100:.2f}% "
        f"after {base_metrics['epochs']} epochs ({base_metrics['train_time_s']:.0f} s).",
        f"- One untraining round for all {len(names)} classes: {metrics['untraining_time_s']:.0f} s "
        f"({ratio:.2f}x the base training time).",
        f"- Mean over rows: forget accuracy {ev['mean_forget_acc']:.2f}%, retain accuracy {ev['mean_retain_acc']:.2f}% "
        f"vs {ev['mean_base_retain_acc']:.2f}% for the base on the same samples (drop {ev['mean_retain_drop']:.2f} pt, "
        f"worst row {ev['worst_retain_drop']:.2f} pt).",
        f"- Exported model without `{target}` through `pipeline`: {check['exported_on_class']:.1f}% of its "
        f"{check['images_per_group']} test images still called `{target}` (base: {check['base_on_class']:.1f}%); "
        f"other classes {check['exported_on_others']:.1f}% correct (base: {check['base_on_others']:.1f}%).", "",
        "| class | base acc | forget acc | retain acc | base retain acc | drop |", "|---|---|---|---|---|---|",
    ]
    for c, name in enumerate(names):
        lines.append(f"| {name} | {base_metrics['per_class_accuracy'][name] * 100:.2f} | {ev['forget_acc_per_class'][c]:.2f} | "
                     f"{ev['retain_acc_per_class'][c]:.2f} | {ev['base_retain_acc_per_class'][c]:.2f} | "
                     f"{ev['base_retain_acc_per_class'][c] - ev['retain_acc_per_class'][c]:.2f} |")
    lines += ["", "Plots: `plots/forget_retain.png`" + (", `plots/accuracy_matrix.png`" if matrix_plot else "") + ".",
              "", "Reproduce: `bash scripts/quickstart.sh`.", ""]
    return lines


def main(argv=None) -> dict:
    args = parse_args(argv)
    import numpy as np
    import torch

    from hf_unlearn.evaluation.plots import plot_accuracy_matrix, plot_forget_retain
    from hf_unlearn.files import atomic_write_text

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    base_dir = out / "base"
    base_metrics = base_step(args, base_dir)
    metrics = untrain_step(args, base_dir, out / "adapter", base_metrics)
    check = export_step(args, out, base_dir)

    ev, names, plots = metrics["accuracy"], base_metrics["class_names"], out / "plots"
    matrix = ev.get("matrix")
    if matrix is not None:
        plot_accuracy_matrix(np.array(matrix), names, plots / "accuracy_matrix.png")
    plot_forget_retain({"unlearned": {"forget_acc": ev["forget_acc_per_class"], "retain_acc": ev["retain_acc_per_class"]},
                        "base": {"forget_acc": [base_metrics["per_class_accuracy"][n] * 100 for n in names],
                                 "retain_acc": ev["base_retain_acc_per_class"]}}, names, plots / "forget_retain.png")
    total = time.perf_counter() - started
    summary = {"base": {k: base_metrics[k] for k in ("test_accuracy", "train_time_s", "epochs", "seed")},
               "untraining": {k: metrics[k] for k in ("untraining_time_s", "steps", "epochs", "seed")},
               "evaluation": ev, "base_accuracy": metrics["base_accuracy"], "pairs": metrics.get("pairs"),
               "untraining_over_base_time": metrics["untraining_time_s"] / base_metrics["train_time_s"],
               "pipeline_check": check, "environment": metrics["environment"], "total_wall_time_s": total}
    atomic_write_text(out / "quickstart.json", json.dumps(summary, indent=2, default=float))
    atomic_write_text(out / "report.md", "\n".join(report_lines(args, base_metrics, metrics, check, total,
                                                                matrix is not None)))
    print(f"[5/5] report written to {out / 'report.md'} ({total:.0f} s in all)")
    print(f"Next, see it forget in your browser: pip install \"hf_unlearn[demo]\" && "
          f"hf-unlearn demo --adapter {out / 'adapter'}")
    return summary


if __name__ == "__main__":
    main()
