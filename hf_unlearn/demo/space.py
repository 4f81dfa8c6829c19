"""The demo as a Hugging Face Space: the files (:func:`space_files`, :func:`write_space`) and the push
(:func:`push_space`, one commit, failures explained as :class:`hf_unlearn.hub.push.PushError`).

A Space folder holds ``app.py`` (it calls :func:`hf_unlearn.demo.app.create_app` on the adapter's
Hub id: the same app as ``hf-unlearn demo``), ``requirements.txt`` (this release of
``hf_unlearn[demo]``) and ``README.md`` with the Space metadata (``sdk: gradio``, the Gradio
version, ``models:`` naming the adapter, so that the adapter's Hub page lists the Space).

Only the standard library and huggingface_hub are used: no Gradio needed to write or push one.

Example:

```py
>>> write_space("space", "me/resnet-fashion-wf", dataset="fashion_mnist")
>>> push_space("me/resnet-fashion-wf-demo", "me/resnet-fashion-wf", dataset="fashion_mnist")
```
"""

from __future__ import annotations

import os
import re
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Optional, Union

from huggingface_hub import HfApi, SpaceCard, SpaceCardData

from .. import __version__
from ..files import atomic_write_text
from ..hub.card_data import hub_dataset_id, looks_like_hub_id
from ..hub.cards import TAGS
from ..hub.push import PushError, check_online, http_status, require_token

__all__ = ["GRADIO_FALLBACK", "check_repo_id", "space_files", "write_space", "push_space", "gradio_version"]

GRADIO_FALLBACK = "6.31.0"  # the Gradio this release was tested with, when Gradio is not installed here

APP_TEMPLATE = '''"""The hf_unlearn demo on {adapter}: forget classes, see the predictions change.

Written by `hf-unlearn push --space` ({version}); runs on a Space and locally (`python app.py`).
"""

from hf_unlearn.demo.app import create_app, serve

ADAPTER = {adapter!r}
DATASET = {dataset!r}  # the dataset it was trained on: its test images fill the gallery

demo = create_app(ADAPTER, dataset=DATASET)

if __name__ == "__main__":
    serve(demo)  # host and port: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (set by the Space)
'''


def gradio_version() -> str:
    """The installed Gradio's version (the Space runs the same), else :data:`GRADIO_FALLBACK`."""
    try:
        return metadata.version("gradio")
    except metadata.PackageNotFoundError:
        return GRADIO_FALLBACK


def check_repo_id(repo_id: str, what: str) -> None:
    """Raise a ``ValueError`` naming ``what`` unless ``repo_id`` is a Hub id written ``ORG/NAME``."""
    if not isinstance(repo_id, str) or "/" not in repo_id or not looks_like_hub_id(repo_id):
        hint = (": a Space loads the adapter from the Hub, so push the adapter first (hf-unlearn push ADAPTER ORG/NAME)"
                if what == "The adapter" else "")
        raise ValueError(f"{what} must be a Hub repo id written as ORG/NAME, got {repo_id!r}{hint}.")


def space_files(adapter_repo: str, *, dataset: Optional[str], base_model: Optional[str] = None,
                title: Optional[str] = None, license: Optional[str] = "apache-2.0") -> dict[str, str]:
    """``{"app.py", "requirements.txt", "README.md"}`` texts of the Space for ``adapter_repo`` (a Hub id)."""
    check_repo_id(adapter_repo, "The adapter")
    if not dataset:
        raise ValueError("The Space needs the dataset the adapter was trained on (for the gallery and the chart): "
                         "pass dataset= / --dataset.")
    name = adapter_repo.split("/")[-1]
    models = [adapter_repo] + ([base_model] if base_model and "/" in base_model and looks_like_hub_id(base_model) else [])
    hub_ds = hub_dataset_id(dataset)
    data = SpaceCardData(
        title=(title or f"Forget classes: {name}")[:60], sdk="gradio", sdk_version=gradio_version(), app_file="app.py",
        license=license, models=models, datasets=[hub_ds] if hub_ds else None,
        tags=[t for t in TAGS if t != "image-classification"] + ["gradio", "demo"],
        emoji="🧽", colorFrom="indigo", colorTo="gray", pinned=False,
        short_description=f"Make {name} forget classes, live"[:60],
    )
    body = (
        f"# Forget classes with [`{adapter_repo}`](https://huggingface.co/{adapter_repo})\n\n"
        "Choose classes, pick a test image or upload one, and compare the base model's predictions with the "
        "unlearned model's (one weight-filter adapter, any class or set per request; "
        "[WF-Net](https://arxiv.org/abs/2304.02049), made with `hf_unlearn`). The same app runs locally:\n\n"
        f"```bash\npip install \"hf_unlearn[demo]=={__version__}\"\nhf-unlearn demo --adapter {adapter_repo}"
        f" --dataset {dataset}\n```\n"
    )
    card = SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    return {
        "app.py": APP_TEMPLATE.format(adapter=adapter_repo, dataset=dataset, version=f"hf_unlearn {__version__}"),
        # This release, with the demo extra (Gradio); the Space's own Gradio is sdk_version above.
        "requirements.txt": f"hf_unlearn[demo]=={__version__}\n",
        "README.md": str(card),
    }


def write_space(folder: Union[str, os.PathLike], adapter_repo: str, **kwargs) -> Path:
    """Write the Space files (see :func:`space_files`) into ``folder``; returns it.

    Example:

    ```py
    >>> write_space("my-space", "me/resnet-fashion-wf", dataset="fashion_mnist")
    ```
    """
    files = space_files(adapter_repo, **kwargs)  # everything checked before anything is written
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        atomic_write_text(folder / name, text)
    return folder


def push_space(space_id: str, adapter_repo: str, *, token: Union[None, bool, str] = None,
               private: Optional[bool] = None, commit_message: Optional[str] = None, **kwargs):
    """Create (if needed) the Gradio Space ``space_id`` and push its files in one commit.

    Returns the ``CommitInfo``. Raises :class:`hf_unlearn.hub.push.PushError` without a token, offline,
    or when the Hub refuses (nothing is committed then).
    """
    check_repo_id(space_id, "The Space")
    files = space_files(adapter_repo, **kwargs)
    token = require_token(token)
    check_online()
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="hf_unlearn-space-") as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        step = "creating the Space"
        try:
            api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
            step = "uploading"
            return api.upload_folder(repo_id=space_id, repo_type="space", folder_path=tmp,
                                     commit_message=commit_message or "hf_unlearn demo Space")
        except Exception as err:
            status, _ = http_status(err)
            detail = re.sub(r"\s+", " ", str(err)).strip()
            raise PushError(f"Pushing the Space {space_id!r} failed while {step}"
                            + (f" (HTTP {status})" if status else "")
                            + f": {detail}. Nothing was committed: run the same push again to retry.") from err
