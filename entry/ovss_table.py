"""One table of the open-vocabulary results: ovss_results.md and ovss_results.json.

    python -m entry.ovss_table configs/ovss/reco_voc21.yaml configs/ovss/reco_voc20.yaml ... [--out DIR]

Reads results.json and results_crf.json from each config's run directory (entry/reco_ovss.py) and writes
the table into --out, by default the configs' common `dir_ckpt` (the run root). A benchmark without
results is listed as missing and makes the exit status 1; the average covers the benchmarks present.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from entry.reco_ovss import ovss_run_dir  # noqa: E402
from reco_api.config_checks import reco_config  # noqa: E402
from utils.config import ConfigError  # noqa: E402
from utils.io import atomic_write, save_json  # noqa: E402

METRICS = (("miou", "results.json", "Mean IoU"), ("pixel_acc", "results.json", "Pixel Acc"),
           ("miou_crf", "results_crf.json", "Mean IoU"), ("pixel_acc_crf", "results_crf.json", "Pixel Acc"))


def collect(config_paths: Sequence[str]) -> list[dict[str, Any]]:
    """One row per config: benchmark, the four metrics (fractions; None when missing), run_dir."""
    rows = []
    for path in config_paths:
        config = reco_config(path)
        if config.dataset_name is None:
            raise ConfigError(f"{path}: dataset_name is not set")
        run_dir = ovss_run_dir(config)
        row: dict[str, Any] = {"benchmark": config.dataset_name, "run_dir": str(run_dir)}
        for key, filename, metric in METRICS:
            row[key] = _read_metric(run_dir / filename, metric)
        rows.append(row)
    return rows


def _read_metric(path: Path, metric: str) -> Optional[float]:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get(metric)
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and not math.isnan(value) else None


def average(rows: Sequence[dict[str, Any]]) -> dict[str, Optional[float]]:
    """Mean of each metric over the rows that have it (None when no row has it)."""
    out = {}
    for key, _, _ in METRICS:
        values = [row[key] for row in rows if row[key] is not None]
        out[key] = sum(values) / len(values) if values else None
    return out


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The table in percent with one decimal; '—' marks a missing value."""
    def cell(value: Optional[float]) -> str:
        return "—" if value is None else f"{100 * value:.1f}"

    lines = ["| benchmark | mIoU | pixel acc. | mIoU + CRF | pixel acc. + CRF |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['benchmark']} | " + " | ".join(cell(row[k]) for k, _, _ in METRICS) + " |")
    mean = average(rows)
    lines.append("| **average** | " + " | ".join(cell(mean[k]) for k, _, _ in METRICS) + " |")
    return "\n".join(lines) + "\n"


def write_tables(rows: Sequence[dict[str, Any]], out_dir: Path) -> tuple[Path, Path]:
    """ovss_results.md and ovss_results.json in `out_dir` (written atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_json(out_dir / "ovss_results.json", {"benchmarks": list(rows), "average": average(rows)})
    with atomic_write(out_dir / "ovss_results.md", "w") as f:
        f.write(markdown(rows))
    return out_dir / "ovss_results.md", out_dir / "ovss_results.json"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="configs/ovss/reco_<benchmark>.yaml files, in table order")
    parser.add_argument("--out", help="folder for the tables (default: the configs' common dir_ckpt)")
    args = parser.parse_args(argv)
    try:
        rows = collect(args.configs)
        if args.out is not None:
            out_dir = Path(args.out)
        else:
            roots = {str(reco_config(path).dir_ckpt) for path in args.configs}
            if len(roots) != 1:
                raise ConfigError(f"the configs have different dir_ckpt values {sorted(roots)}; give --out")
            out_dir = Path(roots.pop())
    except (ConfigError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    md_path, _ = write_tables(rows, out_dir)
    print(md_path.read_text(), end="")
    missing = [row["benchmark"] for row in rows if row["miou"] is None or row["miou_crf"] is None]
    if missing:
        print(f"no results for: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"wrote {md_path} and {md_path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
