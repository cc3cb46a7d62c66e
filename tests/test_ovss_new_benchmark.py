"""Adding an open-vocabulary benchmark is ONE registry entry (with its layout) plus its class-list JSON:
register one on a new layout with its class list in a temp dir, and run it through main_reco.py."""
from __future__ import annotations

import json

import numpy as np

import main_reco
import networks
from colour_models import ColourEncoder
from datasets import metadata
from datasets.ovss_layout import OvssLayout
from datasets.registry import _ovss, benchmark_names, register_benchmark, unregister_benchmark
from entry.reco_ovss import ovss_run_dir
from synthetic import SCENE_CLASSES, _save, draw_scene, render
from test_end_to_end import install_colour_models
from test_ovss_end_to_end import COLOURS, fill_reference_cache, ovss_config, vocabulary
from utils.config import load_reco_config

NAME = "my_scenes"


def write_tree(root, sizes=((96, 128), (104, 136))):
    """Flat layout: photos/{stem}.png and masks/{stem}_mask.png; label = scene class index, 255 ignored."""
    rng = np.random.default_rng(0)
    for i, size in enumerate(sizes):
        scene = draw_scene(*size, rng)  # scene class index per pixel, len(SCENE_CLASSES) = ignored patch
        _save(root / "photos" / f"s{i}.png", render(scene))
        _save(root / "masks" / f"s{i}_mask.png", np.where(scene < len(SCENE_CLASSES), scene, 255).astype(np.uint8))


def test_one_registry_entry_runs_a_new_benchmark(tmp_path, monkeypatch):
    class_list = tmp_path / "my_scenes_classes.json"
    class_list.write_text(json.dumps({
        "benchmark": NAME, "background": None,
        "classes": [{"name": c, "queries": [c]} for c in SCENE_CLASSES],
    }))
    layout = OvssLayout("my_scenes", "photos", "masks", ".png", "_mask.png", class_list=str(class_list))
    register_benchmark(_ovss(NAME, "synthetic scenes, 5 classes", layout))  # the one entry
    try:
        assert NAME in benchmark_names()
        assert metadata.eval_categories(NAME) == list(SCENE_CLASSES)
        write_tree(tmp_path / NAME)
        words = list(SCENE_CLASSES) + list(metadata.context_categories())
        install_colour_models(monkeypatch, vocabulary(words), COLOURS)
        monkeypatch.setattr(networks, "build_encoder",
                            lambda arch, weights, key="": ColourEncoder(COLOURS, patch_size=4))
        config = ovss_config(tmp_path, NAME)
        fill_reference_cache(config, list(SCENE_CLASSES))
        assert main_reco.main(["--config", str(config)]) == 0

        out = ovss_run_dir(load_reco_config(config))
        results = json.loads((out / "results.json").read_text())
        for name in SCENE_CLASSES:
            assert results[name] >= 0.8, (name, results)
        assert results["Mean IoU"] >= 0.9 and results["Pixel Acc"] >= 0.95
    finally:
        unregister_benchmark(NAME)
