"""Ctrl-C (SIGINT) gives one line and exit status 130, as shells expect, in both entry points; a ReCo+
training stopped by Ctrl-C keeps its last.pt and resumes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_reco_plus import _config, cityscapes_tree  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]


def _interrupt_when(command: list[str], marker: str, cwd: Path, timeout: float = 240) -> tuple[int, str]:
    """Start `command`, send SIGINT once `marker` appears in its output, return (rc, stderr+stdout)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("RECO_DEBUG", None)
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    seen, deadline = [], time.monotonic() + timeout
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            process.send_signal(signal.SIGINT)
            break
        if time.monotonic() > deadline:
            process.kill()
            break
    rest, _ = process.communicate(timeout=120)
    return process.returncode, "".join(seen) + rest


def test_ctrl_c_in_main_reco_is_one_line_and_130(tmp_path):
    rc, output = _interrupt_when([sys.executable, str(REPO / "main_reco.py"), "--demo", "--out", str(tmp_path / "d")],
                                 "ImageNet index", tmp_path)
    assert rc == 130, output[-2000:]
    assert "Traceback" not in output
    assert output.strip().splitlines()[-1].startswith("interrupted (Ctrl-C)")


@pytest.mark.slow
def test_ctrl_c_in_reco_plus_training_saves_and_says_so(cityscapes_tree, tmp_path):
    cfg = _config(cityscapes_tree, tmp_path / "i.yaml", tmp_path / "i", iter_train=400, iter_val=400, log_every=2)
    rc, output = _interrupt_when([sys.executable, str(REPO / "main_reco_plus.py"), "--config", str(cfg)],
                                 "iter 2 loss", tmp_path)
    assert rc == 130, output[-2000:]
    assert "Traceback" not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith("interrupted: ReCo+ training stopped at iteration") and "run the same command" in last
    state = torch.load(tmp_path / "i" / "cityscapes/val/reco_plus/deeplabv3plus_tiny" / "last.pt", weights_only=True)
    assert 2 <= state["iteration"] < 400
