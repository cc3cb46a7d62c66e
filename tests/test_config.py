import json
from pathlib import Path

import pytest
import yaml

from utils.config import ConfigError, load_reco_config, load_reco_plus_config, require_dir, require_file

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = (load_reco_plus_config if path.name.startswith("reco_plus") else load_reco_config)(path)
    assert config.dir_ckpt


@pytest.mark.parametrize("name", ["reco_cityscapes.yaml", "reco_coco_stuff.yaml", "reco_kitti_step.yaml",
                                  "reco_plus_cityscapes.yaml", "reco_plus_coco_stuff.yaml", "reco_plus_kitti_step.yaml"])
def test_original_yaml_files_keep_working(tmp_path, fixtures_dir, name):
    original = json.loads((fixtures_dir / "original_configs.json").read_text())[name]
    path = tmp_path / name
    path.write_text(yaml.safe_dump(original))
    if name.startswith("reco_plus"):
        config = load_reco_plus_config(path)
        assert config.segmentor_name == "deeplabv3plus_resnet101" and config.iter_train == 20000
    else:
        config = load_reco_config(path)
        assert config.experiment_name == "deit_s_16_sin_in_train_ce_ta"
        assert config.n_imgs == 50 and config.context_categories[0] == "tree"


def _write(tmp_path, data):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_missing_and_mistyped_keys_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'n_img'"):
        load_reco_config(_write(tmp_path, {"dir_ckpt": "x", "n_img": 5}))
    with pytest.raises(ConfigError, match="unknown key 'weights.clipp'"):
        load_reco_config(_write(tmp_path, {"dir_ckpt": "x", "weights": {"clipp": "a"}}))
    with pytest.raises(ConfigError, match="missing required key 'dir_ckpt'"):
        load_reco_config(_write(tmp_path, {"n_imgs": 5}))
    with pytest.raises(ConfigError, match="'n_imgs' must be an integer"):
        load_reco_config(_write(tmp_path, {"dir_ckpt": "x", "n_imgs": "fifty"}))
    with pytest.raises(ConfigError, match="'text_attention' must be true or false"):
        load_reco_config(_write(tmp_path, {"dir_ckpt": "x", "text_attention": "yes"}))
    # registry-backed names are checked right after loading, against the registries (reco_api.config_checks)
    from reco_api.config_checks import check_reco_names

    with pytest.raises(ConfigError, match="crf_backend: unknown value 'gpu'; known: auto, pydensecrf, torch"):
        check_reco_names(load_reco_config(_write(tmp_path, {"dir_ckpt": "x", "crf_backend": "gpu"})))
    with pytest.raises(ConfigError, match="config file not found"):
        load_reco_config(tmp_path / "nope.yaml")


def test_overrides_and_experiment_name(tmp_path):
    path = _write(tmp_path, {"dir_ckpt": "x", "context_elimination": False, "dense_clip_inference": False})
    config = load_reco_config(path, {"suffix": "abl", "device": None})
    assert config.experiment_name == "deit_s_16_sin_in_train_ta_abl"
    assert config.device == "auto"


def test_required_paths_name_the_key(tmp_path):
    config = load_reco_config(_write(tmp_path, {"dir_ckpt": "x", "dir_dataset": str(tmp_path / "missing")}))
    with pytest.raises(ConfigError, match="dir_dataset: directory not found"):
        require_dir(config, "dir_dataset")
    with pytest.raises(ConfigError, match="dir_imagenet: not set"):
        require_dir(config, "dir_imagenet")
    with pytest.raises(ConfigError, match=r"weights.encoder: file not found: .*deit.pth"):
        require_file("weights.encoder", str(tmp_path / "deit.pth"))


RECO_PLUS_BASE = {"dir_ckpt": "x", "dir_dataset": "y", "dataset_name": "cityscapes"}


@pytest.mark.parametrize("key, bad, good", [
    ("n_imgs", 0, 1), ("batch_size", 0, 1), ("n_workers", -1, 0), ("crf_workers", -1, 0),
    ("n_visualisations", -1, 0), ("index_batch_size", 0, 1), ("index_shard_size", 0, 1), ("index_workers", -1, 0),
    ("image_short_side", 0, None), ("eval_short_side", 0, 1), ("slide_stride", 0, 1), ("slide_window", 0, None),
])
def test_reco_ranges_name_the_key(tmp_path, key, bad, good):
    with pytest.raises(ConfigError, match=f"'{key}' must be >"):
        load_reco_config(_write(tmp_path, {"dir_ckpt": "x", key: bad}))
    assert getattr(load_reco_config(_write(tmp_path, {"dir_ckpt": "x", key: good})), key) == good


@pytest.mark.parametrize("key, bad, good", [
    ("batch_size", 0, 1), ("eval_batch_size", 0, 1), ("iter_train", 0, 1), ("iter_val", 0, 1), ("log_every", 0, 1),
    ("crop_size", 0, 1), ("n_workers", -1, 0), ("crf_workers", -1, 0), ("n_visualisations", -1, 0),
    ("lr", 0.0, 1e-9), ("min_lr", -1e-9, 0.0), ("weight_decay", -1e-9, 0.0), ("backbone_lr_ratio", -0.1, 0.0),
])
def test_reco_plus_ranges_name_the_key(tmp_path, key, bad, good):
    with pytest.raises(ConfigError, match=f"'{key}' must be >"):
        load_reco_plus_config(_write(tmp_path, {**RECO_PLUS_BASE, key: bad}))
    assert getattr(load_reco_plus_config(_write(tmp_path, {**RECO_PLUS_BASE, key: good})), key) == good
