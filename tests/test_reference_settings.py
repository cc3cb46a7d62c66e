"""Every cached artefact carries the setting it was made with (reco_api/reference_setting.py).

Changing any key that the original experiment name ignores must give another reference pickle and run
directory (computed afresh), and must leave the first setting's files untouched. The colour-coded models
stand in for every network, so any architecture name builds in no time, and retrieval plus
co-segmentation is replaced by a counting stub (the end-to-end tests run the real thing).
"""
import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import main_reco
from datasets import metadata
from entry.reco_benchmark import reference_pickle_differences
from entry.run_dirs import reference_pickle_path, run_dir_of
from reco_api import reference_setting
from reco_api.reference_cache import FileReferenceCache
from reco_api.settings import reference_settings
from synthetic import write_cityscapes
from test_end_to_end import colour_world, install_colour_models, reco_config, write_imagenet_of
from utils.config import load_reco_config
from utils.io import save_png



def cache_in(root, config):
    """The per-category reference cache of `config` under `root`."""
    return FileReferenceCache(dataclasses.replace(reference_settings(config), cache_root=root))


VARIANTS = {
    "context_categories": {"context_categories": ["tree", "sky", "building", "road"]},
    "reference_aliases": {"reference_aliases": {}},
    "clip_arch": {"clip_arch": "tiny-rn-clip"},
    "dense_clip_arch": {"dense_clip_arch": "RN50"},
    "encoder_weights": "encoder file",  # filled in with a file path below
    "reproduce_seed_slice_bug": {"reproduce_seed_slice_bug": True},
}


def install_stubs(monkeypatch, world):
    """Colour models for every arch name; references computed by a stub that records each call."""
    import entry.reco_benchmark as benchmark

    install_colour_models(monkeypatch, world["vocabulary"], world["colours"])
    calls = []

    def compute_references(config, categories, device, encoder, dense, on_reference=None):
        calls.append(config)
        g = torch.Generator().manual_seed(len(calls))
        return {name: torch.randn(encoder.embed_dim, generator=g) for name in categories}

    monkeypatch.setattr(benchmark, "compute_references", compute_references)
    return calls


def _files(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base_world(tmp_path_factory):
    """One evaluated run of the base setting; its reference pickle, sidecar and run directory."""
    root = tmp_path_factory.mktemp("settings")
    vocabulary, colours = colour_world(metadata.categories("cityscapes") + ["tree", "person"])
    write_cityscapes(root / "cityscapes", "val", n_images=1)
    write_imagenet_of(root / "ImageNet2012", colours, n_per_class=1)  # the run checks it is there (not read)
    world = {"root": root, "vocabulary": vocabulary, "colours": colours}
    with pytest.MonkeyPatch.context() as monkeypatch:
        calls = install_stubs(monkeypatch, world)
        config = reco_config(root, n_imgs=2, batch_size=1, n_visualisations=0)
        assert main_reco.main(["--config", str(config)]) == 0
        assert len(calls) == 1
    loaded = load_reco_config(config)
    pickle_path, out = reference_pickle_path(loaded), run_dir_of(loaded, "val")
    assert (out / "results.json").is_file()
    return {**world, "config": config, "pickle": pickle_path, "pickle_bytes": pickle_path.read_bytes(),
            "run_dir": out, "run_files": _files(out)}


def _variant_config(world, key):
    root = world["root"]
    change = VARIANTS[key]
    if key == "encoder_weights":
        encoder_file = root / "other_encoder.pth"
        encoder_file.write_bytes(b"weights of another encoder")
        change = {"weights": {"clip": "random", "dense_clip": "random", "encoder": str(encoder_file)}}
    base = yaml.safe_load(world["config"].read_text())
    path = root / f"variant_{key}.yaml"
    path.write_text(yaml.safe_dump({**base, **change}))
    return path


@pytest.mark.parametrize("key", list(VARIANTS))
def test_changing_a_setting_uses_new_files_and_keeps_the_old(base_world, key, monkeypatch):
    calls = install_stubs(monkeypatch, base_world)
    config_path = _variant_config(base_world, key)
    config = load_reco_config(config_path)
    pickle_path, out = reference_pickle_path(config), run_dir_of(config, "val")
    assert pickle_path != base_world["pickle"] and out != base_world["run_dir"]
    assert not pickle_path.exists()

    assert main_reco.main(["--config", str(config_path), "--stage", "references"]) == 0
    assert len(calls) == 1  # computed, not read from the base setting's pickle
    recorded = json.loads((pickle_path.parent / (pickle_path.name + ".meta.json")).read_text())["setting"]
    assert recorded == json.loads(json.dumps(reference_setting.reference_setting(reference_settings(config))))
    assert json.loads((out / "config.json").read_text())["setting"] == reference_setting.run_setting(reference_settings(config))
    # and read back on the next run
    assert main_reco.main(["--config", str(config_path), "--stage", "references"]) == 0
    assert len(calls) == 1
    # the per-category cache: the model keys name another directory; contexts are part of each entry's
    # key, and aliases act only when references are put together
    base_cache = cache_in(base_world["root"], load_reco_config(base_world["config"])).directory
    same_directory = key in ("context_categories", "reference_aliases")
    assert (cache_in(base_world["root"], config).directory == base_cache) == same_directory
    # the base setting's pickle and run directory are untouched
    assert base_world["pickle"].read_bytes() == base_world["pickle_bytes"]
    assert _files(base_world["run_dir"]) == base_world["run_files"]


def test_a_mismatching_sidecar_recomputes_under_the_same_name(base_world, monkeypatch):
    """Same file name, other weights of that name (another size): the record tells them apart."""
    calls = install_stubs(monkeypatch, base_world)
    root = base_world["root"] / "same_name"
    root.mkdir()
    encoder_file = root / "encoder.pth"
    encoder_file.write_bytes(b"first")
    base = yaml.safe_load(base_world["config"].read_text())
    config_path = root / "reco.yaml"
    config_path.write_text(yaml.safe_dump({**base, "dir_ckpt": str(root / "ckpt"), "weights": {
        "clip": "random", "dense_clip": "random", "encoder": str(encoder_file)}}))
    assert main_reco.main(["--config", str(config_path), "--stage", "references"]) == 0
    pickle_path = reference_pickle_path(load_reco_config(config_path))
    out = run_dir_of(load_reco_config(config_path), "val")

    encoder_file.write_bytes(b"second, longer")
    assert reference_pickle_path(load_reco_config(config_path)) == pickle_path  # names hash file names only
    assert main_reco.main(["--config", str(config_path), "--stage", "references"]) == 0
    assert len(calls) == 2
    log = (out / "reco.log").read_text()
    assert "made with another setting" in log and "encoder.weights" in log
    recorded = json.loads((pickle_path.parent / (pickle_path.name + ".meta.json")).read_text())["setting"]
    assert recorded["encoder"]["weights"]["bytes"] == len(b"second, longer")

    # the same setting again reads its pickle
    assert main_reco.main(["--config", str(config_path), "--stage", "references"]) == 0
    assert len(calls) == 2 and "reading reference embeddings" in (out / "reco.log").read_text()


def test_a_pickle_without_record_is_refused_unless_the_papers_setting(tmp_path, capsys):
    """A sidecar-less pickle can only be the authors' file; for another setting it is a clear error."""
    write_cityscapes(tmp_path / "cityscapes", "val", n_images=1)
    weights = {"clip": str(tmp_path / "ViT-L-14-336px.pt"), "dense_clip": str(tmp_path / "RN50x16.pt"),
               "encoder": str(tmp_path / "deit_s_sin_dist.pth")}
    config_path = reco_config(tmp_path, encoder_arch="DeiT-S/16-SIN", clip_arch="ViT-L/14@336px",
                              dense_clip_arch="RN50x16", weights=weights, n_imgs=10)
    config = load_reco_config(config_path)
    assert reference_setting.is_paper_setting(reference_settings(config)) and not reference_setting.is_paper_setting(reference_settings(config), strict=True)
    path = reference_pickle_path(config)
    assert path.name == "deit_s_16_sin_in_train_ce_ta_cat_to_img_feature_k10.pkl"
    path.write_bytes(b"not read")
    with pytest.raises(ValueError, match="no settings record"):
        reference_pickle_differences(reference_settings(config), path)


def test_paper_setting_keeps_the_original_names(tmp_path):
    weights = {"clip": "openai", "dense_clip": str(tmp_path / "clip" / "RN50x16.pt"),
               "encoder": str(tmp_path / "deit_s_sin_dist.pth")}
    config = load_reco_config(reco_config(tmp_path, encoder_arch="DeiT-S/16-SIN", clip_arch="ViT-L/14@336px",
                                          dense_clip_arch="RN50x16", weights=weights, n_imgs=50))
    assert reference_setting.is_paper_setting(reference_settings(config), strict=True)
    assert reference_pickle_path(config).name == "deit_s_16_sin_in_train_ce_ta_cat_to_img_feature_k50.pkl"
    assert run_dir_of(config, "val").parts[-2:] == ("deit_s_16_sin_in_train_ce_ta_dc", "k050")
    # other weights files for the paper's archs are another setting
    other = load_reco_config(reco_config(tmp_path, encoder_arch="DeiT-S/16-SIN", clip_arch="ViT-L/14@336px",
                                         dense_clip_arch="RN50x16", n_imgs=50,
                                         weights={**weights, "encoder": str(tmp_path / "finetuned.pth")}))
    assert not reference_setting.is_paper_setting(reference_settings(other))
    assert reference_pickle_path(other).name.startswith("deit_s_16_sin_in_train_ce_ta_")
    assert reference_pickle_path(other) != reference_pickle_path(config)


def test_category_cache_entry_of_another_setting_is_recomputed(tmp_path):
    """The per-category cache embeds the setting record; an entry made with weights of the same name but
    another size is not returned."""
    encoder_file = tmp_path / "encoder.pth"
    encoder_file.write_bytes(b"first")
    config = load_reco_config(reco_config(tmp_path, weights={"clip": "random", "dense_clip": "random",
                                                             "encoder": str(encoder_file)}))
    cache = cache_in(tmp_path / "refs", config)
    cache.put("car", ("tree",), torch.ones(4))
    assert torch.equal(cache_in(tmp_path / "refs", config).get("car", ("tree",)), torch.ones(4))
    encoder_file.write_bytes(b"second, longer")
    again = cache_in(tmp_path / "refs", config)
    assert again.directory == cache.directory
    assert again.get("car", ("tree",)) is None
    entry = torch.load(next(cache.directory.iterdir()), weights_only=True)
    assert entry["setting"]["encoder"]["weights"] == {"kind": "file", "name": "encoder.pth", "bytes": len(b"first"),
                                                      "sha256": "sha256:" + hashlib.sha256(b"first").hexdigest()}


def test_pseudo_masks_of_another_setting_are_not_reused(tmp_path, monkeypatch):
    vocabulary, colours = colour_world(metadata.categories("cityscapes") + ["tree", "person"])
    calls = install_stubs(monkeypatch, {"vocabulary": vocabulary, "colours": colours})
    split = write_cityscapes(tmp_path / "cityscapes", "train", n_images=1)
    write_imagenet_of(tmp_path / "ImageNet2012", colours, n_per_class=1)
    config_path = reco_config(tmp_path, n_imgs=2, batch_size=1, n_visualisations=0)
    assert main_reco.main(["--config", str(config_path), "--split", "train"]) == 0
    out = run_dir_of(load_reco_config(config_path), "train")
    mask = out / "dt_crf" / split.names[0]
    written = mask.stat().st_mtime_ns
    # an earlier run of another setting shared this directory (e.g. weights of the same name, other size):
    # the record its masks name says so
    records = json.loads((out / "pseudo_mask_settings.json").read_text())
    assert len(records) == 1
    other = {**next(iter(records.values())), "reproduce_seed_slice_bug": True}
    (out / "pseudo_mask_settings.json").write_text(json.dumps({**records, "0123456789abcdef": other}))
    for sub in ("dt", "dt_crf"):
        save_png(out / sub / split.names[0], np.asarray(Image.open(out / sub / split.names[0])),
                 text={"reco_setting": "0123456789abcdef"})
    written = mask.stat().st_mtime_ns
    assert main_reco.main(["--config", str(config_path), "--split", "train"]) == 0
    assert mask.stat().st_mtime_ns != written
    assert "not reusing the pseudo-masks of 1 images" in (out / "reco.log").read_text()
    assert len(calls) == 1  # the reference pickle of this setting is still good


def test_readme_example_of_a_hashed_name():
    from utils.config import RecoConfig

    config = RecoConfig(dir_ckpt="x", context_categories=["sky"])
    assert reference_setting.reference_experiment_name(reference_settings(config)) == "deit_s_16_sin_in_train_ce_ta_643c30fe"


def test_weights_source_tells_files_from_tags(tmp_path):
    from networks.weights import weights_source

    (tmp_path / "w.pt").write_bytes(b"x")
    assert weights_source(None) == ("unset", None)
    assert weights_source("random") == ("random", None)
    assert weights_source(str(tmp_path / "w.pt")) == ("file", tmp_path / "w.pt")
    assert weights_source(str(tmp_path / "absent.pth"))[0] == "missing_file"
    assert weights_source("RN50x16.pt")[0] == "missing_file"
    assert weights_source("openai") == ("tag", "openai")
    assert weights_source("IMAGENET1K_V1") == ("tag", "IMAGENET1K_V1")
    assert reference_setting.weights_identity(str(tmp_path / "w.pt")) == {
        "kind": "file", "name": "w.pt", "bytes": 1, "sha256": "sha256:" + hashlib.sha256(b"x").hexdigest()}


def test_tiny_reco_plus_config_reads_the_pseudo_masks_the_demo_writes():
    """configs/reco_plus_tiny.yaml names the demo's train run directory, setting hash included."""
    from pathlib import Path

    from entry.reco_demo import demo_config
    from utils.config import reco_config_from_dict

    repo = Path(__file__).resolve().parents[1]
    demo = reco_config_from_dict(demo_config(Path("reco_demo")))
    configured = yaml.safe_load((repo / "configs" / "reco_plus_tiny.yaml").read_text())["dir_pseudo_masks"]
    assert Path(configured) == run_dir_of(demo, "train") / "dt_crf"
