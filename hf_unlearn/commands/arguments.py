"""Argument dataclasses shared by the sub-commands, and the one parser that reads them.

Every job declares its options as dataclasses; ``parse_arguments`` turns a command line (with an
optional ``--config file.yaml`` whose keys pre-fill the options, flags on the command line win) into
instances of them. The same dataclasses are the Python API, so no library code ever builds argv::

    from hf_unlearn.commands.arguments import DataArguments, RuntimeArguments, parse_arguments

    data, runtime = parse_arguments(
        (DataArguments, RuntimeArguments), ["--dataset", "digits", "--no_progress"], prog="hf-unlearn demo"
    )
    assert data.dataset == "digits" and runtime.no_progress
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence


@dataclass
class DataArguments:
    """Where the images come from (the options every data-reading command shares)."""

    dataset: str = field(
        default="fashion_mnist",
        metadata={"help": "fashion_mnist, fashion_mnist_100, digits, a local imagefolder/parquet, or a Hub id"},
    )
    dataset_revision: Optional[str] = field(default=None, metadata={"help": "Hub dataset revision (commit, tag)"})
    image_column: Optional[str] = field(default=None, metadata={"help": "default: detected (the datasets.Image column)"})
    label_column: Optional[str] = field(
        default=None, metadata={"help": "default: detected (the datasets.ClassLabel column)"}
    )


@dataclass
class RuntimeArguments:
    """How a job runs on this machine."""

    cpu: bool = field(default=False, metadata={"help": "force CPU (also gives gloo DDP on a CPU box)"})
    num_threads: Optional[int] = field(default=None, metadata={"help": "torch.set_num_threads (1 on a shared box)"})
    no_progress: bool = field(default=False, metadata={"help": "disable the tqdm progress bars"})


def build_parser(dataclass_types: Iterable[type], *, prog: Optional[str] = None, description: Optional[str] = None,
                 config: bool = True, positional: Sequence[str] = ()):
    """An ``HfArgumentParser`` over ``dataclass_types`` (abbreviations off; ``--config`` if asked).

    ``positional``: fields given bare on the command line, in this order (``hf-unlearn push ADAPTER REPO_ID``).
    """
    from transformers import HfArgumentParser

    parser = HfArgumentParser(tuple(dataclass_types), prog=prog, description=description, allow_abbrev=False)
    _allow_empty_lists(parser, dataclass_types)
    for name in positional:
        _make_positional(parser, name)
    if config:
        parser.add_argument("--config", default=None, help="YAML file whose keys pre-fill these options (flags win)")
    return parser


def _allow_empty_lists(parser, dataclass_types: Iterable[type]) -> None:
    """A list field with ``metadata={"nargs": "*"}`` accepts the flag with no value (an empty list).

    HfArgumentParser gives every list ``nargs="+"``; options like ``--relearn_shots`` (none = skip)
    need ``"*"``, which it overrides, so it is set on the parsed action afterwards.
    """
    wanted = {f.name for cls in dataclass_types for f in dataclasses.fields(cls) if f.metadata.get("nargs") == "*"}
    for action in parser._actions:  # argparse has no public way to change an added option
        if action.dest in wanted:
            action.nargs = "*"


def parse_arguments(dataclass_types: Iterable[type], argv: Optional[Sequence[str]] = None, *,
                    prog: Optional[str] = None, description: Optional[str] = None, config: bool = True,
                    defaults: Optional[dict] = None, positional: Sequence[str] = ()) -> tuple:
    """Parse ``argv`` (default ``sys.argv[1:]``) into one instance per dataclass, in order.

    ``--config file.yaml`` pre-fills the options (an unknown key is an error naming the valid ones);
    ``defaults`` (e.g. read from a base model's saved recipe) pre-fill them before the config does.
    """
    dataclass_types = tuple(dataclass_types)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(dataclass_types, prog=prog, description=description, config=config, positional=positional)
    values = dict(defaults or {})
    if config:
        pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        pre.add_argument("--config", default=None)
        path = pre.parse_known_args(argv)[0].config
        if path:
            values.update(load_config(path, dataclass_types, parser))
    _set_defaults(parser, values)
    parsed = parser.parse_args_into_dataclasses(argv, look_for_args_file=False)
    return tuple(parsed[: len(dataclass_types)])  # drop the namespace holding --config


def load_config(path: str, dataclass_types: Sequence[type], parser: Optional[argparse.ArgumentParser] = None) -> dict:
    """The YAML mapping at ``path``, its keys checked against the dataclasses' field names."""
    import yaml

    with open(path) as f:
        values = yaml.safe_load(f) or {}
    fail = parser.error if parser is not None else _raise_value_error
    if not isinstance(values, dict):
        fail(f"--config {path}: expected a mapping of option names to values")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    known = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        fail(f"--config {path}: unknown keys {unknown}; valid keys: {sorted(known)}")
    return values


def _set_defaults(parser: argparse.ArgumentParser, values: dict[str, Any]) -> None:
    """Make ``values`` the parser's defaults; an option given a value stops being required."""
    for action in parser._actions:  # argparse has no public way to relax `required`
        if action.dest in values:
            action.required = False
    parser.set_defaults(**values)


def _make_positional(parser: argparse.ArgumentParser, name: str) -> None:
    """Take the field ``name`` as a positional argument (HfArgumentParser only makes options).

    The option ``--name`` it made stays, hidden and optional, so both spellings share one ``dest``.
    """
    option = next(a for a in parser._actions if a.dest == name)  # argparse has no public lookup
    option.required = False
    parser.add_argument(name, help=option.help)
    option.help = argparse.SUPPRESS


def _raise_value_error(message: str) -> None:
    raise ValueError(message)
