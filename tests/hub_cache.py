"""Test helper: a local folder laid into a Hugging Face Hub cache, for tests that load Hub ids offline.

`lay_out_hub_cache` puts a local folder into a Hugging Face Hub cache exactly the way
`huggingface_hub` stores a downloaded repo, so that with `HF_HUB_OFFLINE=1` the repo id resolves
from the cache (tests/ is on `sys.path`, see conftest.py):

    from hub_cache import lay_out_hub_cache

    model.save_pretrained("tiny-vit")
    lay_out_hub_cache(tmp_path / "hf_home", "test-org/tiny-vit", "tiny-vit")
    # in a process started with HF_HOME=<tmp_path/hf_home> HF_HUB_OFFLINE=1:
    AutoModelForImageClassification.from_pretrained("test-org/tiny-vit")

Only the standard library is used.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

__all__ = ["lay_out_hub_cache", "git_blob_sha1", "is_lfs_file"]

# The Hub stores these patterns (its default .gitattributes) and files of 10 MiB or more, or with
# binary content, through LFS. For an LFS file the cache blob is named by the sha256 of the
# content; for any other file by its git blob sha1 (the ETag the Hub answers for it).
_LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "*.tar.*", "*.tar", "*.tflite",
    "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
)
_LFS_THRESHOLD = 10 * 1024 * 1024
_REPO_TYPES = ("model", "dataset", "space")
_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")


def git_blob_sha1(content: bytes) -> str:
    """Git blob id of `content`: sha1 of `b"blob <size>\\0" + content`."""
    h = hashlib.sha1()
    h.update(b"blob %d\0" % len(content))
    h.update(content)
    return h.hexdigest()


def is_lfs_file(path_in_repo: str, content: bytes) -> bool:
    """Whether the Hub would store this file through LFS (default rules)."""
    if not content:
        return False
    if len(content) >= _LFS_THRESHOLD or b"\0" in content[:512]:
        return True
    if path_in_repo.startswith("saved_model/"):
        return True
    name = path_in_repo.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in _LFS_PATTERNS)


def _lfs_pointer(sha256_hex: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256_hex}\nsize {size}\n".encode()


def lay_out_hub_cache(
    hf_home: str | os.PathLike,
    repo_id: str,
    folder: str | os.PathLike,
    repo_type: str = "model",
    revision_sha: str | None = None,
    *,
    ref: str = "main",
    symlinks: bool = True,
) -> Path:
    """Lay out `folder` as the cached repo `repo_id` under `$HF_HOME/hub`, as `huggingface_hub` does.

    Writes, for `repo_id="org/name"` and a model repo::

        <hf_home>/hub/models--org--name/
            refs/<ref>                      the commit sha (no newline)
            blobs/<blob id>                 one file per distinct content
            snapshots/<sha>/<path>          relative symlinks into ../../blobs/<blob id>
            trees/<sha>.json                the tree listing newer clients cache next to snapshots

    A blob id is the sha256 of the content for files the Hub keeps in LFS (`*.safetensors`,
    `*.bin`, files of 10 MiB or more, binary files, ...) and the git blob sha1 otherwise, which
    is what a real download would produce. With `HF_HOME=<hf_home>` and `HF_HUB_OFFLINE=1`,
    `huggingface_hub.snapshot_download(repo_id)`, `hf_hub_download(repo_id, file)` and
    `transformers` `from_pretrained(repo_id)` then resolve from the cache. (If `HF_HUB_CACHE` is set
    it wins over `HF_HOME`; pass its parent's layout accordingly, i.e. the cache is `hf_home/hub`.)

    Args:
        hf_home: the HF_HOME directory (created if needed).
        repo_id: `"org/name"` (or `"name"`).
        folder: the local folder to copy; files are taken recursively, `.git/` and
            `.cache/huggingface/` are skipped.
        repo_type: `"model"`, `"dataset"` or `"space"`.
        revision_sha: the 40-hex commit sha to use; default: derived from the content, so the
            same folder always gets the same sha.
        ref: the branch name written under `refs/` (default `"main"`).
        symlinks: make snapshot files relative symlinks into `blobs/` (like huggingface_hub on
            Linux/macOS); with False, or where symlinks fail, files are copied (like on Windows
            without developer mode).

    Returns:
        The snapshot folder `<hf_home>/hub/<repo folder>/snapshots/<sha>`.
    """
    if repo_type not in _REPO_TYPES:
        raise ValueError(f"repo_type must be one of {_REPO_TYPES}, got {repo_type!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"not a folder: {folder}")
    if revision_sha is not None and not _SHA1_RE.match(revision_sha):
        raise ValueError(f"revision_sha must be 40 lower-case hex characters, got {revision_sha!r}")

    files = _repo_files(folder)
    entries, blob_ids = _tree_entries(files)
    if revision_sha is None:
        revision_sha = _content_sha(repo_type, repo_id, entries)
    storage = Path(hf_home) / "hub" / "--".join([f"{repo_type}s", *repo_id.split("/")])
    snapshot = storage / "snapshots" / revision_sha
    for rel, src in files.items():
        blob = _store_blob(storage / "blobs", blob_ids[rel], src)
        _link_snapshot_file(blob, snapshot / rel, symlinks)
    snapshot.mkdir(parents=True, exist_ok=True)  # an empty folder still gets its snapshot

    ref_path = storage / "refs" / ref
    ref_path.parent.mkdir(parents=True, exist_ok=True)
    ref_path.write_text(revision_sha)
    trees = storage / "trees"
    trees.mkdir(exist_ok=True)
    (trees / f"{revision_sha}.json").write_text(
        json.dumps({"format_version": 1, "files": {k: entries[k] for k in sorted(entries)}}, indent=1)
    )
    return snapshot


def _repo_files(folder: Path) -> dict[str, Path]:
    """The files to lay out, by their path in the repo (`.git/` and `.cache/huggingface/` skipped)."""
    files: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if rel.parts[0] == ".git" or rel.parts[:2] == (".cache", "huggingface"):
            continue
        if path.is_file():
            files[rel.as_posix()] = path
    return files


def _tree_entries(files: dict[str, Path]) -> tuple[dict[str, dict], dict[str, str]]:
    """(tree entry, cache blob id) of every file: sha256 names for LFS files, git blob sha1 otherwise."""
    entries: dict[str, dict] = {}
    blob_ids: dict[str, str] = {}
    for rel, path in files.items():
        content = path.read_bytes()
        if is_lfs_file(rel, content):
            sha256 = hashlib.sha256(content).hexdigest()
            blob_ids[rel] = sha256
            entries[rel] = {
                "size": len(content),
                "blob_id": git_blob_sha1(_lfs_pointer(sha256, len(content))),
                "lfs_sha256": sha256,
                "lfs_size": len(content),
            }
        else:
            blob_ids[rel] = git_blob_sha1(content)
            entries[rel] = {"size": len(content), "blob_id": blob_ids[rel]}
    return entries, blob_ids


def _content_sha(repo_type: str, repo_id: str, entries: dict[str, dict]) -> str:
    """A commit sha derived from the content, so that the same folder always gets the same sha."""
    h = hashlib.sha1(f"{repo_type}:{repo_id}\n".encode())
    for rel in sorted(entries):
        h.update(f"{rel}\0{entries[rel]['blob_id']}\n".encode())
    return h.hexdigest()


def _store_blob(blobs_dir: Path, blob_id: str, src: Path) -> Path:
    """Copy ``src`` to ``blobs/<blob_id>`` once (through a temporary name, as huggingface_hub does)."""
    blobs_dir.mkdir(parents=True, exist_ok=True)
    blob = blobs_dir / blob_id
    if not blob.exists():
        tmp = blob.with_name(blob.name + ".incomplete")
        shutil.copyfile(src, tmp)
        os.replace(tmp, blob)
    return blob


def _link_snapshot_file(blob: Path, dst: Path, symlinks: bool) -> None:
    """``dst`` as a relative symlink to ``blob``, or a copy without symlinks (or where they fail)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if symlinks:
        try:
            os.symlink(os.path.relpath(blob, start=dst.parent), dst)
            return
        except OSError:
            pass
    shutil.copyfile(blob, dst)
