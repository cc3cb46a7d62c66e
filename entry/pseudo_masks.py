"""Pseudo-masks of a `--split train` run (dt/ and dt_crf/), each carrying the setting it was made with.

Every mask PNG holds, in a text chunk, the digest of the setting record it was predicted with; the run
directory's `pseudo_mask_settings.json` maps each digest to its full record, and is written before the
first mask of that digest. A resumed run reuses a mask only if both its dt/ and dt_crf/ files carry a
digest whose record matches the current setting (reco_api.reference_setting.setting_differences), so a
run directory that saw two settings (a weights file replaced under the same name, a kill in between)
never passes one setting's masks off as the other's: each mask is one rename, mask and record together.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from reco_api.reference_setting import Record, setting_differences
from utils.io import save_json, save_png

logger = logging.getLogger("reco")

SETTINGS_FILE = "pseudo_mask_settings.json"
TEXT_KEY = "reco_setting"  # the PNG text chunk holding the setting digest
SUBDIRS = ("dt", "dt_crf")


def setting_digest(setting: Record) -> str:
    return hashlib.sha256(json.dumps(setting, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


class PseudoMaskStore:
    """The masks of one run directory for the current setting: saved with its digest, reused if theirs
    matches."""

    def __init__(self, run_dir: Path, setting: Record) -> None:
        self.run_dir, self.setting = run_dir, json.loads(json.dumps(setting))  # as it reads back from JSON
        self.digest = setting_digest(self.setting)
        self._matches: dict[str, list[str]] = {self.digest: []}  # digest -> differences ([]: reusable)
        self.stale = 0  # images whose masks were found but made with another setting

    def record_setting(self) -> None:
        """Add this setting to the run directory's digest -> record file (before any mask is written)."""
        records = self._records()
        if records.get(self.digest) != self.setting:
            records[self.digest] = self.setting
            save_json(self.run_dir / SETTINGS_FILE, records, sort_keys=True)

    def save(self, name: str, pred: np.ndarray, pred_crf: np.ndarray) -> None:
        for sub, mask in zip(SUBDIRS, (pred, pred_crf)):
            save_png(self.run_dir / sub / name, mask.astype(np.uint8), text={TEXT_KEY: self.digest})

    def load(self, names: Sequence[str], shape: tuple[int, ...]) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """The batch's (dt, dt_crf) masks if an earlier run of this setting wrote them all, else None."""
        stacks = []
        for sub in SUBDIRS:
            masks = []
            for name in names:
                mask = self._read(self.run_dir / sub / name)
                if mask is None:
                    return None
                masks.append(mask)
            stacks.append(np.stack(masks))
        return (stacks[0], stacks[1]) if stacks[0].shape == shape and stacks[1].shape == shape else None

    def report(self) -> None:
        if self.stale:
            reasons = sorted({d for ds in self._matches.values() for d in ds})
            logger.warning("not reusing the pseudo-masks of %d images in %s: they were made with another setting "
                           "(%s); they are recomputed", self.stale, self.run_dir, "; ".join(reasons[:5]))

    def _read(self, path: Path) -> Optional[np.ndarray]:
        if not path.is_file():
            return None
        try:
            with Image.open(path) as image:
                digest = getattr(image, "text", {}).get(TEXT_KEY)
                if digest is None or self._differences(digest):
                    self.stale += 1
                    return None
                return np.asarray(image, dtype=np.int64)
        except OSError:
            return None

    def _differences(self, digest: str) -> list[str]:
        if digest not in self._matches:
            recorded = self._records().get(digest)
            self._matches[digest] = (["no settings record"] if recorded is None
                                     else setting_differences(recorded, self.setting))
        return self._matches[digest]

    def _records(self) -> dict[str, Any]:
        try:
            records = json.loads((self.run_dir / SETTINGS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return records if isinstance(records, dict) else {}
