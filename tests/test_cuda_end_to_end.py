"""Whole runs on a GPU (marked cuda, skipped without one; part of benchmarks/gpu_check.sh): own images
with the colour-coded models must give the known answer, and ReCo+ must train with AMP and evaluate with
the torch CRF on the device."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import main_reco
import main_reco_plus
from test_end_to_end import colour_world, install_colour_models, reco_config, write_imagenet_of
from test_own_images import CLASSES, write_scenes
from test_reco_plus import _config, cityscapes_tree  # noqa: F401  (a fixture, used by name)

pytestmark = pytest.mark.cuda


def test_own_images_known_answer_on_cuda(tmp_path, monkeypatch):
    vocabulary, colours = colour_world(CLASSES + ["tree", "person", "building", "road"])
    install_colour_models(monkeypatch, vocabulary, colours)
    write_imagenet_of(tmp_path / "ImageNet2012", colours)
    config = reco_config(tmp_path, device="cuda", crf_backend="torch")
    assert main_reco.main(["--config", str(config), "--stage", "index"]) == 0
    expected = write_scenes(tmp_path / "photos")
    out = tmp_path / "out"
    assert main_reco.main(["--config", str(config), "--images", str(tmp_path / "photos"),
                           "--categories", ",".join(CLASSES), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["images"]) == sorted(expected)
    for stem, truth in expected.items():
        mask = np.asarray(Image.open(out / "masks" / f"{stem}.png"))
        valid = truth >= 0
        assert mask.shape == truth.shape and float((mask[valid] == truth[valid]).mean()) > 0.9, stem


def test_reco_plus_trains_with_amp_on_cuda(cityscapes_tree, tmp_path):  # noqa: F811
    config = _config(cityscapes_tree, tmp_path / "c.yaml", tmp_path / "c", device="cuda", amp=True,
                     crf_backend="torch")
    assert main_reco_plus.main(["--config", str(config)]) == 0
    run = tmp_path / "c" / Path("cityscapes/val/reco_plus/deeplabv3plus_tiny")
    last = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert last["iteration"] == 6
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    results = json.loads((run / "00006" / "results_crf.json").read_text())
    assert 0.0 <= results["Mean IoU"] <= 1.0
