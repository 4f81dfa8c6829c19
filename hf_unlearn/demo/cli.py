"""``hf-unlearn demo --adapter PATH_OR_REPO``: open the interactive demo (or write its Space files).

    hf-unlearn demo --adapter runs/quickstart/adapter                 # http://127.0.0.1:7860
    hf-unlearn demo --adapter me/resnet-fashion-wf --dataset fashion_mnist --port 8080
    hf-unlearn demo --adapter me/resnet-fashion-wf --dataset fashion_mnist --write_space my-space
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .core import DemoInputError  # standard library only: --help stays light


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-unlearn demo",
        description='an interactive demo in the browser: forget classes, see predictions change '
                    '(pip install "hf_unlearn[demo]")')
    parser.add_argument("--adapter", required=True, help="adapter folder or Hub repo id")
    parser.add_argument("--dataset", default=None,
                        help="where the gallery and the chart's test images come from (default: the dataset the "
                             "adapter records in its report or training config)")
    parser.add_argument("--split", default="test", help="split of --dataset to show (default test)")
    parser.add_argument("--base_model", default=None, help="default: the one named in the adapter config")
    parser.add_argument("--revision", default=None, help="revision of a Hub adapter")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--top_k", type=int, default=3, help="predictions shown per model")
    parser.add_argument("--gallery_per_class", type=int, default=3)
    parser.add_argument("--eval_per_class", type=int, default=20, help="test images per class for the chart")
    parser.add_argument("--num_threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--write_space", metavar="DIR", default=None,
                        help="write the Hub Space files (app.py, requirements.txt, README.md) for --adapter (a Hub "
                             "repo id) into DIR instead of serving; `hf-unlearn push ... --space ORG/NAME` pushes them")
    return parser


def main(argv: Optional[Sequence[str]] = None):
    """Serve the demo (or write the Space files); an explained failure exits with its message."""
    try:
        return _main(argv)
    except (DemoInputError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _main(argv: Optional[Sequence[str]] = None):
    args = build_parser().parse_args(argv)
    for name in ("top_k", "gallery_per_class", "eval_per_class", "port"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name} must be at least 1, got {getattr(args, name)}")
    if args.write_space:
        from .space import write_space

        try:
            folder = write_space(args.write_space, args.adapter, dataset=args.dataset)
        except ValueError as err:
            raise DemoInputError(str(err)) from None
        print(f"wrote the Space files to {folder}; push them with `hf-unlearn push ADAPTER {args.adapter} "
              f"--space ORG/NAME` or upload the folder as a Gradio Space")
        return folder
    from .app import create_app, import_gradio, serve

    import_gradio()  # a missing extra fails here, before any model is loaded
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    app = create_app(args.adapter, dataset=args.dataset, split=args.split, top_k=args.top_k,
                     base_model=args.base_model, revision=args.revision,
                     gallery_per_class=args.gallery_per_class, eval_per_class=args.eval_per_class)
    print(f"hf_unlearn demo on {args.adapter}: open http://{args.host}:{args.port} (Ctrl+C to stop)")
    return serve(app, host=args.host, port=args.port)
