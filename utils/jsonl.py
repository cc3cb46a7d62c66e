"""JSON-lines files that are appended to in place (training metrics).

An append cut short by a kill leaves a torn last line; it is dropped (the caller logs it). Damage
anywhere else is an error naming the file and the line, because records would otherwise be lost.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


class JsonLinesError(ValueError):
    """A JSON-lines file is damaged before its last line."""


def read_json_lines(path: str | os.PathLike) -> tuple[list[dict], bool]:
    """(records, torn): every record of the file, and whether a torn last line was dropped."""
    path = Path(path)
    lines = path.read_text(errors="replace").splitlines()
    records: list[dict] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if all(not rest.strip() for rest in lines[number:]):
                return records, True
            raise JsonLinesError(f"{path}: line {number} is not a JSON record ({e}); move the file away "
                                 "or remove the line") from None
        records.append(record)
    return records, False
