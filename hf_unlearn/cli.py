"""``hf-unlearn``: the command line. Heavy imports happen only in the chosen command.

    hf-unlearn train-base --preset resnet-tiny --dataset fashion_mnist --output_dir runs/base-resnet
    hf-unlearn train --config recipes/configs/fashion_mnist_resnet.yaml
    hf-unlearn export runs/wf-resnet --forget Coat --output_dir runs/resnet-without-coat
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

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
# command -> (module, function taking argv); imported only when that command runs
RUNNERS = {
    "train-base": (".commands.train_base", "main"),
    "train": (".commands.train", "main"),
    "evaluate": (".commands.evaluate", "main"),
    "retrain": (".commands.retrain", "main"),
    "explain": (".commands.explain", "main"),
    "push": (".hub.core", "cli_push"),
    "demo": (".demo.cli", "main"),
}


def _export(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="hf-unlearn export", description=COMMANDS["export"], allow_abbrev=False)
    parser.add_argument("adapter", help="adapter folder or Hub repo id")
    parser.add_argument("--forget", nargs="+", required=True, help="class ids or names to forget")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--base_model", default=None, help="default: the one named in the adapter config")
    parser.add_argument("--revision", default=None)
    from .hub.core import add_push_arguments, check_push_arguments, push_exported_from_args

    add_push_arguments(parser)  # --push_to_hub REPO_ID, --report, --hub_revision, --hub_private, --hub_token
    args = parser.parse_args(argv)
    check_push_arguments(args)  # no token / offline: fail before loading any model

    from .adapter import UnlearnAdapter, _check_export_target, save_export
    from .hub.cards import write_exported_card

    _check_export_target(Path(args.output_dir).expanduser().absolute())  # before loading anything
    adapter = UnlearnAdapter.from_pretrained(args.adapter, base_model=args.base_model, revision=args.revision)
    forget = [int(c) if c.lstrip("-").isdigit() else c for c in args.forget]
    model = adapter.export(forget=forget)
    save_export(  # atomic: the folder holds the old export or the new one (with its card), never a mix
        model, args.output_dir, adapter.image_processor,
        write_extra=lambda folder: write_exported_card(
            model, folder, adapter_repo=args.adapter, report=args.report,
            base_model=args.base_model or adapter.config.base_model_name_or_path),
    )
    print(f"saved a model without {model.config.unlearned_classes} to {args.output_dir}")
    push_exported_from_args(args, adapter, model)  # no-op without --push_to_hub


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = "\n".join(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items())
        print(f"usage: hf-unlearn <command> [options]\n\ncommands:\n{lines}\n\n'hf-unlearn <command> --help' for its options.")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}", file=sys.stderr)
            raise SystemExit(2)
        return
    command, rest = argv[0], argv[1:]
    try:
        _dispatch(command, rest)
    except Exception as err:
        from .hub.core import PushError

        # Expected, explained failures (bad input, missing files): the message, no traceback.
        if isinstance(err, (PushError, ValueError, FileNotFoundError, FileExistsError)) and not os.environ.get(
            "HF_UNLEARN_TRACEBACK"
        ):
            print(f"error: {err}\n(set HF_UNLEARN_TRACEBACK=1 to see the traceback)", file=sys.stderr)
            raise SystemExit(1) from None
        raise


def _dispatch(command: str, rest: Sequence[str]) -> None:
    if command == "export":
        _export(rest)
        return
    module, function = RUNNERS[command]
    getattr(importlib.import_module(module, __package__), function)(rest)


if __name__ == "__main__":
    main()
