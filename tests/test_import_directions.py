"""The import directions of the layout (docs/DESIGN.md), read statically from every .py file with ast.

config -> datasets / networks -> algorithm (reco/, reco_plus/) -> outputs; utils/ imports nothing of the
project; image_index/ only utils/; the library (reco_api/) never imports the program (entry/), which
only main_reco.py, main_reco_plus.py and the tests import; main_reco.py and main_reco_plus.py meet only
through files (the pseudo-masks), so neither stage's import closure reaches the other stage's code; no
module imports itself through others (no cycles). Imports inside functions count too: a deferred import
is still a dependency.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("datasets", "networks", "reco", "reco_plus", "entry", "image_index", "reco_api", "utils", "demo",
            "benchmarks", "tests")
SCRIPTS = ("main_reco", "main_reco_plus")
PROJECT = PACKAGES + SCRIPTS


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=None)
def project_files() -> dict[str, Path]:
    """module name -> file, for every .py file of the project (virtual environments and caches left out)."""
    files = {}
    for top in PROJECT:
        if (REPO / f"{top}.py").is_file():
            files[top] = REPO / f"{top}.py"
        elif (REPO / top).is_dir():
            for path in sorted((REPO / top).rglob("*.py")):
                if not any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(REPO).parts):
                    files[_module_name(path)] = path
    return files


@lru_cache(maxsize=None)
def imports_of(module: str) -> frozenset[str]:
    """Absolute names of everything `module` imports (relative imports resolved; `from pkg import mod`
    counts as pkg.mod when that is a module of the project)."""
    path = project_files()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(p for p in base_parts + ([node.module] if node.module else []) if p)
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names
                         if f"{base}.{alias.name}" in project_files())
    return frozenset(names)


def project_imports_of(module: str) -> set[str]:
    return {name for name in imports_of(module) if name.split(".")[0] in PROJECT}


def closure(module: str) -> set[str]:
    """`module` and every project module it reaches through imports (a package import runs its __init__)."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen or current not in project_files():
            continue
        seen.add(current)
        for name in project_imports_of(current):
            parts = name.split(".")
            todo += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return seen


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _modules_under(*tops: str) -> list[str]:
    return [m for m in project_files() if _in(m, tops)]


# (rule id, importing packages, forbidden import prefixes (project or third-party))
FORBIDDEN = [
    ("algorithm_is_pure", ("reco", "reco_plus"),
     ("datasets", "networks", "entry", "image_index", "reco_api", "benchmarks", "tests", *SCRIPTS, "matplotlib",
      "utils.config", "utils.visualise")),
    ("utils_import_no_project_code", ("utils",), tuple(p for p in PROJECT if p != "utils")),
    ("image_index_only_needs_utils", ("image_index",), tuple(p for p in PROJECT if p not in ("utils", "image_index"))
     + ("utils.config",)),
    ("readers_and_models_are_upstream", ("datasets", "networks"),
     ("reco", "reco_plus", "entry", "image_index", "reco_api", "demo", "benchmarks", "tests", *SCRIPTS)),
    ("library_code_never_imports_tests_or_benchmarks", ("entry", "reco_api", "demo", *SCRIPTS), ("tests", "benchmarks")),
    # the synthetic world and its colour-coded models: data and networks only, run by the program's --demo
    ("demo_world_is_upstream_of_the_pipeline", ("demo",),
     ("reco_plus", "entry", "image_index", "reco_api", "benchmarks", "tests", *SCRIPTS)),
]

# The program (entry/) is imported by the entry scripts and the tests only.
PROGRAM_IMPORTERS = ("entry", "tests", *SCRIPTS)
PROGRAM_EXCEPTIONS: set[tuple[str, str]] = set()


def test_only_the_entry_scripts_and_tests_import_the_program():
    bad = [f"{m} imports {name}" for m in project_files() if not _in(m, PROGRAM_IMPORTERS)
           for name in sorted(project_imports_of(m)) if _in(name, ("entry",))
           and (m, name) not in PROGRAM_EXCEPTIONS]
    assert not bad, "only main_reco.py, main_reco_plus.py and the tests import entry/:\n" + "\n".join(bad)


def module_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports. An import of a package's __init__ is left out: it only hands
    names on, and a module that imports its own package's face is not a loop of code."""
    packages = {m for m, path in project_files().items() if path.name == "__init__.py"}
    return {m: {n for n in project_imports_of(m) if n in project_files() and n not in packages and n != m}
            for m in project_files() if m not in packages and not _in(m, ("tests",))}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_loop():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_through_others():
    found = cycles(module_graph())
    assert not found, "modules that import each other (a loop):\n" + "\n".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("importers, forbidden", [(r[1], r[2]) for r in FORBIDDEN], ids=[r[0] for r in FORBIDDEN])
def test_no_forbidden_import(importers, forbidden):
    modules = _modules_under(*importers)
    assert modules, f"no modules found under {importers}"
    bad = [f"{m} imports {name}" for m in modules for name in sorted(imports_of(m)) if _in(name, forbidden)]
    assert not bad, "forbidden import direction:\n" + "\n".join(bad)


# The two stages meet only through files: each stage's import closure stays out of the other's code.
RECO_STAGE_ONLY = ("main_reco", "entry.reco_benchmark", "entry.evaluation_loop", "entry.run_dirs",
                   "entry.reco_index", "entry.reco_ovss", "entry.reco_own_images", "entry.reco_demo", "reco_api",
                   "reco", "image_index", "demo")
RECO_PLUS_STAGE_ONLY = ("main_reco_plus", "entry.reco_plus", "entry.reco_plus_eval", "reco_plus")


@pytest.mark.parametrize("script, other_stage", [("main_reco_plus", RECO_STAGE_ONLY),
                                                 ("main_reco", RECO_PLUS_STAGE_ONLY)],
                         ids=["reco_plus_stage_reaches_no_reco_code", "reco_stage_reaches_no_reco_plus_code"])
def test_stages_meet_only_through_files(script, other_stage):
    reached = closure(script)
    assert len(reached) > 3, reached  # the walk itself works
    bad = sorted(m for m in reached if _in(m, other_stage))
    assert not bad, f"{script} reaches the other stage's modules: {bad}"


def test_the_walker_sees_deferred_and_relative_imports():
    """Guard against a walker that silently finds nothing (which would make every rule pass)."""
    assert "entry.reco_demo" in imports_of("main_reco")  # an import inside a function
    assert "utils.permutohedral" in imports_of("utils.crf")  # a relative import
    assert "entry.reco_plus" in closure("main_reco_plus") and "reco_plus.trainer" in closure("main_reco_plus")
    assert len(project_files()) > 50


def test_every_python_file_parses():
    for module, path in project_files().items():
        ast.parse(path.read_text(), filename=str(path))
