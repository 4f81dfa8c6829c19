"""The one atomic writer: whole files or none, readable modes, nothing left behind on failure."""

import json
import os
import stat

import pytest

from hf_unlearn.files import atomic_write, atomic_write_json, atomic_write_text


def test_writes_replace_whole_files_with_shared_mode(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "report.md", "old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    with pytest.raises(ValueError):
        atomic_write_json(target, {"x": float("nan")})
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
