"""No project code loads weights in a way that can run code: the source is scanned (ast), not trusted.

Refused anywhere outside tests/: torch.jit.load (runs an archive's code), open_clip's load_openai_model
(calls torch.jit.load, then torch.load without weights_only), and torch.load without weights_only=True.
tests/ may call torch.jit.load to produce expected values, so it is not scanned.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOT_SCANNED = {"tests", ".venv", "venv", ".git", "node_modules"}
FORBIDDEN_NAMES = {"load_openai_model"}


def _dotted(node: ast.AST) -> str:
    """'torch.jit.load' for the expression torch.jit.load; '' for anything that is not a dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """'file:line: what' for each unsafe load in `source`."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, (ast.Name, ast.Attribute)):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in FORBIDDEN_NAMES:
                found.append(f"{where}: {name}")
            if _dotted(node).endswith("jit.load"):
                found.append(f"{where}: {_dotted(node)}")
        elif isinstance(node, ast.ImportFrom):
            names = {alias.name for alias in node.names}
            if names & FORBIDDEN_NAMES or (node.module or "").endswith("jit") and "load" in names \
                    or node.module == "torch" and "load" in names:
                found.append(f"{where}: from {node.module} import {', '.join(sorted(names))}")
        elif isinstance(node, ast.Call) and _dotted(node.func) == "torch.load":
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in node.keywords)
            if not safe:
                found.append(f"{where}: torch.load without weights_only=True")
    return found


def project_sources() -> list[Path]:
    return sorted(p for p in REPO.rglob("*.py")
                  if not NOT_SCANNED & set(p.relative_to(REPO).parts[:-1]) and not p.name.startswith("."))


def test_the_scan_finds_each_unsafe_load():
    source = "\n".join([
        "import torch, open_clip",
        "from torch.jit import load",
        "from open_clip.openai import load_openai_model",
        "m = torch.jit.load(p)",
        "m = open_clip.openai.load_openai_model(p)",
        "s = torch.load(p)",
        "s = torch.load(p, weights_only=False)",
        "s = torch.load(p, map_location='cpu', weights_only=True)",  # the one safe line
    ])
    found = unsafe_loads(source)
    assert sorted(int(line.split(":")[1]) for line in found) == [2, 3, 4, 5, 6, 7]


def test_no_project_code_loads_weights_unsafely():
    sources = project_sources()
    assert REPO / "networks" / "clip.py" in sources and not any("tests" in p.parts for p in sources)
    found = [hit for path in sources for hit in unsafe_loads(path.read_text(), str(path.relative_to(REPO)))]
    assert not found, "unsafe loads:\n" + "\n".join(found)
