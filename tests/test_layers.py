"""The package's floor plan (docs/design.md "Code map"): imports point only down, no module circle, and Ray
only where Ray's plumbing lives.

Every `import` in ganflow/ is read with `ast`, those inside functions too (a lazy import is still
a dependency). A module may import its own package and the layers below its own; packages that
share a layer are independent of each other."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, Set

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ganflow"

# lowest first; docs/design.md's "Code map" describes the same floors
LAYERS = {
    "config": 0,
    "core": 1, "store": 1, "present": 1,
    "data": 2, "models": 2,
    "metrics": 3, "run": 3,
    "job": 4, "tracking": 4,
    "ray": 5,
    "sweep": 6,
    "api": 7,
    "commands": 8,
    "cli": 9,
    "__main__": 10,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Set[str]:
    """The ganflow modules `path` imports, anywhere in it."""
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ganflow")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ganflow") and node.level == 0:
            for a in node.names:  # `from ganflow import data` names a module; `from ganflow.x import f` a member
                candidate = f"{node.module}.{a.name}"
                found.add(candidate if _exists(candidate) else node.module)
    return found


# third-party packages and the ganflow packages that alone may import them
CONFINED = {"ray": {"ray", "sweep", "commands"}}


def _third_party(path: Path) -> Set[str]:
    """The top-level packages other than ganflow that `path` imports, anywhere in it."""
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found - {"ganflow"}


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def _graph() -> Dict[str, Set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _floor(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_every_package_has_a_floor():
    floors = {_floor(m) for m in _graph()} - {""}
    assert floors <= set(LAYERS), f"packages without a floor in LAYERS: {sorted(floors - set(LAYERS))}"


def test_imports_point_only_down():
    upward = []
    for module, imported in _graph().items():
        here = _floor(module)
        for target in imported:
            there = _floor(target)
            if not here or here == there or not there:
                continue
            if LAYERS[there] >= LAYERS[here]:
                upward.append(f"{module} -> {target} ({here}: {LAYERS[here]}, {there}: {LAYERS[there]})")
    assert not upward, "imports that do not point down:\n" + "\n".join(sorted(upward))


def test_ray_is_imported_only_under_ray_sweep_and_commands():
    """core.fit, the GAN step, the data, the run layout: Ray-free, so tests and benchmarks run them as they are."""
    stray = []
    for path in sorted(PACKAGE.rglob("*.py")):
        floor = _floor(_module_name(path))
        stray += [f"{_module_name(path)} imports {pkg}" for pkg in sorted(_third_party(path))
                  if pkg in CONFINED and floor not in CONFINED[pkg]]
    assert not stray, "imports outside their layers:\n" + "\n".join(stray)


def test_no_import_circle():
    full = _graph()
    graph = {m: {t for t in targets if t in full} for m, targets in full.items()}
    state: Dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The rule itself: a config module importing the Ray layer is reported."""
    fake = tmp_path / "ganflow"
    (fake / "config").mkdir(parents=True)
    (fake / "ray").mkdir()
    (fake / "config" / "__init__.py").write_text("def f():\n    from ganflow.ray import driver\n")
    (fake / "ray" / "__init__.py").write_text("")
    (fake / "ray" / "driver.py").write_text("from ganflow.config import f\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError, match="ganflow.config -> ganflow.ray.driver"):
        test_imports_point_only_down()
    with pytest.raises(pytest.fail.Exception, match="import circle"):
        test_no_import_circle()
    (fake / "core").mkdir()
    (fake / "core" / "fit.py").write_text("def f():\n    import ray.train\n")
    with pytest.raises(AssertionError, match="ganflow.core.fit imports ray"):
        test_ray_is_imported_only_under_ray_sweep_and_commands()
