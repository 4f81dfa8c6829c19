"""Getting adapters from and to the Hugging Face Hub with the real ``huggingface_hub`` client.

- :func:`download_adapter`: an adapter repo into the cache (clear errors for a missing repo or
  revision, an offline cache miss, pickle-only weights).
- :func:`push_adapter` (``UnlearnAdapter.push_to_hub``) and :func:`push_exported`: one commit each,
  with a generated model card (see :mod:`hf_unlearn.hub.cards`) and the evaluation report.
- :func:`cli_push`, :func:`add_push_arguments`, :func:`push_exported_from_args`: the command line.

Only the standard library is imported at module level (``hf_unlearn.adapter`` imports this module).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

# The files of an adapter repo that we read. Pickle weights are never downloaded, let alone read.
ADAPTER_PATTERNS = ["*.json", "*.safetensors", "*.md", "*.png"]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def download_adapter(
    repo_id: str, *, revision: Optional[str] = None, token=None, cache_dir: Optional[str] = None
) -> Path:
    """Download (or find in the cache, offline) an adapter repo and return its local folder.

    Raises a clear error for a missing repo or revision, and refuses a repo whose weights are
    pickle files rather than safetensors.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    from ..adapter import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    try:
        folder = Path(
            snapshot_download(
                repo_id, revision=revision, token=token, cache_dir=cache_dir, allow_patterns=ADAPTER_PATTERNS
            )
        )
    except RevisionNotFoundError as err:
        raise ValueError(f"Revision {revision!r} does not exist in the Hub repo {repo_id!r}.") from err
    except RepositoryNotFoundError as err:
        raise ValueError(
            f"{repo_id!r} is neither a local adapter folder nor a Hub repo that exists (or that your token can read)."
        ) from err
    except LocalEntryNotFoundError as err:
        raise OSError(
            f"{repo_id!r} is not a local folder and is not in the Hub cache, and the Hub cannot be reached "
            "(offline mode or no network). Download it once online, or pass a local folder."
        ) from err
    if not (folder / ADAPTER_WEIGHTS).is_file():
        pickles = _remote_pickles(repo_id, revision=revision, token=token)
        if pickles:
            raise ValueError(
                f"Hub repo {repo_id!r} holds pickle weights ({', '.join(pickles)}) instead of {ADAPTER_WEIGHTS}. "
                "hf_unlearn never unpickles files (loading a pickle can run arbitrary code): ask the "
                "owner to upload safetensors."
            )
        raise FileNotFoundError(f"Hub repo {repo_id!r} has no {ADAPTER_WEIGHTS}: it is not an hf_unlearn adapter.")
    if not (folder / ADAPTER_CONFIG).is_file():
        raise FileNotFoundError(f"Hub repo {repo_id!r} has no {ADAPTER_CONFIG}: it is not an hf_unlearn adapter.")
    return folder


def _remote_pickles(repo_id: str, *, revision=None, token=None) -> list[str]:
    """Names of pickle files in a repo (empty when the Hub cannot be asked, e.g. offline)."""
    from huggingface_hub import HfApi

    try:
        files = HfApi(token=token).list_repo_files(repo_id, revision=revision)
    except Exception:  # offline or unreachable: the caller still reports the missing safetensors
        return []
    return sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))


# ---------------------------------------------------------------------------------------------
# pushing: adapters and exported models, each in ONE commit with its model card
# ---------------------------------------------------------------------------------------------

REPORT_FILES = ("report.json", "report.md")
# Files a push manages: removed from the repo when this push does not bring them, so that a new
# revision never keeps the report or the recipe of earlier filters (other files are left alone).
ADAPTER_MANAGED = [*REPORT_FILES, "untraining_config.yaml", "adapter_model.bin"]
EXPORTED_MANAGED = [*REPORT_FILES, "model-*-of-*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin"]
TOKEN_HELP = "pushing needs a token: `hf auth login` (or `huggingface-cli login`), HF_TOKEN, or token="


class PushError(OSError):
    """A push to the Hub failed (no token, offline, refused, or a network error).

    All files of a push go in one commit, so the repo has either all of them or none of them:
    after a failure the remote revision is what it was, and the same call can simply be retried.
    """


def require_token(token: Union[None, bool, str] = None) -> str:
    """The token to push with: ``token``, else ``HF_TOKEN`` / the stored login. Raises
    :class:`PushError` when there is none (before any network traffic)."""
    if token is False:
        raise PushError(f"{TOKEN_HELP} (token=False was passed).")
    if isinstance(token, str) and token:
        return token
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise PushError(f"{TOKEN_HELP}.")
    return found


def _check_online() -> None:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise PushError("Pushing needs the Hub, but offline mode is on (HF_HUB_OFFLINE=1): unset it to push.")


def find_report(folder: Union[str, os.PathLike, None]) -> Optional[Path]:
    """An evaluation report next to a local adapter: ``report.json``, else ``untraining_metrics.json``."""
    from .cards import REPORT_FILENAMES

    if folder is None or not Path(folder).is_dir():
        return None
    for name in REPORT_FILENAMES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def _cached_hub_report(repo_id: str, revision: Optional[str] = None) -> Optional[Path]:
    """``report.json`` of a Hub adapter, if it is in the cache (``download_adapter`` fetches it)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "report.json", revision=revision)
    except Exception:  # an odd repo id or revision: no report, not an error
        return None
    return Path(found) if isinstance(found, str) else None


def _stage_report(report, folder: Path, id2label: Optional[Mapping] = None) -> Optional[dict]:
    from .cards import load_report, report_markdown
    from ..evaluation.report import to_jsonable

    data = load_report(report)
    if data is None:
        return None
    (folder / "report.json").write_text(json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n",
                                        encoding="utf-8")
    names = [str(v) for _, v in sorted((int(k), v) for k, v in (id2label or {}).items())] or None
    (folder / "report.md").write_text(report_markdown(data, names), encoding="utf-8")
    return data


def _commit_folder(folder: Path, repo_id: str, *, token: str, private, revision, commit_message: str,
                   managed: Sequence[str] = ()):
    """create_repo(exist_ok) + one upload_folder commit; errors become a :class:`PushError`.

    ``managed``: patterns of remote files this push replaces; those it does not upload are deleted
    in the same commit."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    step = "creating the repo"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            step = f"creating the branch {revision!r}"
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        step = "uploading"
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            revision=revision,
            commit_message=commit_message,
            delete_patterns=list(managed) or None,
        )
    except Exception as err:
        status, cause = _http_status(err)
        hint = "Nothing was committed (a push is one commit): run the same push again to retry."
        if status in (401, 403):
            hint = "The Hub refused the token: check that it is valid and has write access to this namespace."
        detail = str(err).rstrip(". ")
        if cause is not None and cause is not err:
            detail += f" ({str(cause).splitlines()[0].rstrip('. ')})"
        raise PushError(
            f"Pushing to the Hub repo {repo_id!r} failed while {step}"
            + (f" (HTTP {status})" if status else "")
            + f": {detail}. {hint}"
        ) from err


def _http_status(err: BaseException):
    """(HTTP status, the exception that carried it) from ``err`` or its causes; (None, None) if none."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        status = getattr(getattr(err, "response", None), "status_code", None)
        if isinstance(status, int):
            return status, err
        err = err.__cause__ or err.__context__
    return None, None


def push_adapter(
    adapter,
    repo_id: str,
    *,
    token: Union[None, bool, str] = None,
    private: Optional[bool] = None,
    revision: Optional[str] = None,
    commit_message: Optional[str] = None,
    report=None,
    command: Optional[str] = None,
    extra_files: Optional[Mapping[str, Union[str, os.PathLike]]] = None,
    space: Optional[str] = None,
):
    """Push an :class:`~hf_unlearn.UnlearnAdapter` (see ``UnlearnAdapter.push_to_hub``).

    ``extra_files`` maps a path in the repo to a local file to add to the same commit (e.g. the
    ``untraining_config.yaml`` that reproduces the adapter). ``space``: the Hub Space running the
    demo on this adapter (``org/name``), linked from the card. Returns the ``CommitInfo``
    (``.oid`` is the commit sha, ``.commit_url`` its page).
    """
    from .cards import adapter_card, looks_like_hub_id

    token = require_token(token)
    base = adapter.config.base_model_name_or_path
    if not looks_like_hub_id(base):
        warnings.warn(
            f"The adapter names its base model as {base!r}, which is not a Hub repo id: whoever loads "
            f"{repo_id!r} must pass base_model=. Set adapter.config.base_model_name_or_path to the base "
            "model's Hub id (or `hf-unlearn push --hub_base_model ID`) before pushing.",
            stacklevel=3,
        )
    _check_online()
    with tempfile.TemporaryDirectory(prefix="hf_unlearn-push-") as tmp:
        folder = Path(tmp)
        adapter.save_pretrained(folder)
        data = _stage_report(report, folder, adapter.id2label)
        for path_in_repo, local in (extra_files or {}).items():
            target = folder / path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)
        # After save_pretrained: PEFT writes its own README.md there, ours must replace it.
        adapter_card(adapter, data, repo_id=repo_id, command=command, space=space).save(folder / "README.md")
        return _commit_folder(
            folder, repo_id, token=token, private=private, revision=revision,
            commit_message=commit_message or "Upload hf_unlearn weight-filter adapter", managed=ADAPTER_MANAGED,
        )


def push_exported(
    model,
    image_processor,
    repo_id: str,
    *,
    forgotten=None,
    adapter_repo: Optional[str] = None,
    report=None,
    token: Union[None, bool, str] = None,
    private: Optional[bool] = None,
    revision: Optional[str] = None,
    commit_message: Optional[str] = None,
    base_model: Optional[str] = None,
    command: Optional[str] = None,
):
    """Push an exported (unlearned) model: safetensors weights, config, image processor and a
    model card that says which classes it forgot, how, and from which adapter — one commit.

    Args:
        model: what ``UnlearnAdapter.export(forget=...)`` returned (a plain transformers model).
        image_processor: its image processor (or None).
        repo_id: the Hub repo to push to (created if needed).
        forgotten: the forgotten class(es) (ids or names); None: read from
            ``model.config.unlearned_classes``, which ``export`` records.
        adapter_repo: the adapter it came from (Hub id or folder), for the card.
        report: ``untraining_metrics.json``, an evaluation report dict, or a path to one; pushed
            as ``report.json`` / ``report.md`` and summarised in the card.
        base_model: the base model's Hub id, for the card (default: ``model.name_or_path``).

    Returns the ``CommitInfo`` (``.oid`` is the commit sha). Loads afterwards with plain
    ``AutoModelForImageClassification.from_pretrained(repo_id)``, no hf_unlearn needed.

    Example:

    ```py
    >>> model = adapter.export(forget="Coat")
    >>> push_exported(model, adapter.image_processor, "me/resnet-without-coat", forgotten="Coat",
    ...               adapter_repo="me/resnet-wf")
    ```
    """
    from .cards import exported_card

    token = require_token(token)
    _check_online()
    with tempfile.TemporaryDirectory(prefix="hf_unlearn-push-") as tmp:
        folder = Path(tmp)
        card = exported_card(model, forgotten, report, repo_id=repo_id, adapter_repo=adapter_repo,
                             base_model=base_model, command=command)
        model.save_pretrained(folder)  # safetensors (transformers 5 writes nothing else)
        if image_processor is not None:
            image_processor.save_pretrained(folder)
        _stage_report(report, folder, getattr(model.config, "id2label", None))
        card.save(folder / "README.md")
        return _commit_folder(
            folder, repo_id, token=token, private=private, revision=revision,
            commit_message=commit_message or "Upload unlearned model (hf_unlearn export)", managed=EXPORTED_MANAGED,
        )


# ---------------------------------------------------------------------------------------------
# command line: `hf-unlearn push` and `hf-unlearn export --push_to_hub`
# ---------------------------------------------------------------------------------------------

PUSH_DESCRIPTION = "push an adapter (filters, config, image processor, model card, report) to the Hub"


def build_push_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="hf-unlearn push", description=PUSH_DESCRIPTION)
    parser.add_argument("adapter", help="adapter folder (written by save_pretrained / hf-unlearn train)")
    parser.add_argument("repo_id", help="Hub repo to push to, e.g. me/resnet-fashion-wf (created if needed)")
    parser.add_argument("--base_model", default=None,
                        help="load the adapter onto this model (default: the one its config names)")
    parser.add_argument("--hub_base_model", default=None,
                        help="record this Hub id as the base model in the pushed config (when the adapter "
                             "names a local folder)")
    parser.add_argument("--report", default=None,
                        help="untraining_metrics.json or evaluation report.json to publish (default: found "
                             "in the adapter folder)")
    parser.add_argument("--no_report", action="store_true", help="publish no report")
    parser.add_argument("--revision", default=None, help="branch to push to (default main; created if needed)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--commit_message", default=None)
    parser.add_argument("--token", default=None, help="default: HF_TOKEN or the stored login")
    parser.add_argument("--space", metavar="ORG/NAME", default=None,
                        help="also push the interactive demo (a Gradio Space running `hf-unlearn demo` on this "
                             "repo) and link it from the adapter's card")
    parser.add_argument("--dataset", default=None,
                        help="with --space: the dataset whose test images the demo shows (default: the one the "
                             "adapter records)")
    return parser


def cli_push(argv: Optional[Sequence[str]] = None):
    """``hf-unlearn push <adapter_dir> <repo_id>``. Returns the ``CommitInfo``."""
    args = build_push_parser().parse_args(argv)
    token = require_token(args.token)  # before loading anything
    _check_online()
    from ..adapter import UnlearnAdapter

    adapter = UnlearnAdapter.from_pretrained(args.adapter, base_model=args.base_model, token=token)
    if args.hub_base_model:
        adapter.config.base_model_name_or_path = args.hub_base_model
    folder = Path(args.adapter) if Path(args.adapter).is_dir() else None
    report = None if args.no_report else (args.report or find_report(folder))
    space_kwargs = _space_arguments(args, folder, adapter)  # checked before the adapter is pushed
    extra, command = {}, None
    if folder is not None and (folder / "untraining_config.yaml").is_file():
        extra["untraining_config.yaml"] = folder / "untraining_config.yaml"
        command = "hf-unlearn train --config untraining_config.yaml"
    info = push_adapter(
        adapter, args.repo_id, token=token, private=args.private or None, revision=args.revision,
        commit_message=args.commit_message, report=report, command=command, extra_files=extra, space=args.space,
    )
    print(f"pushed {args.adapter} to {args.repo_id} (commit {info.oid}): {info.commit_url}")
    if args.space:
        from ..demo.space import push_space

        space_info = push_space(args.space, args.repo_id, token=token, private=args.private or None, **space_kwargs)
        print(f"pushed the demo Space {args.space} (commit {space_info.oid}): "
              f"https://huggingface.co/spaces/{args.space}")
    return info


def _space_arguments(args: argparse.Namespace, folder: Optional[Path], adapter) -> dict:
    """The Space's settings for ``--space`` (its dataset), checked before anything is pushed."""
    if not args.space:
        return {}
    from ..demo.core import recorded_dataset
    from ..demo.space import _check_repo_id, space_files

    from .cards import looks_like_hub_id

    base = adapter.config.base_model_name_or_path
    if not (looks_like_hub_id(base) and "/" in str(base)):
        raise PushError(f"Nothing was pushed: the Space loads the base model from the Hub, but the adapter names "
                        f"{base!r}, which is not a Hub repo id. Push the base model and pass --hub_base_model ORG/NAME.")
    dataset = args.dataset or (recorded_dataset(folder) if folder is not None else None)
    kwargs = {"dataset": dataset, "base_model": base}
    try:
        _check_repo_id(args.space, "--space")
        space_files(args.repo_id, **kwargs)  # a missing dataset or a bad id fails here, before any push
    except ValueError as err:
        raise PushError(f"Nothing was pushed: {err}") from None
    return kwargs


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--push_to_hub REPO`` and its options to ``hf-unlearn export``'s parser."""
    group = parser.add_argument_group("pushing the exported model to the Hub")
    group.add_argument("--push_to_hub", metavar="REPO_ID", default=None,
                       help="also push the exported model, with a model card, to this Hub repo")
    group.add_argument("--report", default=None,
                       help="report to publish with it (default: found next to the adapter)")
    group.add_argument("--hub_revision", default=None, help="branch to push to (default main)")
    group.add_argument("--hub_private", action="store_true", help="create the repo as private")
    group.add_argument("--hub_token", default=None, help="default: HF_TOKEN or the stored login")


def check_push_arguments(args: argparse.Namespace) -> None:
    """Fail fast (before loading models) when ``--push_to_hub`` is given but no token is found."""
    if getattr(args, "push_to_hub", None):
        require_token(args.hub_token)
        _check_online()


def push_exported_from_args(args: argparse.Namespace, adapter, model):
    """After ``hf-unlearn export`` saved ``model``: push it when ``--push_to_hub`` was given."""
    if not getattr(args, "push_to_hub", None):
        return None
    source = str(args.adapter)
    local = Path(source).is_dir()
    report = args.report
    if report is None:
        report = find_report(source) if local else _cached_hub_report(source, getattr(args, "revision", None))
    base = getattr(args, "base_model", None) or adapter.config.base_model_name_or_path
    info = push_exported(
        model, adapter.image_processor, args.push_to_hub,
        forgotten=None, adapter_repo=source, report=report, token=args.hub_token,
        private=args.hub_private or None, revision=args.hub_revision, base_model=base,
    )
    print(f"pushed the model without {model.config.unlearned_classes} to {args.push_to_hub} "
          f"(commit {info.oid}): {info.commit_url}")
    return info
