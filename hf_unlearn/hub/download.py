"""Getting an adapter from the Hugging Face Hub (or its cache, offline) with the real ``huggingface_hub``.

Only the safetensors weights and the small text files of a repo are fetched; a repo that holds
pickle weights instead is refused with a message that says why.

Example:

```py
>>> from hf_unlearn.hub.download import download_adapter
>>> folder = download_adapter("me/resnet-fashion-wf", revision="main")
>>> sorted(p.name for p in folder.iterdir())[:2]
['README.md', 'adapter_config.json']
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from peft.utils.constants import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME

__all__ = ["ADAPTER_PATTERNS", "PICKLE_SUFFIXES", "download_adapter", "remote_pickles"]

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
    if not (folder / SAFETENSORS_WEIGHTS_NAME).is_file():
        pickles = remote_pickles(repo_id, revision=revision, token=token)
        if pickles:
            raise ValueError(
                f"Hub repo {repo_id!r} holds pickle weights ({', '.join(pickles)}) instead of "
                f"{SAFETENSORS_WEIGHTS_NAME}. hf_unlearn never unpickles files (loading a pickle can run "
                "arbitrary code): ask the owner to upload safetensors."
            )
        raise FileNotFoundError(
            f"Hub repo {repo_id!r} has no {SAFETENSORS_WEIGHTS_NAME}: it is not an hf_unlearn adapter."
        )
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"Hub repo {repo_id!r} has no {CONFIG_NAME}: it is not an hf_unlearn adapter.")
    return folder


def remote_pickles(repo_id: str, *, revision=None, token=None) -> list[str]:
    """Names of pickle files in a Hub repo (empty when the Hub cannot be asked, e.g. offline).

    Example:

    ```py
    >>> remote_pickles("me/old-adapter")
    ['adapter_model.bin']
    ```
    """
    try:
        files = HfApi(token=token).list_repo_files(repo_id, revision=revision)
    except Exception:  # offline or unreachable: the caller still reports the missing safetensors
        return []
    return sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
