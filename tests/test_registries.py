"""Registries: each entry is complete and consistent; adding one is one entry; unknown names list the known.

Encoder and CLIP entries are built at random init and must give features of the declared shape at two
input sizes (tests/test_registry_networks.py); this file holds the dataset and config-name parts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import main_reco
import main_reco_plus
from datasets import metadata
from datasets.benchmarks import build_benchmark
from datasets.cityscapes import CityscapesBenchmark
from datasets.registry import (BENCHMARKS, BenchmarkSpec, benchmark_names, get_benchmark, register_benchmark,
                               unregister_benchmark)
from tests.synthetic import write_cityscapes


# ----------------------------------------------------------------------------------------------- datasets
@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_every_registered_benchmark_has_consistent_metadata(name):
    spec = get_benchmark(name)
    predicted, scored = metadata.categories(name), metadata.eval_categories(name)
    assert predicted and scored and len(set(predicted)) == len(predicted)
    assert metadata.palette(name).shape == (len(scored), 3)
    lut = metadata.prediction_to_eval(name)
    if spec.prediction_to_eval is None:
        assert lut is None
        if spec.eval_categories is None:
            assert scored == predicted
    else:
        assert lut.shape == (len(predicted),) and 0 <= lut.min() and lut.max() < len(scored)
    assert "val" in spec.splits


def test_original_benchmarks_come_first_in_registration_order():
    assert benchmark_names()[:3] == ("cityscapes", "coco_stuff", "kitti_step")


def test_a_new_benchmark_is_one_registry_entry(tmp_path):
    """A benchmark registered with one spec is read by build_benchmark and every metadata function."""
    split = write_cityscapes(tmp_path / "cs", "val", n_images=2)
    names = metadata.categories("cityscapes")
    spec = BenchmarkSpec(
        name="cityscapes_coarse_test",
        reader=CityscapesBenchmark,  # a callable (spec, root, split), here an existing reader
        categories=lambda: names,
        eval_categories=lambda: ["flat", "other"],
        palette=lambda: np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]]),
        prediction_to_eval=lambda: np.array([0 if n in ("road", "sidewalk") else 1 for n in names]),
        splits=("val",),
    )
    register_benchmark(spec)
    try:
        assert "cityscapes_coarse_test" in benchmark_names()
        dataset = build_benchmark("cityscapes_coarse_test", tmp_path / "cs", "val")
        assert len(dataset) == len(split.names)
        assert metadata.eval_categories("cityscapes_coarse_test") == ["flat", "other"]
        assert metadata.palette("cityscapes_coarse_test").tolist() == [[1, 2, 3], [4, 5, 6]]
        assert metadata.prediction_to_eval("cityscapes_coarse_test")[0] == 0  # road
        with pytest.raises(ValueError, match="unknown split 'train'; known: val"):
            build_benchmark("cityscapes_coarse_test", tmp_path / "cs", "train")
        with pytest.raises(ValueError, match="already registered"):
            register_benchmark(spec)
    finally:
        unregister_benchmark("cityscapes_coarse_test")
    assert "cityscapes_coarse_test" not in benchmark_names()


def test_spec_mistakes_are_reported():
    with pytest.raises(ValueError, match="name"):
        BenchmarkSpec(name="", reader=CityscapesBenchmark, categories="x.json", palette="y.json")
    bad = BenchmarkSpec(name="bad_lut_test", reader=CityscapesBenchmark, categories=lambda: ["a", "b"],
                        eval_categories=lambda: ["a"], palette=lambda: [[0, 0, 0]],
                        prediction_to_eval=lambda: np.array([0, 1]))
    register_benchmark(bad)
    try:
        with pytest.raises(ValueError, match="prediction_to_eval must map 2 categories to 0..0"):
            metadata.prediction_to_eval("bad_lut_test")
    finally:
        unregister_benchmark("bad_lut_test")


# ----------------------------------------------------------------------------------- config-name checks
def _write(tmp_path, config, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_unknown_dataset_name_fails_at_load_in_both_entry_points(tmp_path, capsys):
    reco = _write(tmp_path, {"dir_ckpt": str(tmp_path), "dataset_name": "citiscapes"})
    assert main_reco.main(["--config", reco]) == 2
    err = capsys.readouterr().err.splitlines()[0]
    assert err.startswith("error: ") and err.endswith(
        "dataset_name: unknown value 'citiscapes'; known: " + ", ".join(benchmark_names()))
    plus = _write(tmp_path, {"dir_ckpt": str(tmp_path), "dir_dataset": str(tmp_path),
                             "dataset_name": "kitti"}, "plus.yaml")
    assert main_reco_plus.main(["--config", plus]) == 2
    known = ", ".join(benchmark_names())
    assert f"dataset_name: unknown value 'kitti'; known: {known}" in capsys.readouterr().err
    assert not (tmp_path / "kitti").exists() and not (tmp_path / "citiscapes").exists()


# ------------------------------------------------------------------------------------------ CRF backends
def test_a_new_crf_backend_is_one_registry_entry():
    import torch

    from utils.crf import crf_backend_names, dense_crf_batch, register_crf_backend, unregister_crf_backend

    def no_refinement(images, probabilities, n_workers, chunk_size):
        return probabilities

    register_crf_backend("none", no_refinement)
    try:
        assert "none" in crf_backend_names()
        images = np.zeros((1, 4, 6, 3), dtype=np.uint8)
        logits = torch.randn(1, 3, 2, 3)
        out = dense_crf_batch(images, logits, backend="none")
        assert out.shape == (1, 3, 4, 6) and torch.allclose(out.sum(1), torch.ones(1, 4, 6))
    finally:
        unregister_crf_backend("none")
    assert crf_backend_names() == ("auto", "pydensecrf", "torch")


# ----------------------------------------------------------------------------------- every checked key
_RECO_BASE = {"dataset_name": "cityscapes"}


@pytest.mark.parametrize("key, value, expected", [
    ("encoder_arch", "DINOv2-S/16", "DeiT-S/16-SIN, DINOv2-S/14"),
    ("clip_arch", "ViT-L/14-336", "ViT-L/14@336px, ViT-L/14"),
    ("dense_clip_arch", "ViT-B/16", "RN50, RN101, RN50x4, RN50x16, RN50x64, tiny-rn-clip"),
    ("crf_backend", "cuda", "auto, pydensecrf, torch"),
    ("dataset_name", "pascal", "cityscapes, coco_stuff, kitti_step"),
])
def test_unknown_name_is_one_error_line_listing_the_known(tmp_path, capsys, key, value, expected):
    config = _write(tmp_path, {"dir_ckpt": str(tmp_path / "ckpt"), **_RECO_BASE, key: value})
    assert main_reco.main(["--config", config, "--stage", "index"]) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("error: ") and f"{key}: unknown value {value!r}; known: " in first, first
    assert expected in first, first
    assert not (tmp_path / "ckpt").exists()  # nothing ran


def test_open_clip_spellings_and_known_names_pass(tmp_path):
    from reco_api.config_checks import check_reco_names
    from utils.config import load_reco_config

    config = load_reco_config(_write(tmp_path, {"dir_ckpt": "x", "clip_arch": "ViT-B-16-SigLIP",
                                                "dense_clip_arch": "RN50x16", "encoder_arch": "DINOv2-B/14-reg"}))
    assert check_reco_names(config) is config


@pytest.mark.parametrize("key, value", [("segmentor_name", "deeplabv3plus_vgg"), ("crf_backend", "gpu")])
def test_reco_plus_unknown_names(tmp_path, capsys, key, value):
    config = _write(tmp_path, {"dir_ckpt": str(tmp_path / "ckpt"), "dir_dataset": str(tmp_path),
                               "dataset_name": "cityscapes", key: value})
    assert main_reco_plus.main(["--config", config]) == 2
    assert f"{key}: unknown value {value!r}; known: " in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[1].joinpath("configs").rglob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_config_names_registered_parts(path):
    from reco_api.config_checks import check_reco_names, check_reco_plus_names
    from utils.config import load_reco_config, load_reco_plus_config

    if path.name.startswith("reco_plus"):
        check_reco_plus_names(load_reco_plus_config(path))
    else:
        check_reco_names(load_reco_config(path))
