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
import os
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


def pipeline_check(model_dir: str, images, labels, target: int, batch_size: int = 64) -> float:
    """Share (%) of ``images`` that transformers' pipeline classifies as class ``target``."""
    from transformers import pipeline

    clf = pipeline("image-classification", model=model_dir, top_k=1)
    hits = 0
    for start in range(0, len(images), batch_size):
        for out in clf(images[start : start + batch_size], batch_size=batch_size):
            hits += out[0]["label"] == clf.model.config.id2label[target]
    return 100.0 * hits / max(1, len(images))


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    from hf_unlearn import UnlearnAdapter
    from hf_unlearn.hub.cards import write_exported_card
    from hf_unlearn.commands.train_base import TrainBaseArguments
    from hf_unlearn.training.base import train_base
    from hf_unlearn.data.loading import load_image_dataset
    from hf_unlearn.evaluation.plots import plot_accuracy_matrix, plot_forget_retain
    from hf_unlearn.training.job import parse_args as untrain_args, run as untrain_run

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    # 1. the base model
    base_dir = out / "base"
    print(f"[1/5] training the base classifier ({args.preset}, {args.dataset}, {args.base_epochs} epochs)", flush=True)
    if args.reuse_base and (base_dir / "metrics.json").is_file():
        base_metrics = json.loads((base_dir / "metrics.json").read_text())
        print(f"      reusing {base_dir}")
    else:
        base_metrics = train_base(TrainBaseArguments(
            preset=args.preset, dataset=args.dataset, epochs=args.base_epochs, output_dir=str(base_dir), seed=0,
            max_train_samples=args.max_train_samples))
    print(f"      test accuracy {base_metrics['test_accuracy'] * 100:.2f}% in {base_metrics['train_time_s']:.0f} s")

    # 2-3. untrain every class at once, evaluate every row
    print("[2/5] untraining all classes in one round", flush=True)
    extra = ["--max_train_samples", str(args.max_train_samples)] if args.max_train_samples else []
    extra += ["--epochs", str(args.untrain_epochs)] if args.untrain_epochs else []
    uargs = untrain_args(["--config", args.config, "--base_model", str(base_dir), "--output_dir",
                          str(out / "adapter"), "--dataset", args.dataset, *extra])
    metrics = untrain_run(uargs)
    ev = metrics["evaluation"]
    names = base_metrics["class_names"]
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

    # 4. export one class away and check it with the transformers pipeline
    print(f"[4/5] exporting a plain model without {args.forget!r} and checking it with pipeline()", flush=True)
    adapter = UnlearnAdapter.from_pretrained(out / "adapter")
    target = adapter.class_id(args.forget)
    exported_dir = out / f"exported-without-{names[target].replace('/', '-').replace(' ', '-')}"
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

    def accuracy(model_dir, imgs, ys):
        from transformers import pipeline

        clf = pipeline("image-classification", model=str(model_dir), top_k=1)
        preds = [o[0]["label"] for o in clf(imgs, batch_size=64)]
        return 100.0 * sum(p == names[y] for p, y in zip(preds, ys)) / len(ys)

    check = {
        "class": names[target],
        "base_on_class": accuracy(base_dir, own_imgs, [target] * len(own)),
        "exported_on_class": accuracy(exported_dir, own_imgs, [target] * len(own)),
        "base_on_others": accuracy(base_dir, other_imgs, other_labels),
        "exported_on_others": accuracy(exported_dir, other_imgs, other_labels),
        "images_per_group": len(own),
    }
    print(f"      pipeline on {len(own)} test images of {names[target]!r}: base {check['base_on_class']:.1f}% correct, "
          f"exported {check['exported_on_class']:.1f}%")
    print(f"      pipeline on {len(other)} images of other classes: base {check['base_on_others']:.1f}%, "
          f"exported {check['exported_on_others']:.1f}%")

    # 5. the report
    import numpy as np

    from hf_unlearn.evaluation.metrics import accuracy_matrix  # noqa: F401  (definitions in the docs)

    plots = out / "plots"
    A = np.array(metrics["evaluation"].get("matrix")) if metrics["evaluation"].get("matrix") is not None else None
    if A is not None:
        plot_accuracy_matrix(A, names, plots / "accuracy_matrix.png")
    plot_forget_retain({"unlearned": {"forget_acc": ev["forget_acc_per_class"], "retain_acc": ev["retain_acc_per_class"]},
                        "base": {"forget_acc": [base_metrics["per_class_accuracy"][n] * 100 for n in names],
                                 "retain_acc": ev["base_retain_acc_per_class"]}}, names, plots / "forget_retain.png")
    total = time.perf_counter() - started
    summary = {"base": {k: base_metrics[k] for k in ("test_accuracy", "train_time_s", "epochs", "seed")},
               "untraining": {k: metrics[k] for k in ("untraining_time_s", "steps", "epochs", "seed")},
               "evaluation": ev, "untraining_over_base_time": ratio, "pipeline_check": check,
               "machine": metrics["machine"], "versions": metrics["versions"], "total_wall_time_s": total}
    (out / "quickstart.json").write_text(json.dumps(summary, indent=2, default=float))
    lines = [
        "# hf_unlearn quickstart report", "",
        f"Machine: {metrics['machine']['processor']}, {metrics['machine']['cpu_count']} CPUs, "
        f"torch {metrics['versions']['torch']}; seed 0; total {total:.0f} s.", "",
        f"- Base `{args.preset}` on `{args.dataset}`: test accuracy {base_metrics['test_accuracy'] * 100:.2f}% "
        f"after {base_metrics['epochs']} epochs ({base_metrics['train_time_s']:.0f} s).",
        f"- One untraining round for all {len(names)} classes: {metrics['untraining_time_s']:.0f} s "
        f"({ratio:.2f}x the base training time).",
        f"- Mean over rows: forget accuracy {ev['mean_forget_acc']:.2f}%, retain accuracy {ev['mean_retain_acc']:.2f}% "
        f"vs {ev['mean_base_retain_acc']:.2f}% for the base on the same samples (drop {ev['mean_retain_drop']:.2f} pt, "
        f"worst row {ev['worst_retain_drop']:.2f} pt).",
        f"- Exported model without `{names[target]}` through `pipeline`: {check['exported_on_class']:.1f}% of its "
        f"{len(own)} test images still called `{names[target]}` (base: {check['base_on_class']:.1f}%); other classes "
        f"{check['exported_on_others']:.1f}% correct (base: {check['base_on_others']:.1f}%).", "",
        "| class | base acc | forget acc | retain acc | base retain acc | drop |", "|---|---|---|---|---|---|",
    ]
    for c, name in enumerate(names):
        lines.append(f"| {name} | {base_metrics['per_class_accuracy'][name] * 100:.2f} | {ev['forget_acc_per_class'][c]:.2f} | "
                     f"{ev['retain_acc_per_class'][c]:.2f} | {ev['base_retain_acc_per_class'][c]:.2f} | "
                     f"{ev['base_retain_acc_per_class'][c] - ev['retain_acc_per_class'][c]:.2f} |")
    lines += ["", "Plots: `plots/forget_retain.png`" + (", `plots/accuracy_matrix.png`" if A is not None else "") + ".",
              "", "Reproduce: `bash scripts/quickstart.sh`.", ""]
    (out / "report.md").write_text("\n".join(lines))
    print(f"[5/5] report written to {out / 'report.md'} ({total:.0f} s in all)")
    print(f"Next, see it forget in your browser: pip install \"hf_unlearn[demo]\" && "
          f"hf-unlearn demo --adapter {out / 'adapter'}")
    return summary


if __name__ == "__main__":
    main()
