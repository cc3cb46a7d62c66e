"""Every user mistake is one line on stderr naming the key or argument, and rc 2 (both entry points)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import main_reco
import main_reco_plus
from utils.config import load_reco_config
from utils.io import save_json

REPO = Path(__file__).resolve().parents[1]


def error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.startswith("error:")]


def reco_yaml(tmp_path, **extra) -> Path:
    config = {"dir_ckpt": str(tmp_path / "ckpt"), "dir_dataset": str(tmp_path / "cityscapes"),
              "dir_imagenet": str(tmp_path / "ImageNet2012"), "dataset_name": "cityscapes",
              "clip_arch": "tiny-vit-clip", "dense_clip_arch": "tiny-rn-clip", "encoder_arch": "tiny-vit",
              "weights": {"clip": "random", "dense_clip": "random", "encoder": "random"},
              "n_imgs": 2, "n_workers": 0, "device": "cpu", **extra}
    path = tmp_path / "reco.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def plus_yaml(tmp_path, **extra) -> Path:
    config = {"dir_ckpt": str(tmp_path / "ckpt"), "dir_dataset": str(tmp_path / "cityscapes"),
              "dataset_name": "cityscapes", "segmentor_name": "deeplabv3plus_tiny", "n_workers": 0,
              "weights": {"backbone": "random"}, "device": "cpu", **extra}
    path = tmp_path / "plus.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("entry", ["reco", "reco_plus"])
def test_device_gpu_in_the_config_names_key_and_file(tmp_path, capsys, entry):
    path = reco_yaml(tmp_path, device="gpu") if entry == "reco" else plus_yaml(tmp_path, device="gpu")
    module = main_reco if entry == "reco" else main_reco_plus
    assert module.main(["--config", str(path)]) == 2
    (line,) = error_lines(capsys)
    assert str(path) in line and "device: 'gpu' is not a device" in line and "cuda:N" in line


@pytest.mark.parametrize("entry", ["reco", "reco_plus"])
def test_device_gpu_on_the_command_line_names_the_argument(tmp_path, capsys, entry):
    path = reco_yaml(tmp_path) if entry == "reco" else plus_yaml(tmp_path)
    module = main_reco if entry == "reco" else main_reco_plus
    assert module.main(["--config", str(path), "--device", "gpu"]) == 2
    (line,) = error_lines(capsys)
    assert line.startswith("error: --device: 'gpu' is not a device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("entry", ["reco", "reco_plus"])
def test_cuda_on_a_machine_without_cuda(tmp_path, capsys, entry):
    (tmp_path / "cityscapes").mkdir()
    path = reco_yaml(tmp_path, device="cuda") if entry == "reco" else plus_yaml(tmp_path, device="cuda")
    module = main_reco if entry == "reco" else main_reco_plus
    assert module.main(["--config", str(path)]) == 2
    (line,) = error_lines(capsys)
    assert "device: 'cuda' requested but CUDA is not available" in line


@pytest.mark.parametrize("content", [b"hello\n", os.urandom(3000)])
def test_junk_weights_for_reco_plus(tmp_path, capsys, content):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(content)
    (tmp_path / "cityscapes").mkdir()  # the inputs are checked first; here only the weights are wrong
    assert main_reco_plus.main(["--config", str(plus_yaml(tmp_path)), "--weights", str(junk)]) == 2
    (line,) = error_lines(capsys)
    assert line.startswith(f"error: --weights: cannot read {junk} as a PyTorch state_dict (")
    assert "Error" in line  # the exception type, never a bare number such as ': 101'


def test_junk_encoder_weights_name_key_file_and_reason(tmp_path, capsys):
    junk = tmp_path / "deit.pth"
    junk.write_text("hello\n")
    from synthetic import write_cityscapes, write_imagenet

    write_cityscapes(tmp_path / "cityscapes", "val", n_images=1)
    write_imagenet(tmp_path / "ImageNet2012", "train", n_per_class=1)
    path = reco_yaml(tmp_path, weights={"clip": "random", "dense_clip": "random", "encoder": str(junk)})
    assert main_reco.main(["--config", str(path), "--stage", "references"]) == 2
    (line,) = error_lines(capsys)
    assert f"weights.encoder: cannot read {junk} as a PyTorch checkpoint (KeyError: 101)" in line
    assert str(path) in line


def test_scripts_without_arguments_print_their_usage():
    result = subprocess.run(["bash", "scripts/reco_plus.sh"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "Usage: bash scripts/reco_plus.sh DATASET" in result.stderr and "unbound" not in result.stderr
    result = subprocess.run(["bash", "scripts/download_artefacts.sh"], cwd=REPO, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "DATASET" in result.stderr


@pytest.mark.parametrize("suffix", ["try", "_try"])
def test_suffix_gives_one_underscore(tmp_path, suffix):
    config = load_reco_config(reco_yaml(tmp_path), {"suffix": suffix})
    assert config.experiment_name == "tiny_vit_in_train_ce_ta_try"


def test_results_json_is_strict(tmp_path):
    save_json(tmp_path / "r.json", {"Mean IoU": 0.5, "car": float("nan"), "sky": [float("inf"), 1.0]})
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert loaded == {"Mean IoU": 0.5, "car": None, "sky": [None, 1.0]}
    assert not any(isinstance(v, float) and math.isnan(v) for v in loaded.values())


def test_run_dir_results_are_strict_json(tmp_path):
    """A real (tiny) evaluation: classes absent from the synthetic scenes are null in results.json."""
    from synthetic import write_cityscapes, write_imagenet

    write_imagenet(tmp_path / "ImageNet2012", "train", n_per_class=2)
    write_cityscapes(tmp_path / "cityscapes", "val", n_images=1)
    assert main_reco.main(["--config", str(reco_yaml(tmp_path, n_visualisations=0))]) == 0
    results = next((tmp_path / "ckpt").rglob("results.json"))
    loaded = json.loads(results.read_text(), parse_constant=lambda c: pytest.fail(f"constant {c}"))
    assert loaded["bicycle"] is None and isinstance(loaded["Mean IoU"], float)


def test_every_missing_input_of_the_run_in_one_message_naming_the_config(tmp_path, capsys):
    path = reco_yaml(tmp_path, dir_imagenet=None, encoder_arch="DeiT-S/16-SIN", clip_arch="ViT-L/14@336px",
                     dense_clip_arch="RN50x16",
                     weights={"clip": str(tmp_path / "ViT-L-14-336px.pt"), "encoder": str(tmp_path / "deit.pth")})
    assert main_reco.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: 5 inputs of this run are missing:")
    for expected in ("dir_dataset: directory not found", "dir_imagenet: not set",
                     f"weights.clip: file not found: {tmp_path / 'ViT-L-14-336px.pt'}",
                     f"weights.encoder: file not found: {tmp_path / 'deit.pth'}", "weights.dense_clip: not set"):
        assert expected in err, expected
    assert not (tmp_path / "ckpt").exists()  # nothing was started


def test_n_imgs_larger_than_the_index_is_found_before_any_model_is_built(tmp_path, capsys, monkeypatch):
    from synthetic import write_cityscapes, write_imagenet

    write_imagenet(tmp_path / "ImageNet2012", "train", n_per_class=2)  # 10 images
    write_cityscapes(tmp_path / "cityscapes", "val", n_images=1)
    assert main_reco.main(["--config", str(reco_yaml(tmp_path)), "--stage", "index"]) == 0
    import networks

    def no_models(*args, **kwargs):
        raise AssertionError("a model was built before n_imgs was checked")

    monkeypatch.setattr(networks, "build_encoder", no_models)
    monkeypatch.setattr(networks, "build_clip", no_models)
    assert main_reco.main(["--config", str(reco_yaml(tmp_path, n_imgs=50))]) == 2
    (line,) = error_lines(capsys)
    assert "n_imgs: 50 images per category asked for" in line and "holds only 10 images" in line


@pytest.mark.parametrize("clip_arch, published", [("ViT-L/14@336px", True), ("tiny-vit-clip", False)])
def test_missing_index_suggests_a_pickle_only_where_the_authors_published_one(tmp_path, clip_arch, published):
    from image_index.published import ensure_index
    from image_index.storage import IndexNotFoundError

    with pytest.raises(IndexNotFoundError) as error:
        ensure_index(tmp_path, clip_arch, "train")
    message = str(error.value)
    assert "--stage index" in message
    assert ("download the authors'" in message) == published
    if not published:
        assert "published an index pickle only for ViT-L/14@336px train" in message
    with pytest.raises(IndexNotFoundError) as error:
        ensure_index(tmp_path, "ViT-L/14@336px", "val")
    assert "download" not in str(error.value)


def test_n_imgs_larger_than_the_index_for_own_images(tmp_path, capsys, monkeypatch):
    from synthetic import write_imagenet

    write_imagenet(tmp_path / "ImageNet2012", "train", n_per_class=2)
    assert main_reco.main(["--config", str(reco_yaml(tmp_path)), "--stage", "index"]) == 0
    (tmp_path / "photos").mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32), (0, 0, 255)).save(tmp_path / "photos" / "sky.png")
    import networks

    monkeypatch.setattr(networks, "build_encoder", lambda *a, **k: pytest.fail("model built before the check"))
    argv = ["--config", str(reco_yaml(tmp_path, n_imgs=50)), "--images", str(tmp_path / "photos"),
            "--categories", "sky,car", "--out", str(tmp_path / "out")]
    assert main_reco.main(argv) == 2
    (line,) = error_lines(capsys)
    assert "n_imgs: 50 images per category asked for" in line
    assert not (tmp_path / "out").exists()
