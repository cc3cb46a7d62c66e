"""benchmarks/gpu_check.sh: the whole first-GPU check dry-run on the CPU with tiny sizes (so it cannot
rot), and how its table and exit status judge results."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_check import TARGETS, exit_status, table_rows

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dry_run_of_every_part(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    logs = {p: Path(r["log"]).read_text()[-2000:] for p, r in report["parts"].items() if r["returncode"] != 0}
    assert done.returncode == 0, (done.stdout[-3000:], logs)
    assert report["dry_run"] and set(report["parts"]) == {"cuda_tests", "crf", "crf_memory", "index_build", "reco_plus_train",
                                                           "own_images"}
    assert all(r["returncode"] == 0 for r in report["parts"].values())
    checks = [row["check"] for row in report["table"]]
    for expected in ("CUDA tests", "CRF 320x320x171: labels equal", "index: full build", "ImageNet-train",
                     "ReCo+ train", "own images end to end", "decode_jpeg on cpu vs PIL",
                     "CRF memory, products 'scipy' (default)", "CRF memory, products 'sparse_mm'"):
        assert any(expected in c for c in checks), (expected, checks)
    assert all(row["status"] in ("ok", "dry run") for row in report["table"])
    assert report["parts"]["cuda_tests"]["tests"]["tests"] >= 5  # the cuda-marked tests were collected
    crf = report["parts"]["crf"]["data"]["sizes"]
    assert all(r["labels_equal"] > 0.99 for r in crf.values())
    text = (tmp_path / "gpu_check.md").read_text()
    assert "| check | value | target | status |" in text and "DRY RUN" in text and text in done.stdout


def _results(**changes):
    crf = {"320x320x27": {"torch_ms_per_image": 6.0, "pydensecrf_ms_per_image": 900.0, "pydensecrf_processes": 8,
                          "peak_mib_per_image": 200.0, "labels_equal": 1.0, "max_abs_dq": 1e-5},
           "320x320x171": {"torch_ms_per_image": 30.0, "pydensecrf_ms_per_image": 2000.0, "pydensecrf_processes": 8,
                           "peak_mib_per_image": 700.0, "labels_equal": 0.9999, "max_abs_dq": 1e-5}}
    results = {
        "cuda_tests": {"returncode": 0, "timed_out": False, "log": "x", "seconds": 1,
                       "tests": {"tests": 9, "failures": 0, "errors": 0, "skipped": 0}},
        "crf": {"returncode": 0, "timed_out": False, "log": "x", "seconds": 1, "data": {"sizes": crf}},
        "crf_memory": {"returncode": 0, "timed_out": False, "log": "x", "seconds": 1, "data": {
            "device": "cuda", "shape": [240, 320, 19], "default": "none", "modes": {
                mode: {"mib_after_10": 900.0, "mib_after_100": 900.0 + growth, "growth_mib": growth,
                       "mib_per_call": growth / 90, "ms_per_call": 5.0, "flat": growth < 16}
                for mode, growth in (("scipy", 0.0), ("sparse_mm", 300.0), ("none", 2.0))}}},
        "index_build": {"returncode": 0, "timed_out": False, "log": "x", "seconds": 1, "data": {
            "arch": "ViT-L/14@336px", "model_only_fp16": 1200.0, "model_only_bf16": 1210.0, "build_precision": "fp16",
            "num_workers": 15, "full_build_steady": 1100.0, "full_over_model": 1100 / 1200,
            "imagenet_train_minutes": 19.4}},
    }
    for path, value in changes.items():
        part, *keys = path.split("__")
        target = results[part]
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return results


def test_a_good_gpu_run_passes():
    rows = table_rows(_results(), dry=False)
    assert all(r["status"] == "ok" for r in rows), rows
    leaking = [r for r in rows if "'sparse_mm'" in r["check"]]  # not the default: information, not a failure
    assert len(leaking) == 1 and "LEAKS" in leaking[0]["value"]
    assert exit_status(rows, strict_targets=True) == 0


@pytest.mark.parametrize("change", [
    {"cuda_tests__tests__skipped": 2},        # a CUDA test skipped on a GPU: its path did not run
    {"cuda_tests__returncode": 1},
    {"crf__timed_out": True, "crf__returncode": None},
    {"index_build__returncode": 1},
    {"crf__data__sizes__320x320x171__labels_equal": 0.95},
    {"crf_memory__data__default": "sparse_mm"},  # the product the CUDA path uses grows device memory
])
def test_failures_fail_the_check(change):
    rows = table_rows(_results(**change), dry=False)
    assert any(r["status"] == "FAIL" for r in rows), rows
    assert exit_status(rows, strict_targets=False) == 1


@pytest.mark.parametrize("change", [
    {"crf__data__sizes__320x320x27__torch_ms_per_image": TARGETS["crf_ms"] + 1},
    {"crf__data__sizes__320x320x171__peak_mib_per_image": 1500.0},
    {"index_build__data__full_over_model": 0.6},
    {"index_build__data__imagenet_train_minutes": 40.0},
])
def test_missed_targets_are_marked_and_fail_only_when_strict(change):
    rows = table_rows(_results(**change), dry=False)
    assert [r["status"] for r in rows].count("MISSED") == 1, rows
    assert exit_status(rows, strict_targets=False) == 0
    assert exit_status(rows, strict_targets=True) == 1
