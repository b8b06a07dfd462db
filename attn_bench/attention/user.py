"""Blocks from outside the package: ``path/to/file.py:Class``, ``package.module:Class``, and blocks
that installed packages register under the ``attn_bench.blocks`` entry-point group (name ->
``module:Class``).

Loading such a block imports, and so executes, the code it names, as any Python import does.

A block is identified by its source: the SHA-256 of the file that defines it (for ``module:Class``,
the module's own file). A run records it, a changed file makes a new run, and the report keeps rows
of different sources apart (``SRMGate@3f2a9c``). Built-in blocks are identified by attn-bench's
version, which every run records.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from attn_bench.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

ENTRY_POINT_GROUP = "attn_bench.blocks"
_MODULE_PREFIX = "attn_bench_user_blocks"
SHORT_HASH = 6  # hex digits of the source hash shown in labels and directory names

log = logging.getLogger("attn_bench")


def hash_tag(digest: str) -> str:
    """``@3f2a9c``: how a source hash appears in directory names, row labels and HParams."""
    return f"@{digest[:SHORT_HASH]}"


def is_spec(name: str) -> bool:
    """``file.py:Class`` or ``module:Class`` rather than a registered name."""
    return ":" in str(name)


def plugin_blocks() -> dict[str, str]:
    """Installed plug-in blocks: entry-point name -> ``module:Class``."""
    return {ep.name: f"{ep.module}:{ep.attr}" for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _split(spec: str) -> tuple[str, str]:
    where, _, class_name = str(spec).rpartition(":")
    if not where or not all(part.isidentifier() for part in class_name.split(".")):
        raise ConfigError(f"model.attn='{spec}': expected path/to/file.py:ClassName or package.module:ClassName")
    return where, class_name


def is_file_spec(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def _file_path(where: str, spec: str) -> Path:
    path = Path(where).expanduser()
    resolved = path if path.is_absolute() else Path.cwd() / path
    if not resolved.is_file():
        raise ConfigError(f"model.attn='{spec}': file '{resolved}' not found (relative paths start at the "
                          f"working directory, {Path.cwd()})")
    return resolved.resolve()


def _module_file(module: str, spec: str) -> Path | None:
    """The file of ``module`` without importing it (its parent packages are imported to find it)."""
    try:
        found = importlib.util.find_spec(module)  # imports the parent packages
    except (ImportError, ValueError) as err:
        raise ConfigError(f"model.attn='{spec}': cannot import '{module}' ({err}); is it installed or on "
                          f"PYTHONPATH?") from None
    except Exception as err:  # a parent package's own code failed: show its line
        raise ConfigError(f"model.attn='{spec}': importing it failed at {_error_in(None, err)}") from None
    if found is None:
        raise ConfigError(f"model.attn='{spec}': no module named '{module}'; is it installed or on PYTHONPATH? "
                          f"(a file is written as path/to/file.py:ClassName)")
    return Path(found.origin) if found.origin and Path(found.origin).is_file() else None


def _error_in(path: Path | None, err: BaseException) -> str:
    """``file:line: Type: message`` at the deepest frame inside the user's file (their code, their line)."""
    frames = traceback.extract_tb(err.__traceback__)
    inside = [f for f in frames if path is not None and Path(f.filename).resolve() == path] or frames[-1:]
    where = f"{inside[-1].filename}:{inside[-1].lineno}: " if inside else ""
    return f"{where}{type(err).__name__}: {err}"


def error_in_file(path: Path, err: BaseException) -> str | None:
    """``file:line: Type: message`` when ``err`` was raised inside ``path`` (a user's block failing in
    forward or backward), else None."""
    path = path.resolve()
    if not any(Path(f.filename).resolve() == path for f in traceback.extract_tb(err.__traceback__)):
        return None
    return _error_in(path, err)


_VOUCHED: dict[Path, str] = {}  # file -> the only SHA-256 it may be run with (a recorded run's block)


@contextmanager
def only_vouched(path: Path, sha256: str):
    """While inside, ``path`` is run only if its bytes have ``sha256``; other bytes are refused before any
    of them runs (``eval`` / ``visualize`` of a recorded run)."""
    path = Path(path).resolve()
    _VOUCHED[path] = sha256
    try:
        yield
    finally:
        _VOUCHED.pop(path, None)


def _exec_file(path: Path, spec: str) -> ModuleType:
    """Run the file's exact bytes that were hashed (``__attn_bench_sha256__``): an edit while a run
    starts can never train one version under another's hash."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    vouched = _VOUCHED.get(path.resolve())
    if vouched is not None and vouched != digest:
        raise ConfigError(f"model.attn='{spec}': {path} has sha256 {digest[:12]} now, the run recorded "
                          f"{vouched[:12]}; it was not run")
    # an edited file is a new module; the same bytes at another path too, so the record names the file given
    where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    name = f"{_MODULE_PREFIX}.{path.stem.replace('.', '_')}_{digest[:12]}_{where}"
    if name in sys.modules:
        return sys.modules[name]
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, path))
    module.__attn_bench_sha256__ = digest
    try:
        code = compile(data, str(path), "exec")
        sys.modules[name] = module  # dataclasses and pickling look the module up while it runs
        exec(code, module.__dict__)
    except SyntaxError as err:
        sys.modules.pop(name, None)
        raise ConfigError(f"model.attn='{spec}': {err.filename}:{err.lineno}: syntax error: {err.msg}") from None
    except Exception as err:  # the user's own code failed: show their line
        sys.modules.pop(name, None)
        raise ConfigError(f"model.attn='{spec}': importing it failed at {_error_in(path, err)}") from None
    return module


def class_source(cls: type) -> tuple[Path | None, str | None]:
    """The file that defines ``cls`` and the SHA-256 of its source: for a ``file.py:Class`` block the
    bytes that ran; otherwise the defining module's file as it is now (``inspect.getsourcefile``), so
    a class re-exported by a package's ``__init__`` is identified by the file it is written in.
    Files the block imports from are not hashed."""
    module = sys.modules.get(cls.__module__)
    digest = getattr(module, "__attn_bench_sha256__", None)
    if digest is not None:
        return Path(module.__file__), digest
    try:
        path = Path(inspect.getsourcefile(cls) or "")
    except TypeError:  # a built-in or C extension class: no source file
        return None, None
    if not path.is_file():
        return None, None
    return path.resolve(), hashlib.sha256(path.read_bytes()).hexdigest()


def _import_module(module: str, spec: str) -> ModuleType:
    path = _module_file(module, spec)
    try:
        return importlib.import_module(module)
    except SyntaxError as err:
        raise ConfigError(f"model.attn='{spec}': {err.filename}:{err.lineno}: syntax error: {err.msg}") from None
    except Exception as err:
        raise ConfigError(f"model.attn='{spec}': importing it failed at {_error_in(path, err)}") from None


def _module_blocks(module: ModuleType) -> list[str]:
    from torch import nn

    return sorted(name for name, value in vars(module).items()
                  if inspect.isclass(value) and issubclass(value, nn.Module) and value.__module__ == module.__name__)


def load_class(spec: str) -> type[nn.Module]:
    """The class a ``file.py:Class`` or ``module:Class`` spec names, or a one-line ConfigError."""
    from torch import nn

    where, class_name = _split(spec)
    module = _exec_file(_file_path(where, spec), spec) if is_file_spec(where) else _import_module(where, spec)
    cls = module
    for part in class_name.split("."):  # Outer.Inner, as entry points may name it
        cls = getattr(cls, part, None)
    if cls is None:
        candidates = ", ".join(_module_blocks(module)) or "none"
        raise ConfigError(f"model.attn='{spec}': no class '{class_name}' in {where}; nn.Module classes defined "
                          f"there: {candidates}")
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise ConfigError(f"model.attn='{spec}': '{class_name}' is not a torch.nn.Module subclass "
                          f"(it is {type(cls).__name__} {cls!r})"[:300])
    return cls
