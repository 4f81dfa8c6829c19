"""``hf-unlearn export ADAPTER --forget ... --output_dir DIR``: fold classes into a plain transformers model.

    hf-unlearn export runs/wf-resnet --forget Coat --output_dir runs/resnet-without-coat
    hf-unlearn export me/resnet-wf --forget 3 7 --output_dir without-3-7 --push_to_hub me/resnet-without-3-7

The same from Python, without argv::

    from hf_unlearn.commands.export import ExportArguments, HubExportArguments, export

    model = export(ExportArguments(adapter="runs/wf-resnet", forget=["Coat"], output_dir="runs/no-coat"),
                   HubExportArguments(push_to_hub="me/resnet-without-coat"))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..adapter import UnlearnAdapter
from ..adapter_files import check_export_target, save_export
from ..hub.cards import write_exported_card
from ..hub.card_data import find_report
from ..hub.push import cached_hub_report, check_online, push_exported, require_token
from .arguments import parse_arguments

DESCRIPTION = "fold one class (or set) into a plain transformers model (optionally --push_to_hub)"


@dataclass
class ExportArguments:
    """Which adapter, which classes, and where the exported model goes (``adapter`` is positional)."""

    adapter: str = field(metadata={"help": "adapter folder or Hub repo id"})
    forget: list[str] = field(metadata={"help": "class ids or names to forget"})
    output_dir: str = field(metadata={"help": "folder for the exported model (new, empty, or an earlier export)"})
    base_model: Optional[str] = field(default=None, metadata={"help": "default: the one named in the adapter config"})
    revision: Optional[str] = field(default=None, metadata={"help": "revision of a Hub adapter"})


@dataclass
class HubExportArguments:
    """Pushing the exported model to the Hub (nothing is pushed without ``push_to_hub``)."""

    push_to_hub: Optional[str] = field(default=None, metadata={
        "metavar": "REPO_ID", "help": "also push the exported model, with a model card, to this Hub repo"})
    report: Optional[str] = field(default=None, metadata={
        "help": "report to publish with it (default: found next to the adapter)"})
    hub_revision: Optional[str] = field(default=None, metadata={"help": "branch to push to (default main)"})
    hub_private: bool = field(default=False, metadata={"help": "create the repo as private"})
    hub_token: Optional[str] = field(default=None, metadata={"help": "default: HF_TOKEN or the stored login"})


def export(args: ExportArguments, hub: Optional[HubExportArguments] = None):
    """Export ``args.adapter`` without ``args.forget`` to ``args.output_dir`` (with its card); push it with
    ``hub.push_to_hub``. Returns the exported model.

    The output folder, the token and the offline mode are checked before any model is loaded; the
    folder is written atomically (it holds the old export or the new one, never a mix).
    """
    hub = hub or HubExportArguments()
    if hub.push_to_hub:  # no token / offline: fail before loading any model
        require_token(hub.hub_token)
        check_online()
    check_export_target(Path(args.output_dir).expanduser().absolute())
    adapter = UnlearnAdapter.from_pretrained(args.adapter, base_model=args.base_model, revision=args.revision)
    forget = [int(c) if c.lstrip("-").isdigit() else c for c in args.forget]
    model = adapter.export(forget=forget)
    save_export(
        model, args.output_dir, adapter.image_processor,
        write_extra=lambda folder: write_exported_card(
            model, folder, adapter_repo=args.adapter, report=hub.report,
            base_model=args.base_model or adapter.config.base_model_name_or_path),
    )
    print(f"saved a model without {model.config.unlearned_classes} to {args.output_dir}")
    if hub.push_to_hub:
        push_exported_model(args, hub, adapter, model)
    return model


def push_exported_model(args: ExportArguments, hub: HubExportArguments, adapter, model):
    """Push ``model`` (exported from ``adapter``) to ``hub.push_to_hub``; returns the ``CommitInfo``.

    The report defaults to the one next to a local adapter, or the one a Hub adapter brought into the cache.
    """
    source = str(args.adapter)
    report = hub.report
    if report is None:
        report = find_report(source) if Path(source).is_dir() else cached_hub_report(source, args.revision)
    info = push_exported(
        model, adapter.image_processor, hub.push_to_hub,
        forgotten=None, adapter_repo=source, report=report, token=hub.hub_token,
        private=hub.hub_private or None, revision=hub.hub_revision,
        base_model=args.base_model or adapter.config.base_model_name_or_path,
    )
    print(f"pushed the model without {model.config.unlearned_classes} to {hub.push_to_hub} "
          f"(commit {info.oid}): {info.commit_url}")
    return info


def main(argv: Optional[Sequence[str]] = None):
    """``hf-unlearn export``: parse ``argv`` and :func:`export`."""
    args, hub = parse_arguments((ExportArguments, HubExportArguments), argv, prog="hf-unlearn export",
                                description=DESCRIPTION, config=False, positional=("adapter",))
    return export(args, hub)
