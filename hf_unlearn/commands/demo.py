"""``hf-unlearn demo --adapter PATH_OR_REPO``: open the interactive demo (or write its Space files).

    hf-unlearn demo --adapter runs/quickstart/adapter                 # http://127.0.0.1:7860
    hf-unlearn demo --adapter me/resnet-fashion-wf --dataset fashion_mnist --port 8080
    hf-unlearn demo --adapter me/resnet-fashion-wf --dataset fashion_mnist --write_space my-space

The same from Python, without argv::

    from hf_unlearn.commands.demo import DemoArguments, run_demo

    run_demo(DemoArguments(adapter="me/resnet-fashion-wf", dataset="fashion_mnist", write_space="my-space"))
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from ..demo.app import create_app, import_gradio, serve
from ..demo.core import DemoInputError
from ..demo.space import write_space
from .arguments import parse_arguments

DESCRIPTION = 'an interactive demo in the browser: forget classes, see predictions change (pip install "hf_unlearn[demo]")'


@dataclass
class DemoArguments:
    """What the demo shows, and where it serves it."""

    adapter: str = field(metadata={"help": "adapter folder or Hub repo id"})
    dataset: Optional[str] = field(default=None, metadata={
        "help": "where the gallery and the chart's test images come from (default: the dataset the adapter "
                "records in its report or training config)"})
    split: str = field(default="test", metadata={"help": "split of --dataset to show (default test)"})
    base_model: Optional[str] = field(default=None, metadata={"help": "default: the one named in the adapter config"})
    revision: Optional[str] = field(default=None, metadata={"help": "revision of a Hub adapter"})
    host: str = field(default="127.0.0.1", metadata={
        "help": "address to serve on (default 127.0.0.1: this machine only)"})
    port: int = field(default=7860, metadata={"help": "port to serve on"})
    top_k: int = field(default=3, metadata={"help": "predictions shown per model"})
    gallery_per_class: int = field(default=3, metadata={"help": "gallery images per class"})
    eval_per_class: int = field(default=20, metadata={"help": "test images per class for the chart"})
    num_threads: Optional[int] = field(default=None, metadata={"help": "torch CPU threads"})
    write_space: Optional[str] = field(default=None, metadata={
        "metavar": "DIR",
        "help": "write the Hub Space files (app.py, requirements.txt, README.md) for --adapter (a Hub repo id) into "
                "DIR instead of serving; `hf-unlearn push ... --space ORG/NAME` pushes them"})


def run_demo(args: DemoArguments):
    """Serve the demo on ``args.adapter`` (or, with ``args.write_space``, write the Space files there).

    Returns the served app, or the Space folder. Bad settings raise :class:`DemoInputError`.
    """
    for name in ("top_k", "gallery_per_class", "eval_per_class", "port"):
        if getattr(args, name) < 1:
            raise DemoInputError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.write_space:
        try:
            folder = write_space(args.write_space, args.adapter, dataset=args.dataset)
        except ValueError as err:
            raise DemoInputError(str(err)) from None
        print(f"wrote the Space files to {folder}; push them with `hf-unlearn push ADAPTER {args.adapter} "
              f"--space ORG/NAME` or upload the folder as a Gradio Space")
        return folder
    import_gradio()  # a missing extra fails here, before any model is loaded
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    app = create_app(args.adapter, dataset=args.dataset, split=args.split, top_k=args.top_k,
                     base_model=args.base_model, revision=args.revision,
                     gallery_per_class=args.gallery_per_class, eval_per_class=args.eval_per_class)
    print(f"hf_unlearn demo on {args.adapter}: open http://{args.host}:{args.port} (Ctrl+C to stop)")
    return serve(app, host=args.host, port=args.port)


def main(argv: Optional[Sequence[str]] = None):
    """``hf-unlearn demo``: parse ``argv`` and :func:`run_demo`; an explained failure exits 2 with its message."""
    (args,) = parse_arguments((DemoArguments,), argv, prog="hf-unlearn demo", description=DESCRIPTION, config=False)
    try:
        return run_demo(args)
    except (DemoInputError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
