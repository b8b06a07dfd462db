"""The package's shape, checked from its source: imports follow the flow, and no cycle comes back.

Layers, lowest first; a module may import from its own layer or a lower one, never a higher one
(function-level imports count too: a lazy import that reaches back is still a dependency).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [
    {"attn_bench.errors", "attn_bench.io", "attn_bench.precision", "attn_bench.tables", "attn_bench.devices"},
    {"attn_bench.config"},
    {"attn_bench.rundir"},
    {"attn_bench.attention"},
    {"attn_bench.models", "attn_bench"},  # the package root re-exports build_model
    {"attn_bench.data"},
    {"attn_bench.training"},
    {"attn_bench.metrics"},
    {"attn_bench.sweeps"},
    {"attn_bench.commands"},
    {"attn_bench.cli", "attn_bench.__main__", "hydra_plugins.attn_bench_launcher"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    files = [*ROOT.joinpath("attn_bench").rglob("*.py"), *ROOT.joinpath("hydra_plugins").rglob("*.py")]
    return {module_name(p): p for p in files}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Our modules that ``path`` imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name in known}


def layer_of(name: str) -> int:
    """The layer of the longest layer prefix that ``name`` falls under."""
    best, best_len = None, -1
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{name} is in no layer: add it to LAYERS"
    return best


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, set(mods)) - {name} for name, path in mods.items()}


def test_every_module_is_in_a_layer():
    for name in graph():
        layer_of(name)


def test_no_import_reaches_back_against_the_flow():
    backwards = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                 for a, targets in graph().items() for b in sorted(targets) if layer_of(b) > layer_of(a)]
    assert not backwards, "\n".join(backwards)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return None


def test_no_import_cycle():
    # The package root and a package's __init__ import their own submodules by design; a cycle
    # through them is a re-export, not a dependency.
    edges = {a: {b for b in targets if not a.startswith(b + ".")} for a, targets in graph().items()}
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


@pytest.mark.parametrize("edges, has_cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
])
def test_the_cycle_finder_finds_cycles(edges, has_cycle):
    assert (find_cycle(edges) is not None) == has_cycle


def test_the_layer_check_would_catch_a_backward_import(tmp_path):
    """The check is not vacuous: config importing the launcher (the cycle this test exists for) is caught."""
    fake = tmp_path / "config.py"
    fake.write_text("from hydra_plugins.attn_bench_launcher.gpu_queue import GpuQueueLauncher\n")
    targets = imports_of(fake, set(modules()))
    assert layer_of("attn_bench.config") < max(layer_of(t) for t in targets)


def test_every_package_is_installed_by_pyproject():
    """pyproject.toml lists packages explicitly (the configs install as attn_bench.configs): a new
    folder missing there would work in an editable install and vanish from a regular one."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {module_name(p.parent / "__init__.py") for p in ROOT.joinpath("attn_bench").rglob("__init__.py")}
    on_disk |= {"hydra_plugins.attn_bench_launcher"}
    assert on_disk - {"attn_bench.configs"} <= listed


def name_comparisons_with_the_baseline(path: Path) -> list[str]:
    """``x == "none"`` / ``x != BASELINE`` (and ``in`` tests) in ``path``: where a block name is tested."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            names = [o for o in operands if (isinstance(o, ast.Constant) and o.value == "none")
                     or (isinstance(o, ast.Name) and o.id == "BASELINE")]
            if names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_only_the_registry_tests_whether_a_block_is_the_baseline():
    """The baseline is a registered block (attention/baseline.py); everything else asks ``is_baseline``."""
    found = [hit for name, path in modules().items() if name != "attn_bench.attention.registry"
             for hit in name_comparisons_with_the_baseline(path)]
    assert not found, "\n".join(found)
    sample = ROOT / "attn_bench" / "attention" / "registry.py"
    assert name_comparisons_with_the_baseline(sample), "the check finds the registry's own comparison"
