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
