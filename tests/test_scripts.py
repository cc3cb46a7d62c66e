"""The bash wrappers find the entry scripts from the repo root and from scripts/, with the right config."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script, cwd", [
    ("reco_cityscapes.sh", "root"), ("reco_plus_cityscapes.sh", "scripts"),  # both entry scripts, both folders
    pytest.param("reco_coco_stuff.sh", "scripts", marks=pytest.mark.slow),
    pytest.param("reco_kitti_step.sh", "root", marks=pytest.mark.slow)])
def test_wrapper_runs_the_entry_script(tmp_path, script, cwd):
    config = tmp_path / "c.yaml"
    base = {"dir_ckpt": str(tmp_path / "ckpt"), "dir_dataset": str(tmp_path / "no_dataset_here")}
    if script.startswith("reco_plus"):
        base.update({"dataset_name": "cityscapes"})
    else:
        base.update({"dataset_name": script[5:-3]})
    config.write_text(yaml.safe_dump(base))
    env = {**os.environ, "CONFIG": str(config), "PYTHON": sys.executable}
    directory = REPO if cwd == "root" else REPO / "scripts"
    path = "scripts/" + script if cwd == "root" else script
    result = subprocess.run(["bash", path], cwd=directory, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    if script.startswith("reco_plus"):  # every missing input, the backbone weights among them
        assert "c.yaml: 3 inputs of this run are missing" in result.stderr  # the message names the config file
        assert "weights.backbone: not set" in result.stderr  # and every missing input at once
    else:
        assert "dir_dataset" in result.stderr and "no_dataset_here" in result.stderr


DATASETS = ("cityscapes", "coco_stuff", "kitti_step")


def _fake_python(tmp_path: Path) -> Path:
    """An interpreter stand-in that prints the working directory and its arguments, one per line."""
    fake = tmp_path / "fake_python"
    fake.write_text('#!/usr/bin/env bash\npwd\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    return fake


def _run_wrapper(tmp_path: Path, script: str, *args: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "CONFIG"}
    env["PYTHON"] = str(_fake_python(tmp_path))
    result = subprocess.run(["bash", str(REPO / "scripts" / script), *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize("dataset", DATASETS)
def test_reco_wrapper_passes_its_own_config_and_split(tmp_path, dataset):
    cwd, *argv = _run_wrapper(tmp_path, f"reco_{dataset}.sh", "train", "--suffix", "x")
    assert Path(cwd) == REPO
    assert argv == ["main_reco.py", "--config", f"configs/reco_{dataset}.yaml", "--split", "train", "--suffix", "x"]
    assert (REPO / argv[2]).is_file()


@pytest.mark.parametrize("dataset", DATASETS)
def test_reco_plus_wrapper_passes_its_own_config_and_weights(tmp_path, dataset):
    cwd, *argv = _run_wrapper(tmp_path, f"reco_plus_{dataset}.sh")
    assert Path(cwd) == REPO
    assert argv == ["main_reco_plus.py", "--config", f"configs/reco_plus_{dataset}.yaml"]
    assert (REPO / argv[2]).is_file()
    _, *argv = _run_wrapper(tmp_path, f"reco_plus_{dataset}.sh", "w.pt", "--device", "cpu")
    assert argv == ["main_reco_plus.py", "--config", f"configs/reco_plus_{dataset}.yaml",
                    "--weights", str(tmp_path / "w.pt"), "--device", "cpu"]  # relative to where it was called
