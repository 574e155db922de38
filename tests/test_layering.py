"""The layering rules: the library imports no pytest and no plugin module; the plugin imports no torch at load;
modules stay small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_LIBRARY = ("pytest", "_pytest", "xdist", "pytest_benchmark", "pytest_crossover", "execnet")
# Modules allowed past ~400 lines, and why.
LONG_MODULES: dict[str, str] = {
    "benchmarks/perf.py": "a benchmark script: its measuring helpers and the sections of its report, run as a script",
}
PACKAGES = ("harness", "pytest_crossover", "benchmarks")
FUNCTION_LINES = 60
# Functions allowed past FUNCTION_LINES, and why.
LONG_FUNCTIONS: dict[str, str] = {
    "pytest_crossover/option_table.py:option_table": "a declaration: one entry per option, nothing to split",
    "harness/inputs/train_parents.py:train_parent": "the parents' training script, one algorithm read top to bottom",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_library_imports_no_pytest_and_no_plugin_module() -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & set(FORBIDDEN_IN_LIBRARY))
                 for p in (ROOT / "harness").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_plugin_and_the_options_import_no_torch_at_load() -> None:
    code = ("import sys, pytest_crossover.plugin, pytest_crossover.options, pytest_crossover.history, "
            "pytest_crossover.scheduling, pytest_crossover.xdist_hooks, pytest_crossover.transfer, "
            "pytest_crossover.gateway_server, harness.search.space, harness.inputs.load; "
            "heavy = sorted(m for m in ('torch', 'gymnasium', 'matplotlib', 'scipy') if m in sys.modules); "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stderr


def test_loading_the_plugin_imports_not_even_numpy() -> None:
    """What every pytest run in an environment with the plugin pays: ~10 ms, not numpy's ~100-200 ms."""
    code = ("import sys, pytest_crossover.plugin; "
            "print(sorted(m for m in ('numpy', 'torch', 'scipy', 'execnet') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stderr


def test_modules_stay_small() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for d in PACKAGES for p in (ROOT / d).rglob("*.py")}
    assert {k: n for k, n in sizes.items() if n > 400 and k not in LONG_MODULES} == {}


def test_functions_stay_short() -> None:
    long = {}
    for d in PACKAGES:
        for p in (ROOT / d).rglob("*.py"):
            for node in ast.walk(ast.parse(p.read_text(), filename=str(p))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    name = f"{p.relative_to(ROOT)}:{node.name}"
                    if lines > FUNCTION_LINES + 1 and name not in LONG_FUNCTIONS:
                        long[name] = lines
    assert long == {}


def test_benchmarks_use_the_library_and_the_plugin_as_a_user_would() -> None:
    """The benchmarks import the public packages, never a test module, and nothing in the packages imports them."""
    for p in (ROOT / "benchmarks").rglob("*.py"):
        assert "tests" not in _imports(p), p
    for d in ("harness", "pytest_crossover"):
        for p in (ROOT / d).rglob("*.py"):
            assert not _imports(p) & {"benchmarks", "levers", "sessions", "perf", "scaling"}, p


def test_the_release_is_the_same_in_pyproject_and_the_package() -> None:
    import tomllib

    from harness.core.version import __version__

    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == __version__
