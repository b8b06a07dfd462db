"""Atomic file writes: a reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


from attn_bench.errors import ConfigError


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in chunks (a pretrained weights file may be large)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Write failures that are the machine's state, not a bug: one line naming the path, never a traceback.
USER_FIXABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}


def _atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> Path:
    path = Path(path)
    try:
        return _write_then_replace(path, write, mode)
    except OSError as err:
        if err.errno in USER_FIXABLE:
            raise ConfigError(f"cannot write '{path}': {err.strerror or err}") from None
        raise


def _permissions(path: Path) -> int:
    """The mode ``open()`` would leave: the file's own if it exists, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without setting it (os.umask sets it; another thread, e.g. TensorBoard's
    writer, could create a file in between): Linux reports it in /proc/self/status."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o077)  # elsewhere: the briefest window, and never more open than 0600
    os.umask(umask)
    return umask


def _write_then_replace(path: Path, write: Callable[[Any], None], mode: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _permissions(path))  # mkstemp's 0600 would hide results from the group
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_with(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = True) -> Path:
    """Atomically write whatever ``write(handle)`` puts into an open file (e.g. a matplotlib figure)."""
    return _atomic_write(path, write, "wb" if binary else "w")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return _atomic_write(path, lambda f: f.write(text), "w")


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    # Serialised in memory first: torch's zip writer turns a full disk into "unexpected pos"; a plain
    # write raises the OSError (ENOSPC) that names the cause.
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return _atomic_write(path, lambda f: f.write(buffer.getbuffer()), "wb")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as handle:
        return json.load(handle)
