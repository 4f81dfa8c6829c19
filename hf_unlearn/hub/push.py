"""Pushing adapters and exported models to the Hugging Face Hub: ONE commit each, with its model card.

- :func:`push_adapter` (what ``UnlearnAdapter.push_to_hub`` calls) and :func:`push_exported`: the
  files, a generated card (:mod:`hf_unlearn.hub.cards`) and the evaluation report, in one commit.
- :func:`commit_folder`: ``create_repo`` + one ``upload_folder``, every failure a :class:`PushError`.

The command lines are :mod:`hf_unlearn.commands.push` and :mod:`hf_unlearn.commands.export`.
Nothing here imports :mod:`hf_unlearn.adapter` (the adapter imports this module).

Example:

```py
>>> from hf_unlearn.hub.push import push_exported
>>> model = adapter.export(forget="Coat")
>>> info = push_exported(model, adapter.image_processor, "me/resnet-without-coat", adapter_repo="me/resnet-wf")
>>> info.oid  # the commit sha
```
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

from huggingface_hub import HfApi, constants, get_token, try_to_load_from_cache
from peft.utils.constants import WEIGHTS_NAME

from .card_data import looks_like_hub_id, write_report_files
from .cards import adapter_card, exported_card

__all__ = [
    "PushError", "require_token", "check_online", "cached_hub_report", "commit_folder",
    "http_status", "push_adapter", "push_exported",
]

REPORT_FILES = ("report.json", "report.md")
# Files a push manages: removed from the repo when this push does not bring them, so that a new
# revision never keeps the report or the recipe of earlier filters (other files are left alone).
ADAPTER_MANAGED = [*REPORT_FILES, "untraining_config.yaml", WEIGHTS_NAME]
EXPORTED_MANAGED = [*REPORT_FILES, "model-*-of-*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin"]
TOKEN_HELP = "pushing needs a token: `hf auth login` (or `huggingface-cli login`), HF_TOKEN, or token="


class PushError(OSError):
    """A push to the Hub failed (no token, offline, refused, or a network error).

    All files of a push go in one commit, so the repo has either all of them or none of them:
    after a failure the remote revision is what it was, and the same call can simply be retried.
    """


def require_token(token: Union[None, bool, str] = None) -> str:
    """The token to push with: ``token``, else ``HF_TOKEN`` / the stored login.

    Raises :class:`PushError` when there is none (before any network traffic).

    Example:

    ```py
    >>> token = require_token()  # HF_TOKEN or `hf auth login`
    ```
    """
    if token is False:
        raise PushError(f"{TOKEN_HELP} (token=False was passed).")
    if isinstance(token, str) and token:
        return token
    found = get_token()
    if not found:
        raise PushError(f"{TOKEN_HELP}.")
    return found


def check_online() -> None:
    """Raise :class:`PushError` when ``HF_HUB_OFFLINE`` is on (read now, not at import)."""
    if constants.HF_HUB_OFFLINE:
        raise PushError("Pushing needs the Hub, but offline mode is on (HF_HUB_OFFLINE=1): unset it to push.")


def cached_hub_report(repo_id: str, revision: Optional[str] = None) -> Optional[Path]:
    """``report.json`` of a Hub adapter, if it is in the cache (``download_adapter`` fetches it)."""
    try:
        found = try_to_load_from_cache(repo_id, "report.json", revision=revision)
    except Exception:  # an odd repo id or revision: no report, not an error
        return None
    return Path(found) if isinstance(found, str) else None


def _stage_report(report, folder: Path, id2label: Optional[Mapping] = None) -> Optional[dict]:
    """Write ``report.json`` and ``report.md`` into the staging ``folder``; returns the report dict."""
    names = [str(v) for _, v in sorted((int(k), v) for k, v in (id2label or {}).items())] or None
    return write_report_files(report, folder, names)


def commit_folder(folder: Path, repo_id: str, *, token: str, private=None, revision=None, commit_message: str,
                  managed: Sequence[str] = ()):
    """create_repo(exist_ok) + one upload_folder commit; errors become a :class:`PushError`.

    ``managed``: patterns of remote files this push replaces; those it does not upload are deleted
    in the same commit. Returns the ``CommitInfo``.

    Example:

    ```py
    >>> commit_folder(Path("staged"), "me/repo", token=require_token(), commit_message="Upload")
    ```
    """
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
        status, cause = http_status(err)
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


def http_status(err: BaseException):
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

    Example:

    ```py
    >>> push_adapter(adapter, "me/resnet-wf", report="runs/wf-resnet/untraining_metrics.json")
    ```
    """
    token = require_token(token)
    base = adapter.config.base_model_name_or_path
    if not looks_like_hub_id(base):
        warnings.warn(
            f"The adapter names its base model as {base!r}, which is not a Hub repo id: whoever loads "
            f"{repo_id!r} must pass base_model=. Set adapter.config.base_model_name_or_path to the base "
            "model's Hub id (or `hf-unlearn push --hub_base_model ID`) before pushing.",
            stacklevel=3,
        )
    check_online()
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
        return commit_folder(
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
    token = require_token(token)
    check_online()
    with tempfile.TemporaryDirectory(prefix="hf_unlearn-push-") as tmp:
        folder = Path(tmp)
        card = exported_card(model, forgotten, report, repo_id=repo_id, adapter_repo=adapter_repo,
                             base_model=base_model, command=command)
        model.save_pretrained(folder)  # safetensors (transformers 5 writes nothing else)
        if image_processor is not None:
            image_processor.save_pretrained(folder)
        _stage_report(report, folder, getattr(model.config, "id2label", None))
        card.save(folder / "README.md")
        return commit_folder(
            folder, repo_id, token=token, private=private, revision=revision,
            commit_message=commit_message or "Upload unlearned model (hf_unlearn export)", managed=EXPORTED_MANAGED,
        )
