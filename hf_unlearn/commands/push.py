"""``hf-unlearn push ADAPTER REPO_ID``: push an adapter (and, with ``--space``, its demo) to the Hub.

    hf-unlearn push runs/wf-resnet me/resnet-fashion-wf --hub_base_model microsoft/resnet-50
    hf-unlearn push runs/wf-resnet me/resnet-fashion-wf --space me/resnet-fashion-wf-demo

The same from Python, without argv::

    from hf_unlearn.commands.push import PushArguments, push

    info = push(PushArguments(adapter="runs/wf-resnet", repo_id="me/resnet-fashion-wf"))
    print(info.commit_url)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..adapter import UnlearnAdapter
from ..demo.core import recorded_dataset
from ..demo.space import check_repo_id, push_space, space_files
from ..hub.cards import TRAIN_CONFIG
from ..hub.card_data import find_report, looks_like_hub_id
from ..hub.push import PushError, check_online, push_adapter, require_token
from .arguments import parse_arguments

DESCRIPTION = "push an adapter (filters, config, image processor, model card, report) to the Hub"


@dataclass
class PushArguments:
    """What ``hf-unlearn push`` pushes, and where (``adapter`` and ``repo_id`` are positional)."""

    adapter: str = field(metadata={"help": "adapter folder (written by save_pretrained / hf-unlearn train)"})
    repo_id: str = field(metadata={"help": "Hub repo to push to, e.g. me/resnet-fashion-wf (created if needed)"})
    base_model: Optional[str] = field(
        default=None, metadata={"help": "load the adapter onto this model (default: the one its config names)"}
    )
    hub_base_model: Optional[str] = field(default=None, metadata={
        "help": "record this Hub id as the base model in the pushed config (when the adapter names a local folder)"})
    report: Optional[str] = field(default=None, metadata={
        "help": "untraining_metrics.json or evaluation report.json to publish (default: found in the adapter folder)"})
    no_report: bool = field(default=False, metadata={"help": "publish no report"})
    revision: Optional[str] = field(default=None, metadata={"help": "branch to push to (default main; created if needed)"})
    private: bool = field(default=False, metadata={"help": "create the repo as private"})
    commit_message: Optional[str] = field(default=None, metadata={"help": "the commit message"})
    token: Optional[str] = field(default=None, metadata={"help": "default: HF_TOKEN or the stored login"})
    space: Optional[str] = field(default=None, metadata={
        "metavar": "ORG/NAME",
        "help": "also push the interactive demo (a Gradio Space running `hf-unlearn demo` on this repo) and link "
                "it from the adapter's card"})
    dataset: Optional[str] = field(default=None, metadata={
        "help": "with --space: the dataset whose test images the demo shows (default: the one the adapter records)"})


def push(args: PushArguments):
    """Push ``args.adapter`` to ``args.repo_id`` (and its demo Space with ``args.space``); returns the ``CommitInfo``.

    The token, the offline mode and the Space's settings are checked before anything is loaded or
    pushed. The report and ``untraining_config.yaml`` next to a local adapter go in the same commit.
    """
    token = require_token(args.token)  # before loading anything
    check_online()
    adapter = UnlearnAdapter.from_pretrained(args.adapter, base_model=args.base_model, token=token)
    if args.hub_base_model:
        adapter.config.base_model_name_or_path = args.hub_base_model
    folder = Path(args.adapter) if Path(args.adapter).is_dir() else None
    report = None if args.no_report else (args.report or find_report(folder))
    space_kwargs = space_arguments(args, folder, adapter)  # checked before the adapter is pushed
    extra, command = {}, None
    if folder is not None and (folder / TRAIN_CONFIG).is_file():
        extra[TRAIN_CONFIG] = folder / TRAIN_CONFIG
        command = f"hf-unlearn train --config {TRAIN_CONFIG}"
    info = push_adapter(
        adapter, args.repo_id, token=token, private=args.private or None, revision=args.revision,
        commit_message=args.commit_message, report=report, command=command, extra_files=extra, space=args.space,
    )
    print(f"pushed {args.adapter} to {args.repo_id} (commit {info.oid}): {info.commit_url}")
    if args.space:
        space_info = push_space(args.space, args.repo_id, token=token, private=args.private or None, **space_kwargs)
        print(f"pushed the demo Space {args.space} (commit {space_info.oid}): "
              f"https://huggingface.co/spaces/{args.space}")
    return info


def space_arguments(args: PushArguments, folder: Optional[Path], adapter) -> dict:
    """The Space's settings for ``--space`` (its dataset and base model), checked before anything is pushed."""
    if not args.space:
        return {}
    base = adapter.config.base_model_name_or_path
    if not (looks_like_hub_id(base) and "/" in str(base)):
        raise PushError(f"Nothing was pushed: the Space loads the base model from the Hub, but the adapter names "
                        f"{base!r}, which is not a Hub repo id. Push the base model and pass --hub_base_model ORG/NAME.")
    dataset = args.dataset or (recorded_dataset(folder) if folder is not None else None)
    kwargs = {"dataset": dataset, "base_model": base}
    try:
        check_repo_id(args.space, "--space")
        space_files(args.repo_id, **kwargs)  # a missing dataset or a bad id fails here, before any push
    except ValueError as err:
        raise PushError(f"Nothing was pushed: {err}") from None
    return kwargs


def main(argv: Optional[Sequence[str]] = None):
    """``hf-unlearn push``: parse ``argv`` and :func:`push`."""
    (args,) = parse_arguments((PushArguments,), argv, prog="hf-unlearn push", description=DESCRIPTION,
                              config=False, positional=("adapter", "repo_id"))
    return push(args)
