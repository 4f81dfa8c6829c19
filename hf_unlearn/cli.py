"""``hf-unlearn``: the command line, a dispatcher. Each sub-command lives in its own module (mostly
:mod:`hf_unlearn.commands`), imported only when it runs; it parses its own options.

    hf-unlearn train-base --preset resnet-tiny --dataset fashion_mnist --output_dir runs/base-resnet
    hf-unlearn train --config recipes/configs/fashion_mnist_resnet.yaml
    hf-unlearn export runs/wf-resnet --forget Coat --output_dir runs/resnet-without-coat
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Optional, Sequence

from .hub.push import PushError

COMMANDS = {
    "train-base": "train a base classifier (a preset from scratch, or fine-tune a checkpoint)",
    "train": "untrain every class in one round (the weight-filter adapter)",
    "evaluate": "forget/retain accuracy, MIA, ZRF and probes of an adapter or model (report + plots)",
    "retrain": "the gold-standard reference: train the base recipe again without the forgotten class(es)",
    "export": "fold one class (or set) into a plain transformers model (optionally --push_to_hub)",
    "explain": "what the filters say about each class: filter maps, row similarity vs confusion, saliency, AUCs",
    "push": "push an adapter (filters, config, image processor, model card, report) to the Hub; --space: its demo too",
    "demo": 'an interactive demo in the browser: forget classes, see predictions change (pip install "hf_unlearn[demo]")',
}
# command -> (module, function taking argv); imported only when that command runs, so that a
# command's --help loads no other command's dependencies (Gradio, matplotlib, evaluate, ...)
RUNNERS = {
    "train-base": (".commands.train_base", "main"),
    "train": (".commands.train", "main"),
    "evaluate": (".commands.evaluate", "main"),
    "retrain": (".commands.retrain", "main"),
    "explain": (".commands.explain", "main"),
    "export": (".commands.export", "main"),
    "push": (".commands.push", "main"),
    "demo": (".commands.demo", "main"),
}


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run ``hf-unlearn <command> [options]`` (``argv`` default: ``sys.argv[1:]``).

    Example: ``main(["export", "runs/wf", "--forget", "Coat", "--output_dir", "runs/no-coat"])``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = "\n".join(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items())
        print(f"usage: hf-unlearn <command> [options]\n\ncommands:\n{lines}\n\n'hf-unlearn <command> --help' for its options.")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}", file=sys.stderr)
            raise SystemExit(2)
        return
    module, function = RUNNERS[argv[0]]
    try:
        getattr(importlib.import_module(module, __package__), function)(argv[1:])
    except Exception as err:
        # Expected, explained failures (bad input, missing files): the message, no traceback.
        if isinstance(err, (PushError, ValueError, FileNotFoundError, FileExistsError)) and not os.environ.get(
            "HF_UNLEARN_TRACEBACK"
        ):
            print(f"error: {err}\n(set HF_UNLEARN_TRACEBACK=1 to see the traceback)", file=sys.stderr)
            raise SystemExit(1) from None
        raise


if __name__ == "__main__":
    main()
