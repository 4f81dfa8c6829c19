"""``hf-unlearn explain``: what an adapter's filters say about each class.

    hf-unlearn explain --adapter runs/wf-resnet --dataset fashion_mnist --split test \\
        --images_per_class 2 --auc_images 200 --output_dir runs/explain-wf-resnet

The options are :class:`ExplainArguments` plus the shared :class:`DataArguments` and
:class:`RuntimeArguments`; the same dataclasses drive the job from Python:

    from hf_unlearn.commands.arguments import DataArguments, RuntimeArguments
    from hf_unlearn.commands.explain import ExplainArguments
    from hf_unlearn.explain.job import run_explain

    run_explain(ExplainArguments(adapter="runs/wf-resnet", output_dir="runs/explain", auc_images=50),
                DataArguments(dataset="fashion_mnist"), RuntimeArguments(no_progress=True))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from ..explain.job import run_explain
from ..explain.saliency import METHODS
from .arguments import DataArguments, RuntimeArguments, parse_arguments

DESCRIPTION = ("Explain an adapter's filters: filter maps, row similarity vs confusion, saliency from the filters "
               "next to Grad-CAM and a random map, and deletion/insertion AUCs; writes explain.json, explain.md "
               "and PNGs.")


@dataclass
class ExplainArguments:
    """What to explain, on which split, and how (``hf-unlearn explain``'s own options)."""

    adapter: str = field(metadata={"help": "adapter folder or Hub repo id"})
    output_dir: str = field(metadata={"help": "where explain.json, explain.md and the PNGs go"})
    base_model: Optional[str] = field(default=None, metadata={"help": "default: the one named in the adapter config"})
    split: str = field(default="test", metadata={"help": "dataset split to read"})
    max_samples: Optional[int] = field(
        default=None, metadata={"help": "seeded subset of the split (confusion matrix and image choice); default all"}
    )
    classes: Optional[list[str]] = field(default=None, metadata={"help": "class ids or names to explain (default all)"})
    layer: Optional[str] = field(
        default=None,
        metadata={"help": "filtered layer for saliency (full name or unique suffix); default: last spatial layer "
                          "(CNN), last fc1 whose patch tokens reach the logits (ViT)"},
    )
    images_per_class: int = field(default=2, metadata={"help": "overlay images per class"})
    auc_images: int = field(default=200, metadata={"help": "images for the deletion/insertion AUCs (0 = none)"})
    steps: int = field(default=16, metadata={"help": "deletion/insertion steps"})
    methods: Optional[list[str]] = field(
        default=None,
        metadata={"choices": list(METHODS),
                  "help": "saliency methods to compare (default: filter gradcam random, plus filter_abs for CNN "
                          "layers)"},
    )
    baseline: str = field(
        default="zero", metadata={"choices": ["zero", "blur"],
                                  "help": "what deleted pixels become: 0 (the dataset mean, normalised) or a blur"}
    )
    batch_size: int = field(default=64, metadata={"help": "images per forward pass"})
    seed: int = field(default=0, metadata={"help": "seed of the image choice, random maps and tie-breaks"})
    no_plots: bool = field(default=False, metadata={"help": "write explain.json and explain.md only"})

    def __post_init__(self) -> None:
        for name, low in (("images_per_class", 0), ("auc_images", 0), ("batch_size", 1), ("steps", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"--{name} must be >= {low}, got {getattr(self, name)}.")


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run :func:`hf_unlearn.explain.job.run_explain`."""
    args, data, runtime = parse_arguments((ExplainArguments, DataArguments, RuntimeArguments), argv,
                                          prog="hf-unlearn explain", description=DESCRIPTION)
    return run_explain(args, data, runtime)
