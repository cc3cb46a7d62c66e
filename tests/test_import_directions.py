"""The import directions of the layout (docs/DESIGN.md), read statically from every .py file with ast.

config -> datasets / networks -> algorithm (reco/, reco_plus/) -> outputs; utils/ imports nothing of the
project; image_index/ only utils/; main_reco.py and main_reco_plus.py meet only through files (the
pseudo-masks), so neither stage's import closure reaches the other stage's code. Imports inside
functions count too: a deferred import is still a dependency.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("datasets", "networks", "reco", "reco_plus", "entry", "image_index", "reco_api", "utils",
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
     ("reco", "reco_plus", "entry", "image_index", "reco_api", "benchmarks", "tests", *SCRIPTS)),
    ("library_code_never_imports_tests_or_benchmarks", ("entry", "reco_api", *SCRIPTS), ("tests", "benchmarks")),
]


@pytest.mark.parametrize("importers, forbidden", [(r[1], r[2]) for r in FORBIDDEN], ids=[r[0] for r in FORBIDDEN])
def test_no_forbidden_import(importers, forbidden):
    modules = _modules_under(*importers)
    assert modules, f"no modules found under {importers}"
    bad = [f"{m} imports {name}" for m in modules for name in sorted(imports_of(m)) if _in(name, forbidden)]
    assert not bad, "forbidden import direction:\n" + "\n".join(bad)


# The two stages meet only through files: each stage's import closure stays out of the other's code.
RECO_STAGE_ONLY = ("main_reco", "entry.reco_benchmark", "entry.evaluation_loop", "entry.reco_common",
                   "entry.reference_cache", "entry.reco_index", "entry.reco_ovss", "entry.reco_own_images", "reco_api",
                   "reco", "image_index")
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
    assert "image_index.published" in imports_of("image_index.storage")  # an import inside a function
    assert "utils.permutohedral" in imports_of("utils.crf")  # a relative import
    assert "entry.reco_plus" in closure("main_reco_plus") and "reco_plus.trainer" in closure("main_reco_plus")
    assert len(project_files()) > 50


def test_every_python_file_parses():
    for module, path in project_files().items():
        ast.parse(path.read_text(), filename=str(path))
