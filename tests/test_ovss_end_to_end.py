"""The eight open-vocabulary benchmarks through main_reco.py with the colour-coded models (known answers).

The scene classes keep their colours under every benchmark's names for them (tree = vegetation, sky-other
= sky, ...); every other query name shares one decoy colour that no scene shows, so a right pipeline
labels each region by its colour and the background by threshold or by synonyms.
"""
import json

import pytest
import torch
import yaml

import main_reco
import networks
from colour_models import ColourEncoder, ColourFeatures
from datasets import metadata
from datasets.registry import BENCHMARKS
from reco_api.reference_cache import FileReferenceCache
from reco_api.settings import reference_settings
from entry.reco_ovss import ovss_run_dir
from synthetic import CLASS_COLOURS, SCENE_CLASSES, write_imagenet
from synthetic_ovss import write_ovss
from test_end_to_end import install_colour_models
from utils.config import load_reco_config

DECOY_COLOUR = (0, 255, 255)
COLOURS = [CLASS_COLOURS[c] for c in SCENE_CLASSES] + [DECOY_COLOUR]
SCENE_WORDS = {"road": "road", "building": "building", "building-other": "building", "vegetation": "vegetation",
               "tree": "vegetation", "sky": "sky", "sky-other": "sky", "car": "car"}
BACKGROUND = {"voc21": {"mode": "synonyms"}, "context60": {"mode": "threshold", "threshold": 0.55},
              "coco_object": {"mode": "threshold", "threshold": 0.65}}


def vocabulary(words):
    """word -> colour index: the scene words their scene colour, every other word the decoy colour."""
    return {w: SCENE_CLASSES.index(SCENE_WORDS[w]) if w in SCENE_WORDS else len(COLOURS) - 1 for w in words}


def colour_reference(word):
    """The unit feature of a patch of the word's colour: what co-segmentation finds for it."""
    colour = COLOURS[vocabulary([word])[word]]
    feature = ColourFeatures(COLOURS)(torch.tensor(colour, dtype=torch.float32).view(1, 3, 1, 1) / 255)
    return torch.nn.functional.normalize(feature.flatten(), dim=0)


def ovss_config(tmp_path, name, **extra):
    config = {
        "dir_ckpt": str(tmp_path / "ckpt"), "dir_dataset": str(tmp_path / name), "dataset_name": name,
        "dir_imagenet": str(tmp_path / "ImageNet2012"), "reference_cache_dir": str(tmp_path / "references"),
        "clip_arch": "tiny-vit-clip", "dense_clip_arch": "tiny-rn-clip", "encoder_arch": "tiny-vit",
        "weights": {"clip": "random", "dense_clip": "random", "encoder": "random"},
        "n_imgs": 3, "batch_size": 2, "n_workers": 0, "n_visualisations": 1, "device": "cpu", "crf_workers": 1,
        "dense_clip_inference": False, "eval_short_side": 96, "slide_window": 48, "slide_stride": 24,
        "background": BACKGROUND.get(name, {"mode": "none"}), "index_batch_size": 16, "index_shard_size": 32,
        "cosegmentation_pictures": False,  # about 0.3 s each; the tests that look at them turn them on
    }
    config.update(extra)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fill_reference_cache(config_path, words):
    """Put the colour reference of every word into the per-category cache, as a run would have."""
    config = load_reco_config(config_path)
    cache = FileReferenceCache(reference_settings(config))
    contexts = list(config.context_categories)
    for i, context in enumerate(contexts):
        cache.put(context, tuple(contexts[:i]), colour_reference(context))
    for word in words:
        cache.put(word, tuple(contexts), colour_reference(word))


@pytest.mark.parametrize("name", BENCHMARKS.names(lambda spec: spec.protocol == "ovss"))
def test_known_answer_on_each_benchmark(tmp_path, monkeypatch, name):
    words = metadata.categories(name) + list(metadata.context_categories())
    install_colour_models(monkeypatch, vocabulary(words), COLOURS)
    monkeypatch.setattr(networks, "build_encoder", lambda arch, weights, key="": ColourEncoder(COLOURS, patch_size=4))
    written = write_ovss(name, tmp_path / name)
    config = ovss_config(tmp_path, name)
    fill_reference_cache(config, metadata.categories(name))
    # ImageNet is absent: every reference comes from the cache
    assert main_reco.main(["--config", str(config)]) == 0

    out = ovss_run_dir(load_reco_config(config))
    assert out.name == "short96_slide48s24" + {"voc21": "_bgsyn_" + out.name[-6:], "context60": "_bgthr0.55",
                                                "coco_object": "_bgthr0.65"}.get(name, "")
    results = json.loads((out / "results.json").read_text())
    results_crf = json.loads((out / "results_crf.json").read_text())
    assert set(results) >= set(metadata.eval_categories(name))
    present = {c for label in written.labels for c in label[label >= 0].tolist()}
    for index in present:  # every class in the ground truth is found
        assert results[metadata.eval_categories(name)[index]] >= 0.8, (name, index, results)
    assert results["Mean IoU"] >= 0.9 and results_crf["Mean IoU"] >= 0.9, (results["Mean IoU"], results_crf["Mean IoU"])
    assert results["Pixel Acc"] >= 0.95
    assert (out / "0000.png").is_file() and (out / "config.json").is_file()


def reference_files(root):
    """The per-category reference cache's files (the text-embedding cache in its text/ folder left out)."""
    return {p.name for p in root.rglob("*.pt") if "text" not in p.relative_to(root).parts}


def test_references_are_computed_once_and_shared_across_benchmarks(tmp_path, monkeypatch):
    """voc21 retrieves and co-segments the names no earlier run cached; voc20 then finds all of its names
    in the cache and needs no ImageNet."""
    install_colour_models(monkeypatch, vocabulary(metadata.categories("voc21") + metadata.context_categories()),
                          COLOURS)
    wnids = [f"n{20000000 + i}" for i in range(len(COLOURS))]
    write_imagenet(tmp_path / "ImageNet2012", "train", wnids, n_per_class=3, colours=COLOURS)
    write_ovss("voc21", tmp_path / "VOC2012")
    config21 = ovss_config(tmp_path, "voc21", dir_dataset=str(tmp_path / "VOC2012"), n_visualisations=0,
                            cosegmentation_pictures=True)
    new = {"car", "ship"}  # computed by this run
    fill_reference_cache(config21, [n for n in metadata.categories("voc21") if n not in new])
    before = reference_files(tmp_path / "references")
    assert main_reco.main(["--config", str(config21)]) == 0
    results = json.loads((ovss_run_dir(load_reco_config(config21)) / "results.json").read_text())
    assert results["background"] >= 0.9 and results["car"] >= 0.8
    after = reference_files(tmp_path / "references")
    assert sorted(n.split("_")[0] for n in after - before) == sorted(new)
    assert {p.name for p in ovss_run_dir(load_reco_config(config21)).glob("coseg_*.png")} == {
        f"coseg_{n}.png" for n in new}

    import shutil

    shutil.rmtree(tmp_path / "ImageNet2012")
    config20 = ovss_config(tmp_path, "voc20", dir_dataset=str(tmp_path / "VOC2012"))
    assert main_reco.main(["--config", str(config20)]) == 0
    assert reference_files(tmp_path / "references") == after
    results = json.loads((ovss_run_dir(load_reco_config(config20)) / "results.json").read_text())
    assert results["car"] >= 0.8


def test_background_mode_must_fit_the_benchmark(tmp_path, capsys):
    write_ovss("voc20", tmp_path / "voc20")
    config = ovss_config(tmp_path, "voc20", background={"mode": "threshold", "threshold": 0.5})
    assert main_reco.main(["--config", str(config)]) == 2
    assert "background.mode: voc20 has no background class: set 'none'" in capsys.readouterr().err
    config = ovss_config(tmp_path, "voc21", dir_dataset=str(tmp_path / "voc20"), background={"mode": "none"})
    assert main_reco.main(["--config", str(config)]) == 2
    assert "background.mode: voc21 has a background class" in capsys.readouterr().err
    config = ovss_config(tmp_path, "cityscapes", background={"mode": "synonyms"})
    assert main_reco.main(["--config", str(config)]) == 2
    assert "background.mode" in capsys.readouterr().err


def test_results_table_of_several_benchmarks(tmp_path, monkeypatch, capsys):
    from entry import ovss_table

    names = ["voc20", "cityscapes19"]
    words = [w for n in names for w in metadata.categories(n)] + list(metadata.context_categories())
    install_colour_models(monkeypatch, vocabulary(words), COLOURS)
    monkeypatch.setattr(networks, "build_encoder", lambda arch, weights, key="": ColourEncoder(COLOURS, patch_size=4))
    configs = []
    for name in names:
        write_ovss(name, tmp_path / name)
        configs.append(str(ovss_config(tmp_path, name, n_visualisations=0)))
        fill_reference_cache(configs[-1], metadata.categories(name))
        assert main_reco.main(["--config", configs[-1]]) == 0
    assert ovss_table.main(configs) == 0
    table = json.loads((tmp_path / "ckpt" / "ovss_results.json").read_text())
    assert [row["benchmark"] for row in table["benchmarks"]] == names
    for row, config in zip(table["benchmarks"], configs):
        run = ovss_run_dir(load_reco_config(config))
        results = json.loads((run / "results.json").read_text())
        results_crf = json.loads((run / "results_crf.json").read_text())
        assert row["miou"] == results["Mean IoU"] and row["pixel_acc"] == results["Pixel Acc"]
        assert row["miou_crf"] == results_crf["Mean IoU"] and row["pixel_acc_crf"] == results_crf["Pixel Acc"]
    assert table["average"]["miou"] == pytest.approx(sum(r["miou"] for r in table["benchmarks"]) / 2)
    markdown = (tmp_path / "ckpt" / "ovss_results.md").read_text()
    assert markdown.splitlines()[0].startswith("| benchmark | mIoU | pixel acc.")
    assert f"| voc20 | {100 * table['benchmarks'][0]['miou']:.1f} |" in markdown and "| **average** |" in markdown

    # a benchmark without results is listed as missing, and the status says so
    (ovss_run_dir(load_reco_config(configs[1])) / "results_crf.json").unlink()
    assert ovss_table.main(configs + ["--out", str(tmp_path / "table")]) == 1
    assert "no results for: cityscapes19" in capsys.readouterr().err
    row = json.loads((tmp_path / "table" / "ovss_results.json").read_text())["benchmarks"][1]
    assert row["miou_crf"] is None and "—" in (tmp_path / "table" / "ovss_results.md").read_text()


def test_tiny_random_models_run_the_protocol(tmp_path):
    """The real networks (tiny random variants) through index, retrieval, co-segmentation, sliding windows,
    DenseCLIP inference and background synonyms: the pipeline runs and scores every class."""
    write_imagenet(tmp_path / "ImageNet2012", "train", n_per_class=2)
    write_ovss("voc21", tmp_path / "voc21", sizes=((40, 56),))
    config = ovss_config(tmp_path, "voc21", n_imgs=2, dense_clip_inference=True, eval_short_side=48,
                         slide_window=32, slide_stride=16,
                         background={"mode": "synonyms", "synonyms": ["sky", "road"]}, cosegmentation_pictures=True)
    # most names come from the cache (random tiny-vit-sized vectors); "car" and "ship" are retrieved and co-segmented
    loaded = load_reco_config(config)
    cache = FileReferenceCache(reference_settings(loaded))
    g = torch.Generator().manual_seed(0)
    contexts = list(loaded.context_categories)
    for i, name in enumerate(contexts):
        cache.put(name, tuple(contexts[:i]), torch.nn.functional.normalize(torch.randn(32, generator=g), dim=0))
    for name in metadata.categories("voc21"):
        if name not in ("car", "ship"):
            cache.put(name, tuple(contexts), torch.nn.functional.normalize(torch.randn(32, generator=g), dim=0))
    assert main_reco.main(["--config", str(config)]) == 0
    out = ovss_run_dir(loaded)
    results = json.loads((out / "results_crf.json").read_text())
    assert set(metadata.eval_categories("voc21")) <= set(results) and 0 <= results["Pixel Acc"] <= 1
    assert {p.name for p in out.glob("coseg_*.png")} == {"coseg_car.png", "coseg_ship.png"}
