"""The README's config tables, generated from the key declarations in utils/config.py.

    python -m reco_api.config_docs            # print the tables
    python -m reco_api.config_docs --write    # rewrite them in README.md (between the config-table markers)

Each table sits between `<!-- config-table: ClassName -->` and `<!-- /config-table -->`; the text around it
is left alone. tests/test_config_docs.py fails when README.md differs from what this writes.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Literal

from utils.config import RecoConfig, RecoPlusConfig
from utils.config_schema import declared

README = Path(__file__).resolve().parents[1] / "README.md"
TABLES = {"RecoConfig": RecoConfig, "RecoPlusConfig": RecoPlusConfig}
COMMAND = "python -m reco_api.config_docs --write"
_BLOCK = re.compile(r"(<!-- config-table: (\w+) -->\n)(.*?)(<!-- /config-table -->)", re.S)
_REGISTRIES = {"dataset": "a registered benchmark", "encoder": "a registered encoder", "clip": "a registered CLIP",
               "dense_clip": "a registered ModifiedResNet CLIP", "crf_backend": "`auto` or a registered backend",
               "segmentor": "a registered segmentor"}


def table(cls: type) -> str:
    """The markdown table of the keys of `cls` (nested keys dotted), in declaration order."""
    lines = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for name, f, tp in _keys(cls):
        lines.append(f"| `{name}` | {_default(f)} | {_allowed(f, tp)} | {f.metadata['doc']} |")
    return "\n".join(lines) + "\n"


def _keys(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    for f, tp in declared(cls):
        if dataclasses.is_dataclass(tp):
            yield from _keys(tp, prefix + f.name + ".")
        else:
            yield prefix + f.name, f, tp


def _default(f: dataclasses.Field) -> str:
    if f.metadata.get("shown_default") is not None:
        return f.metadata["shown_default"]
    if f.metadata.get("fallback") is not None:
        return f"`{f.metadata['fallback']}`"
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        return "required"
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if value == "":
        return '""'
    return str(value)


def _allowed(f: dataclasses.Field, tp: Any) -> str:
    meta = f.metadata
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)
    inner = next(a for a in typing.get_args(tp) if a is not type(None)) if optional else tp
    if meta.get("allowed") is not None:
        text = meta["allowed"]
    elif meta.get("names") is not None:
        text = _REGISTRIES[meta["names"]]
    elif typing.get_origin(inner) is Literal:
        text = ", ".join(f"`{v}`" for v in typing.get_args(inner))
    elif meta.get("range") is not None:
        rule = meta["range"]
        text = f"{rule.replace('..', ' to ')}" if ".." in rule else rule
    elif inner is bool:
        text = "`true`, `false`"
    else:
        text = {int: "integer", float: "number", str: "string"}.get(inner) or (
            "list of names" if typing.get_origin(inner) is list else "mapping of names")
    return text + (", `null`" if optional else "")


def render(readme: str) -> str:
    """`readme` with every config table regenerated."""
    def replace(match: re.Match) -> str:
        name = match.group(2)
        if name not in TABLES:
            raise ValueError(f"README: unknown config table {name!r}; known: {', '.join(TABLES)}")
        return match.group(1) + table(TABLES[name]) + match.group(4)
    return _BLOCK.sub(replace, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite the tables in README.md")
    args = parser.parse_args(argv)
    if args.write:
        README.write_text(render(README.read_text()))
    else:
        for name, cls in TABLES.items():
            print(f"{name}:\n{table(cls)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
