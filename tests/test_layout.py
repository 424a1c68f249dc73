"""The package's structure: no import cycles, no private names imported across modules, and the
codec backends laid out as parallel packages.

Imports are read from the source with ``ast`` (module level and inside functions alike: a
function-local import is still a dependency, only a later one; ``if TYPE_CHECKING:`` blocks,
which never run, are skipped), so the test sees the graph a reader sees, without importing
anything.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import pytest

import mlxquant

ROOT = Path(mlxquant.__file__).parent


def _modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file (packages map to their __init__.py)."""
    mods = {"mlxquant": ROOT / "__init__.py"}
    for info in pkgutil.walk_packages([str(ROOT)], prefix="mlxquant."):
        base = ROOT.joinpath(*info.name.split(".")[1:])
        mods[info.name] = base / "__init__.py" if info.ispkg else base.with_suffix(".py")
    return mods


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    is_pkg = MODULES[module].name == "__init__.py"
    parts = module.split(".")
    base = parts if is_pkg else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in ``module`` that
    reaches into mlxquant. ``from pkg import sub`` names the submodule when ``sub`` is one."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    for node in ast.walk(tree):  # drop the bodies of `if TYPE_CHECKING:` (never executed)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "mlxquant"]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target.split(".")[0] != "mlxquant":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.append((sub, None, node.lineno) if sub in MODULES else (target, a.name, node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _, _ in _imports(m):
            # "import a.b.c" depends on a.b.c (its parents' __init__ run too, but they are the
            # package's structure, not a dependency the importing module chose)
            if target in MODULES and target != m:
                graph[m].add(target)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None (iterative DFS, sorted for stable output)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def test_the_walk_sees_the_package():
    """The walker finds the modules and the edges it is meant to check (else the tests below
    pass vacuously)."""
    assert {"mlxquant.convert.api", "mlxquant.quant.numpy.legacy", "mlxquant.quant.jit.legacy",
            "mlxquant.quant.mlx.legacy", "mlxquant.cli"} <= set(MODULES)
    graph = _graph()
    assert "mlxquant.convert.plan" in graph["mlxquant.convert.hf_to_gguf"]
    assert "mlxquant.quant.codec" in graph["mlxquant.quant.numpy.legacy"]


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_private_names_across_modules():
    bad = []
    for m in sorted(MODULES):
        for target, name, line in _imports(m):
            if name is not None and name.startswith("_") and not name.startswith("__") and target != m:
                bad.append(f"{MODULES[m].relative_to(ROOT.parent)}:{line}: {name} from {target}")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


FAMILIES = {"floats", "legacy", "kquants_affine", "kquants_symmetric", "iquants", "ternary", "fp4",
            "numeric", "search_scale", "search_scale_min", "codecs"}


@pytest.mark.parametrize("backend", ["numpy", "jit", "mlx"])
def test_codec_backends_are_parallel_packages(backend):
    files = {p.stem for p in (ROOT / "quant" / backend).glob("*.py")} - {"__init__"}
    assert FAMILIES <= files, f"quant/{backend} lacks {sorted(FAMILIES - files)}"
    top = {p.stem for p in (ROOT / "quant").glob("*.py")}
    assert not (top & (FAMILIES - {"codecs"})), f"codec modules left at quant/: {sorted(top & FAMILIES)}"


def test_conversion_is_one_package():
    loose = {"convert", "convert_mlx", "to_mlx", "mlx_to_gguf", "mlx_sources", "mlx_records"}
    assert not loose & {p.stem for p in ROOT.glob("*.py")}
    routes = {"hf_to_gguf", "gguf_to_gguf", "gguf_to_hf", "to_mlx", "mlx_to_gguf", "mlx_to_hf"}
    assert routes <= {p.stem for p in (ROOT / "convert").glob("*.py")}
