"""What ganflow imports directly, pyproject.toml declares (issue 18): a package that only arrives
through another's extras (pyarrow through Ray's) can vanish with that package's next release."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> set:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [d for extra in project["optional-dependencies"].values() for d in extra]
    return {re.split(r"[\[<>=!~ ;]", s, maxsplit=1)[0].lower().replace("_", "-") for s in specs}


def _imported_top_level() -> set:
    names = set()
    for path in (ROOT / "ganflow").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"ganflow", "__future__"}


def test_every_package_ganflow_imports_is_declared():
    dists = packages_distributions()
    missing = {}
    for module in sorted(_imported_top_level()):
        providers = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not providers & _declared():
            missing[module] = sorted(providers)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
