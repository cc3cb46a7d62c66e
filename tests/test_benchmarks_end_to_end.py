"""COCO-Stuff and KITTI-STEP through main_reco.py, and the authors' published reference pickles."""
import json
import pickle

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import main_reco
from datasets import metadata
from synthetic import write_coco_stuff, write_kitti_step
from test_io import pickle_as_if_saved_on_cuda

ENCODER_DIM = 32  # tiny-vit width
PUBLISHED = "deit_s_16_sin_in_train_ce_ta_cat_to_img_feature_k50.pkl"


@pytest.fixture(autouse=True)
def tiny_models_under_the_papers_names(monkeypatch):
    """The config names the paper's models (the authors' pickle is accepted only for their setting); the
    networks built are tiny random ones, so their weight files are empty stand-ins."""
    import networks

    real_encoder, real_clip = networks.build_encoder, networks.build_clip
    monkeypatch.setattr(networks, "build_encoder", lambda arch, weights, key="": real_encoder("tiny-vit", "random"))
    monkeypatch.setattr(networks, "build_clip", lambda arch, weights, device="cpu", precision="fp32", key="":
                        real_clip("tiny-rn-clip", "random", device=device, precision=precision))


def config_for(tmp_path, dataset_name, root, **extra):
    weights = tmp_path / "weights"  # stand-ins named as released (the builders above never read them)
    weights.mkdir(exist_ok=True)
    for name in ("deit_s_sin_dist.pth", "ViT-L-14-336px.pt", "RN50x16.pt"):
        (weights / name).write_bytes(b"")
    config = {
        "dir_ckpt": str(tmp_path / "ckpt"), "dir_dataset": str(root), "dataset_name": dataset_name,
        "weights": {"encoder": str(weights / "deit_s_sin_dist.pth"), "clip": str(weights / "ViT-L-14-336px.pt"),
                    "dense_clip": str(weights / "RN50x16.pt")},
        # DenseCLIP inference is off: references come from the published pickle
        "dense_clip_inference": False, "n_imgs": 50, "batch_size": 2, "n_workers": 0,
        "n_visualisations": 1, "device": "cpu", "crf_workers": 1,
    }
    config.update(extra)
    path = tmp_path / f"{dataset_name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_published_references(root, categories, cuda=True, dim=ENCODER_DIM):
    """A reference pickle in the authors' format and under their name, without a settings record."""
    g = torch.Generator().manual_seed(0)
    refs = {name: torch.nn.functional.normalize(torch.randn(dim, generator=g), dim=0) for name in categories}
    data = pickle_as_if_saved_on_cuda(refs) if cuda else pickle.dumps(refs)
    (root / PUBLISHED).write_bytes(data)
    return refs


@pytest.mark.slow
def test_coco_stuff_val_and_train10k_with_published_cuda_references(tmp_path):
    root = tmp_path / "cocostuff"
    written = write_coco_stuff(root, n_val=1, n_train10k=1, size=(40, 56))
    write_published_references(root, metadata.categories("coco_stuff"), cuda=True)
    # ImageNet is absent (dir_imagenet unset): the published references make it unnecessary
    config = config_for(tmp_path, "coco_stuff", root)
    assert main_reco.main(["--config", str(config)]) == 0
    out = tmp_path / "ckpt/coco_stuff/val/reco/deit_s_16_sin_in_train_ce_ta/k050"
    results = json.loads((out / "results_crf.json").read_text())
    assert set(metadata.eval_categories("coco_stuff")) <= set(results)  # scored on the 27 coarse classes

    assert main_reco.main(["--config", str(config), "--split", "train"]) == 0
    out = tmp_path / "ckpt/coco_stuff/train/reco/deit_s_16_sin_in_train_ce_ta/k050"
    for name in written["train"].names:
        assert name.startswith("COCO_train2014_") and name.endswith(".png")
        for sub in ("dt", "dt_crf"):
            mask = np.asarray(Image.open(out / sub / name))
            assert mask.shape == (320, 320) and mask.max() <= 26


def test_kitti_step_full_resolution_two_sizes(tmp_path):
    root = tmp_path / "kitti"
    sequences = {"0000": ((40, 120), 2), "0001": ((48, 96), 1)}
    write_kitti_step(root, "val", sequences=sequences)
    train = write_kitti_step(root, "train", sequences=sequences)
    write_published_references(root, metadata.categories("kitti_step"), cuda=False)
    config = config_for(tmp_path, "kitti_step", root)
    assert main_reco.main(["--config", str(config)]) == 0
    assert main_reco.main(["--config", str(config), "--split", "train"]) == 0
    out = tmp_path / "ckpt/kitti_step/train/reco/deit_s_16_sin_in_train_ce_ta/k050"
    for name, label in zip(train.names, train.labels):
        for sub in ("dt", "dt_crf"):
            mask = np.asarray(Image.open(out / sub / name))  # dt/<seq>/<frame>.png at full resolution
            assert mask.shape == label.shape and mask.max() <= 18


def test_published_pickle_with_other_categories_is_refused(tmp_path, capsys):
    root = tmp_path / "kitti"
    write_kitti_step(root, "val", sequences={"0000": ((32, 64), 1)})
    wrong = metadata.categories("kitti_step")[:-1] + ["zebra"]
    write_published_references(root, wrong)
    assert main_reco.main(["--config", str(config_for(tmp_path, "kitti_step", root))]) == 2
    err = capsys.readouterr().err
    assert "other categories" in err and "bicycle" in err and "zebra" in err


def test_published_pickle_of_another_encoder_is_refused(tmp_path, capsys):
    root = tmp_path / "kitti"
    write_kitti_step(root, "val", sequences={"0000": ((32, 64), 1)})
    write_published_references(root, metadata.categories("kitti_step"), dim=384)
    assert main_reco.main(["--config", str(config_for(tmp_path, "kitti_step", root))]) == 2
    assert "another encoder" in capsys.readouterr().err
