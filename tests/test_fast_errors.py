"""A mistake in the command line or the config file is answered before torch, open_clip or timm is
imported (both entry points), read from `python -X importtime`, which lists every module imported."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "open_clip", "timm", "torchvision")


def run_script(script: str, *args: str) -> tuple[int, list[str], set[str]]:
    """(exit code, stderr lines other than the import times, top-level packages imported)."""
    done = subprocess.run([sys.executable, "-X", "importtime", str(REPO / script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    imported, lines = set(), []
    for line in done.stderr.splitlines():
        if line.startswith("import time:"):
            imported.add(line.rsplit("|", 1)[-1].strip().split(".")[0])
        else:
            lines.append(line)
    return done.returncode, lines, imported


def wrong_device_yaml(tmp_path: Path, entry: str) -> Path:
    config = {"dir_ckpt": str(tmp_path / "ckpt"), "dir_dataset": str(tmp_path), "dataset_name": "cityscapes",
              "device": "gpu"}
    if entry == "main_reco_plus.py":
        config["segmentor_name"] = "deeplabv3plus_tiny"
    path = tmp_path / "wrong.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("script", ["main_reco.py", "main_reco_plus.py"])
def test_a_missing_config_file_is_one_line_without_the_heavy_imports(script):
    code, lines, imported = run_script(script, "--config", "no_such.yaml")
    assert code == 2
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: config file not found: no_such.yaml (= /")
    assert lines[0] == errors[0]  # the first thing said, no traceback
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
    assert "yaml" in imported  # the import times were read (the wrapper saw the imports)


@pytest.mark.parametrize("script", ["main_reco.py", "main_reco_plus.py"])
def test_a_wrong_config_value_is_answered_without_the_heavy_imports(tmp_path, script):
    path = wrong_device_yaml(tmp_path, script)
    code, lines, imported = run_script(script, "--config", str(path))
    assert code == 2
    (error,) = [line for line in lines if line.startswith("error:")]
    assert str(path) in error and "device: 'gpu' is not a device" in error
    assert not imported & set(HEAVY)


def test_a_wrong_argument_is_answered_without_the_heavy_imports():
    code, lines, imported = run_script("main_reco.py", "--config", "x.yaml", "--split", "test")
    assert code == 2 and any("--split" in line and "invalid choice" in line for line in lines)
    assert not imported & set(HEAVY)
