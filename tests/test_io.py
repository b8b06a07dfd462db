"""Atomic writes: a reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import pytest

from attn_bench.io import atomic_write_text, atomic_write_with


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write_text(tmp_path / "metrics.json", "old")

    def half_then_crash(handle):
        handle.write(b"new but trunc")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        atomic_write_with(path, half_then_crash)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_written_files_are_as_readable_as_open_would_make_them(tmp_path):
    """Not mkstemp's 0600: colleagues on a shared server read reports through the group (umask 027 here)."""
    import os

    from attn_bench.io import atomic_write_json, atomic_write_text

    previous = os.umask(0o027)
    try:
        new = atomic_write_json(tmp_path / "metrics.json", {"top1": 1.0})
        assert new.stat().st_mode & 0o777 == 0o640
        kept = tmp_path / "private.md"
        kept.write_text("old")
        kept.chmod(0o600)
        atomic_write_text(kept, "new")  # an existing file keeps its own mode, as an edit in place would
        assert kept.stat().st_mode & 0o777 == 0o600 and kept.read_text() == "new"
    finally:
        os.umask(previous)
