"""main_reco.py end to end on synthetic trees.

The known-answer tests swap in the colour-coded CLIP, DenseCLIP and encoder of colour_models.py: every
category has a colour, ImageNet images show one colour each, and scenes are painted in class colours.
Retrieval, co-segmentation and inference must then segment the scenes almost perfectly, which a
pipeline that merely runs cannot do.
"""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import main_reco
import networks
from demo.colour_models import ColourCLIP, ColourDenseCLIP, ColourEncoder, ColourTokenizer
from demo.world import colour_world  # noqa: F401  (imported from here by other tests)
from datasets import metadata
from synthetic import write_cityscapes, write_imagenet


def install_colour_models(monkeypatch, vocabulary, colours):
    def build_clip(arch, weights, device="cpu", precision="fp32", key="weights.clip"):
        return ColourCLIP(colours).to(device), ColourTokenizer(vocabulary, len(colours))

    monkeypatch.setattr(networks, "build_clip", build_clip)
    monkeypatch.setattr(networks, "build_encoder", lambda arch, weights, key="": ColourEncoder(colours))
    import reco_api.models as common

    monkeypatch.setattr(common, "DenseCLIP", lambda clip_model: ColourDenseCLIP(colours))


def write_imagenet_of(root, colours, n_per_class=3):
    wnids = [f"n{20000000 + i}" for i in range(len(colours))]
    write_imagenet(root, "train", wnids, n_per_class=n_per_class, colours=colours)
    return wnids


def colour_cityscapes(tmp_path, monkeypatch, split="val", n_images=2):
    """The colour world of Cityscapes' categories and contexts: colour-coded models installed, and an
    ImageNet-like collection and a Cityscapes split written under tmp_path. -> (vocabulary, written split)"""
    vocabulary, colours = colour_world(metadata.categories("cityscapes") + ["tree", "person"])
    install_colour_models(monkeypatch, vocabulary, colours)
    write_imagenet_of(tmp_path / "ImageNet2012", colours)
    return vocabulary, write_cityscapes(tmp_path / "cityscapes", split, n_images=n_images)


def reco_config(tmp_path, **extra):
    config = {
        "dir_ckpt": str(tmp_path / "ckpt"), "dir_dataset": str(tmp_path / "cityscapes"),
        "dir_imagenet": str(tmp_path / "ImageNet2012"), "dataset_name": "cityscapes",
        "clip_arch": "tiny-vit-clip", "dense_clip_arch": "tiny-rn-clip", "encoder_arch": "tiny-vit",
        "weights": {"clip": "random", "dense_clip": "random", "encoder": "random"},
        "n_imgs": 3, "batch_size": 2, "n_workers": 0, "n_visualisations": 2, "device": "cpu",
        "crf_workers": 1, "index_batch_size": 16, "index_shard_size": 32,
        "cosegmentation_pictures": False,  # about 0.3 s each; the tests that look at them turn them on
    }
    config.update(extra)
    path = tmp_path / "reco.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_dir(config_path, split="val"):
    """The run directory of a config (tiny models are not the paper's setting: the name has a setting hash)."""
    from entry.run_dirs import run_dir_of
    from utils.config import load_reco_config

    return run_dir_of(load_reco_config(config_path), split)


def reference_pickle(config_path):
    from entry.run_dirs import reference_pickle_path
    from utils.config import load_reco_config

    return reference_pickle_path(load_reco_config(config_path))


def test_known_answer_cityscapes_through_main_reco(tmp_path, monkeypatch):
    categories = metadata.categories("cityscapes")
    vocabulary, _ = colour_cityscapes(tmp_path, monkeypatch, n_images=3)
    config = reco_config(tmp_path, cosegmentation_pictures=True)

    assert main_reco.main(["--config", str(config), "--stage", "index"]) == 0
    assert main_reco.main(["--config", str(config)]) == 0

    out = run_dir(config)
    assert out.parent.name.startswith("tiny_vit_in_train_ce_ta_") and out.parent.name.endswith("_dc")
    results = json.loads((out / "results.json").read_text())
    results_crf = json.loads((out / "results_crf.json").read_text())
    assert results["Mean IoU"] >= 0.9, results
    assert results_crf["Mean IoU"] >= 0.9, results_crf
    for name in ("road", "building", "vegetation", "sky", "car"):
        assert results[name] >= 0.8, (name, results[name])
    assert set(categories) <= set(results)
    for name in ("0000.png", "0001.png", "config.json", "reco.log", "coseg_car.png", "coseg_tree.png"):
        assert (out / name).is_file(), name
    assert not (out / "coseg_vegetation.png").exists()  # vegetation reuses the tree context

    # The reference pickle is written under the original name plus the setting hash (not the paper's
    # setting), with its settings record next to it; each reference is its class colour.
    from utils.io import safe_load_pickle

    pickle_path = reference_pickle(config)
    assert pickle_path.name == f"{out.parent.name[:-3]}_cat_to_img_feature_k3.pkl"
    assert json.loads((pickle_path.parent / (pickle_path.name + ".meta.json")).read_text())["setting"]["n_imgs"] == 3
    refs = safe_load_pickle(pickle_path)
    assert list(refs) == categories
    assert torch.equal(refs["vegetation"], refs["road"]) is False
    assert int(refs["car"].argmax()) == vocabulary["car"] and int(refs["sky"].argmax()) == vocabulary["sky"]

    # A second run reuses the pickle: it must not need ImageNet at all.
    import shutil

    shutil.rmtree(tmp_path / "ImageNet2012")
    assert main_reco.main(["--config", str(config)]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["Mean IoU"] == pytest.approx(results["Mean IoU"])


def test_pseudo_masks_of_the_train_split(tmp_path, monkeypatch):
    _, split = colour_cityscapes(tmp_path, monkeypatch, "train")
    config = reco_config(tmp_path)
    assert main_reco.main(["--config", str(config), "--split", "train"]) == 0  # builds the index itself

    out = run_dir(config, "train")
    assert not list(out.glob("coseg_*.png"))  # cosegmentation_pictures: false
    for name in split.names:
        for sub in ("dt", "dt_crf"):
            mask = np.asarray(Image.open(out / sub / name))
            assert mask.shape == (320, 320) and mask.dtype == np.uint8 and mask.max() < 27
    # the pseudo-mask of a scene matches its ground truth on most pixels
    from datasets.benchmarks import build_benchmark

    item = build_benchmark("cityscapes", tmp_path / "cityscapes", "train")[0]
    mask = torch.from_numpy(np.asarray(Image.open(out / "dt_crf" / item["name"])).astype(np.int64))
    valid = item["label"] >= 0
    assert float((mask[valid] == item["label"][valid]).float().mean()) > 0.9

    # Resume: masks already written are scored from disk and not recomputed; missing ones are.
    results = (out / "results_crf.json").read_text()
    first, second = split.names
    (out / "dt_crf" / first).unlink()
    kept = (out / "dt_crf" / second).stat().st_mtime_ns
    config.write_text(config.read_text().replace("batch_size: 2", "batch_size: 1"))
    assert main_reco.main(["--config", str(config), "--split", "train"]) == 0
    assert (out / "dt_crf" / first).is_file()
    assert (out / "dt_crf" / second).stat().st_mtime_ns == kept
    assert (out / "results_crf.json").read_text() == results
    assert "reused" in (out / "reco.log").read_text()


def test_tiny_random_models_run_val_and_train(tmp_path):
    write_imagenet(tmp_path / "ImageNet2012", "train", n_per_class=2)
    write_cityscapes(tmp_path / "cityscapes", "val", n_images=2)
    write_cityscapes(tmp_path / "cityscapes", "train", n_images=2)
    config = reco_config(tmp_path, n_imgs=2)
    assert main_reco.main(["--config", str(config), "--stage", "references"]) == 0
    assert reference_pickle(config).is_file()
    assert not (run_dir(config) / "results.json").exists()
    assert main_reco.main(["--config", str(config)]) == 0
    assert main_reco.main(["--config", str(config), "--split", "train"]) == 0
    assert (run_dir(config) / "results_crf.json").is_file()
    assert len(list((run_dir(config, "train") / "dt_crf").iterdir())) == 2


def test_bad_input_gives_clear_errors(tmp_path, capsys):
    write_cityscapes(tmp_path / "cityscapes", "val", n_images=1)
    # missing dataset directory
    config = reco_config(tmp_path, dir_dataset=str(tmp_path / "nowhere"))
    assert main_reco.main(["--config", str(config)]) == 2
    assert "dir_dataset: directory not found" in capsys.readouterr().err
    # unknown key
    config.write_text(config.read_text() + "n_image: 5\n")
    assert main_reco.main(["--config", str(config)]) == 2
    assert "unknown key 'n_image'" in capsys.readouterr().err
    # weight file absent (offline)
    config = reco_config(tmp_path, encoder_arch="DeiT-S/16-SIN",
                         weights={"clip": "random", "dense_clip": "random", "encoder": str(tmp_path / "deit.pth")})
    assert main_reco.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "weights.encoder" in err and "deit.pth" in err
    # no ImageNet images to build the index from, and no published pickle
    config = reco_config(tmp_path)
    (tmp_path / "ImageNet2012" / "train").mkdir(parents=True)
    assert main_reco.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "dir_imagenet: no images" in err and "filename_to_tiny_vit_clip_train_img_embedding.pkl" in err


def test_index_built_with_another_clip_is_refused(tmp_path, monkeypatch, capsys):
    write_imagenet(tmp_path / "ImageNet2012", "train", n_per_class=2)
    write_cityscapes(tmp_path / "cityscapes", "val", n_images=1)
    config = reco_config(tmp_path, n_imgs=2)
    assert main_reco.main(["--config", str(config), "--stage", "index"]) == 0
    # same arch name, but a CLIP with another embedding size now
    vocabulary, colours = colour_world(["road"])
    install_colour_models(monkeypatch, vocabulary, colours)
    assert main_reco.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "dimension" in err or "dim" in err


def test_stage_index_converts_the_published_pickle(tmp_path):
    import pickle

    from image_index.storage import load_index

    (tmp_path / "ImageNet2012").mkdir()
    g = torch.Generator().manual_seed(0)
    published = {f"n0144_{i}.JPEG": torch.nn.functional.normalize(torch.randn(32, generator=g), dim=0)
                 for i in range(5)}
    (tmp_path / "ImageNet2012" / "filename_to_tiny_vit_clip_train_img_embedding.pkl").write_bytes(
        pickle.dumps(published))
    config = reco_config(tmp_path)
    assert main_reco.main(["--config", str(config), "--stage", "index"]) == 0
    index = load_index(tmp_path / "ImageNet2012" / "index" / "tiny_vit_clip_train", expected_dim=32)
    assert index.filenames == list(published)
    expected = torch.stack(list(published.values())).numpy().astype(np.float16)
    np.testing.assert_array_equal(np.asarray(index.embeddings), expected)
