"""A kill at every commit point never mixes two runs' files (tests/kill_points.py): for every N, a run
SIGKILLed right after its N-th rename leaves the earlier run's files or the new run's, and a re-run gives
the files of an uninterrupted run. Plus two index builds at once."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import main_reco
from kill_points import REPO, kill_at_every_rename, snapshot
from synthetic import write_imagenet
from test_end_to_end import reco_config
from test_own_images import write_scenes

PRELOAD = ["torch", "open_clip", "timm", "entry.reco_own_images"]
VOLATILE = ["reco.log", "timings.json"]  # hold times


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill_world")
    write_imagenet(root / "ImageNet2012", "train", n_per_class=2)
    config = reco_config(root, n_imgs=2)
    assert main_reco.main(["--config", str(config), "--stage", "index"]) == 0
    write_scenes(root / "photos", sizes=((40, 60),))
    return root, config


@pytest.mark.slow
def test_own_images_into_an_existing_out(tiny_world, tmp_path):
    root, config = tiny_world
    earlier = tmp_path / "earlier"
    base = ["--config", str(config), "--images", str(root / "photos"), "--no-crf"]
    assert main_reco.main(base + ["--categories", "sky,car", "--out", str(earlier)]) == 0
    out = tmp_path / "work" / "out"
    result = kill_at_every_rename({
        "module": "main_reco", "argv": base + ["--categories", "sky,car,road", "--out", str(out)],
        "reset": [[str(earlier), str(out)]], "snapshot": [str(out)], "ignore": VOLATILE, "preload": PRELOAD,
        "warm_up": True}, tmp_path / "work")
    old, new = snapshot(earlier, VOLATILE), result["uninterrupted"][0]
    assert result["uninterrupted_rc"] == 0 and old != new and "masks/scene0.png" in new
    assert result["count"] >= 6 and len(result["points"]) == result["count"]
    for n, point in result["points"].items():
        assert point["killed_rc"] == -9, n
        assert point["after_kill"][0] in (old, new), f"a kill after rename {n} mixed the two runs' files"
        assert point["rerun_rc"] == 0 and point["after_rerun"][0] == new, n
    assert sorted(p.name for p in out.parent.iterdir()) == ["kill_spec.count", "kill_spec.json",
                                                            "kill_spec.result.json", "out"]


@pytest.mark.slow
def test_two_index_builds_at_once(tmp_path):
    write_imagenet(tmp_path / "ImageNet2012", "train", n_per_class=6)
    config = reco_config(tmp_path, index_shard_size=8, index_batch_size=4)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    command = [sys.executable, str(REPO / "main_reco.py"), "--config", str(config), "--stage", "index"]
    builds = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for _ in range(2)]
    outputs = [b.communicate(timeout=300)[0] for b in builds]
    assert [b.returncode for b in builds] == [0, 0], outputs
    index_root = tmp_path / "ImageNet2012" / "index"
    assert sorted(p.name for p in index_root.iterdir()) == ["build_tiny_vit_clip_train.log", "tiny_vit_clip_train"]
    meta = json.loads((index_root / "tiny_vit_clip_train" / "meta.json").read_text())
    assert meta["count"] == len((index_root / "tiny_vit_clip_train" / "filenames.txt").read_text().split())
    assert any("already built" in o or "waiting for it" in o for o in outputs), outputs
