"""The open-vocabulary path has the original benchmarks' preflight (every missing input in one message
naming the config file) and per-stage timing (timings.json in the run dir, the table in reco.log)."""
from __future__ import annotations

import json

import main_reco
import networks
from colour_models import ColourEncoder
from datasets import metadata
from entry.reco_ovss import ovss_run_dir
from synthetic_ovss import write_ovss
from test_end_to_end import install_colour_models
from test_ovss_end_to_end import COLOURS, fill_reference_cache, ovss_config, vocabulary
from utils.config import load_reco_config


def test_every_missing_input_in_one_message_naming_the_config(tmp_path, capsys):
    config = ovss_config(tmp_path, "voc20", weights={"clip": "random", "dense_clip": "random",
                                                     "encoder": str(tmp_path / "no_such_encoder.pth")})
    assert main_reco.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "3 inputs of this run are missing" in err, err
    for key in ("dir_dataset", "dir_imagenet", "weights.encoder"):
        assert key in err, (key, err)
    assert "Traceback" not in err
    assert not (tmp_path / "ckpt").exists()  # nothing started


def test_stage_timings_written_to_the_run_dir(tmp_path, monkeypatch):
    name = "voc20"
    words = metadata.categories(name) + list(metadata.context_categories())
    install_colour_models(monkeypatch, vocabulary(words), COLOURS)
    monkeypatch.setattr(networks, "build_encoder", lambda arch, weights, key="": ColourEncoder(COLOURS, patch_size=4))
    write_ovss(name, tmp_path / name)
    config = ovss_config(tmp_path, name)
    fill_reference_cache(config, metadata.categories(name))
    assert main_reco.main(["--config", str(config)]) == 0

    out = ovss_run_dir(load_reco_config(config))
    timings = json.loads((out / "timings.json").read_text())
    assert {"models", "data loading", "inference", "CRF", "writing"} <= set(timings["stages"]), timings
    assert "inference" in (out / "reco.log").read_text().split("mIoU")[-1]  # the table after the results
    assert json.loads((out / "results.json").read_text())["Mean IoU"] >= 0.9
