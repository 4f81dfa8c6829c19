"""The one way this package writes a file that others read: atomically.

A reader (another process, a resumed run, a crash) sees the old file or the new one, never a torn
one: the text goes to a temporary sibling, is flushed, gets the usual ``0666 & ~umask`` mode (mkstemp
creates 0600) and replaces the target with ``os.replace``.

    from hf_unlearn.files import atomic_write_json, atomic_write_text

    atomic_write_json("runs/x/metrics.json", {"forget_accuracy": 0.0})
    atomic_write_text("runs/x/report.md", "# Report\n")
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary sibling of ``path``, then move it into place.

    Example (any writer that takes a path, e.g. ``safetensors.torch.save_file``)::

        atomic_write("out/tensors.safetensors", lambda tmp: save_file(tensors, str(tmp)))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # a result file is shared like any other written file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write(path, write)


def atomic_write_json(path: PathLike, obj: Any, *, indent: int = 2, sort_keys: bool = False) -> Path:
    """Write ``obj`` as JSON (strict: NaN/inf are an error) to ``path`` atomically; returns the path."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n")
