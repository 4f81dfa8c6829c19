"""Getting adapters from and to the Hugging Face Hub with the real ``huggingface_hub`` client."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

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

    from .adapter import ADAPTER_CONFIG, ADAPTER_WEIGHTS

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
