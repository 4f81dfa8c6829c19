"""Checkpoints of an untraining round: what a killed run resumes from, exactly.

A checkpoint is a ``checkpoint-<step>`` folder holding accelerate's state (filters, optimiser,
scheduler, RNG states), the convergence tracker's state when the round has one, and ``progress.json``
written LAST: a folder without a readable ``progress.json`` was torn by a kill and is skipped. The
stored configuration hash refuses a resume that would mix two different runs::

    from hf_unlearn.training.checkpoint import find_checkpoint

    checkpoint = find_checkpoint("runs/wf/checkpoints", "latest")   # the newest complete one
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from ..files import atomic_write_text

PROGRESS_FILENAME = "progress.json"
TRACKER_FILENAME = "convergence.json"

# Fields that change how a run is watched or chunked, not what it computes: a resumed run may change them.
RUN_CONTROL_FIELDS = ("progress", "log_every", "checkpoint_every")


def config_hash(values) -> str:
    """A short, stable hash of a run's configuration (a dataclass like ``UntrainingArguments`` or a dict).

    Example:

    ```py
    >>> config_hash(UntrainingArguments(epochs=3)) == config_hash(UntrainingArguments(epochs=3))
    True
    ```
    """
    if not isinstance(values, dict):
        values = asdict(values)
    values = {k: v for k, v in values.items() if k not in RUN_CONTROL_FIELDS}
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_checkpoint(accelerator, output_dir: str, step: int, run_config_hash: Optional[str] = None,
                    tracker=None) -> Path:
    """Save ``checkpoint-<step>`` under ``output_dir`` (every rank calls it); returns the folder."""
    path = Path(output_dir) / f"checkpoint-{step}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        if tracker is not None:  # before progress.json marks the folder complete
            atomic_write_text(path / TRACKER_FILENAME, json.dumps(tracker.state_dict(), default=float))
        # progress.json marks the checkpoint complete: written last, and atomically (a kill while
        # writing it must not leave an empty file that makes the checkpoint look complete).
        atomic_write_text(path / PROGRESS_FILENAME, json.dumps({"completed_steps": step,
                                                                "config_hash": run_config_hash}))
    accelerator.wait_for_everyone()
    return path


def read_progress(checkpoint: Path) -> Optional[dict]:
    """The checkpoint's ``progress.json``, or None when it is missing or torn (the save was killed)."""
    try:
        progress = json.loads((Path(checkpoint) / PROGRESS_FILENAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(progress, dict) or not isinstance(progress.get("completed_steps"), int):
        return None
    return progress


def check_same_run(checkpoint: Path, progress: dict, run_config_hash: Optional[str]) -> None:
    """Refuse a checkpoint whose stored configuration hash is not this run's."""
    stored = progress.get("config_hash")
    if run_config_hash and stored and stored != run_config_hash:
        raise ValueError(
            f"{checkpoint} belongs to a run with another configuration (config hash {stored}, this run "
            f"{run_config_hash}): resuming would mix two runs. Resume with the same options, or start "
            "afresh in a new --output_dir (or with --overwrite_output_dir)."
        )


def find_checkpoint(output_dir: Optional[str], resume_from: str, run_config_hash: Optional[str] = None) -> Path:
    """The checkpoint folder to resume from: ``resume_from`` itself, or with ``"latest"`` the newest
    complete ``checkpoint-*`` in ``output_dir`` (a torn one falls back to the one before).

    Raises ``FileNotFoundError`` when there is none and ``ValueError`` when it belongs to another run.
    """
    if resume_from != "latest":
        path = Path(resume_from)
        progress = read_progress(path)
        if progress is None:
            raise FileNotFoundError(f"{path} is not a complete untraining checkpoint (no readable progress.json).")
        check_same_run(path, progress, run_config_hash)
        return path
    if not output_dir:
        raise ValueError("resume_from='latest' needs output_dir.")
    candidates = sorted(
        (p for p in Path(output_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]), reverse=True,
    )
    for path in candidates:  # newest first; a torn one (killed mid-save) falls back to the previous
        progress = read_progress(path)
        if progress is not None:
            check_same_run(path, progress, run_config_hash)
            return path
    raise FileNotFoundError(f"No complete checkpoint-* folder in {output_dir} to resume from.")


def load_checkpoint(accelerator, checkpoint: Path, tracker=None) -> int:
    """Restore accelerate's state (and the tracker's) from ``checkpoint``; returns its completed steps."""
    accelerator.load_state(str(checkpoint))
    tracker_file = Path(checkpoint) / TRACKER_FILENAME
    if tracker is not None and tracker_file.is_file():
        tracker.load_state_dict(json.loads(tracker_file.read_text()))
    return read_progress(checkpoint)["completed_steps"]
