"""The bash wrappers find the entry scripts from the repo root and from scripts/."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script, cwd", [("reco_cityscapes.sh", "root"), ("reco_coco_stuff.sh", "scripts"),
                                         ("reco_kitti_step.sh", "root"), ("reco_plus_cityscapes.sh", "scripts")])
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
    if script.startswith("reco_plus"):  # the backbone weights are checked first
        assert "c.yaml: weights.backbone: not set" in result.stderr  # the message names the config file
    else:
        assert "dir_dataset" in result.stderr and "no_dataset_here" in result.stderr
