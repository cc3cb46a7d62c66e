"""The index knows the CLIP weights it was built with (issue 26, item 0): meta.json records their identity
(a file by its content hash), retrieval with other weights is one line, an index without the record is used
as before, and a resumed build whose weights changed never mixes shards of two weights.

CLIP files A and B are tiny-vit-clip state dicts of two seeds: the same name, size and modification time
(replace_keeping_stat), so only the content hash tells them apart; the index directory name is the same.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import main_reco
from datasets.imagenet import IndexBuildDataset, list_imagenet_images
from image_index.build import build_index
from image_index.storage import load_index
from index_driver import tiny_embed_fn
from networks.clip import get_clip
from synthetic import write_cityscapes, write_imagenet
from test_artefact_integrity import replace_keeping_stat, write_seeded_weights
from test_end_to_end import reco_config
from utils.config import ConfigError
from utils.file_identity import content_hash

LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d [A-Z]+ ")  # the run's log on stderr; the error lines remain


def write_clip(path: Path, seed: int) -> Path:
    spec = get_clip("tiny-vit-clip")
    return write_seeded_weights(path, seed, lambda: spec.build(spec, "fp32", "cpu"))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("index_weights")
    write_imagenet(root / "ImageNet2012", "train", n_per_class=2)
    write_cityscapes(root / "cityscapes", "val", n_images=1)
    a, b = write_clip(root / "A" / "clip.pt", seed=1), write_clip(root / "B" / "clip.pt", seed=2)
    assert a.stat().st_size == b.stat().st_size and a.read_bytes() != b.read_bytes()
    return {"root": root, "A": a, "B": b}


def world(sources, root: Path, **extra) -> tuple[Path, Path]:
    """(config, its CLIP file, a copy of A) in `root`, with its own ImageNet and Cityscapes copies."""
    for sub in ("ImageNet2012", "cityscapes"):
        shutil.copytree(sources["root"] / sub, root / sub)
    clip = Path(shutil.copy2(sources["A"], root / "clip.pt"))
    config = yaml.safe_load(reco_config(root, n_imgs=2, batch_size=1, n_visualisations=0, context_elimination=False,
                                        **extra).read_text())
    config["weights"] = {"clip": str(clip), "dense_clip": "random", "encoder": "random"}
    path = root / "reco.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, clip


def index_of(root: Path) -> Path:
    return root / "ImageNet2012" / "index" / "tiny_vit_clip_train"


def test_other_weights_of_same_name_size_and_mtime_are_refused_in_one_line(sources, tmp_path, capsys):
    config, clip = world(sources, tmp_path)
    assert main_reco.main(["--config", str(config), "--stage", "index"]) == 0
    index = index_of(tmp_path)
    meta = json.loads((index / "meta.json").read_text())
    digest_a = content_hash(sources["A"])
    assert meta["clip_weights"] == {"kind": "file", "name": "clip.pt", "bytes": clip.stat().st_size,
                                    "sha256": digest_a}

    replace_keeping_stat(clip, sources["B"])
    digest_b = content_hash(clip)
    assert digest_b != digest_a
    for stage in ("references", "index"):
        capsys.readouterr()
        assert main_reco.main(["--config", str(config), "--stage", stage]) != 0
        error = [line for line in capsys.readouterr().err.strip().splitlines() if not LOG_LINE.match(line)]
        assert len(error) == 2 and "RECO_DEBUG" in error[1], error
        line = error[0]
        assert str(index) in line and "weights.clip" in line and str(clip) in line, line
        assert digest_a[:19] in line and digest_b[:19] in line and "remove" in line, line
    assert not list((tmp_path / "ckpt").rglob("*.pkl"))  # no references were made from A's index

    from reco_api import ReCo  # the Python API refuses alike (no model of the index needed to tell)
    with pytest.raises(ConfigError, match="was built with other CLIP weights"):
        ReCo.from_config(config, crf=False).references(["car"])

    replace_keeping_stat(clip, sources["A"])  # pointing weights.clip back at A's bytes: retrieval works
    assert ReCo.from_config(config, crf=False).references(["car"]).shape[0] == 1


def test_an_index_without_recorded_weights_is_used_as_before(sources, tmp_path):
    config, clip = world(sources, tmp_path)
    assert main_reco.main(["--config", str(config), "--stage", "index"]) == 0
    meta_file = index_of(tmp_path) / "meta.json"
    meta = json.loads(meta_file.read_text())
    del meta["clip_weights"]  # as written before the weights were recorded
    meta_file.write_text(json.dumps(meta))
    replace_keeping_stat(clip, sources["B"])
    assert main_reco.main(["--config", str(config), "--stage", "index"]) == 0
    from reco_api import ReCo
    assert ReCo.from_config(config, crf=False).references(["car"]).shape[0] == 1


def test_a_resumed_index_stage_whose_weights_changed_starts_afresh(sources, tmp_path, monkeypatch):
    config, clip = world(sources, tmp_path, index_shard_size=2, index_batch_size=1)
    import image_index.build as build_module

    def interrupted(*args, **kwargs):
        raise RuntimeError("simulated kill before the merge")

    with monkeypatch.context() as patch:  # every shard of A finished, the merge not reached
        patch.setattr(build_module, "_merge_shards", interrupted)
        with pytest.raises(RuntimeError, match="simulated kill"):  # not a user error: raised as it is
            main_reco.main(["--config", str(config), "--stage", "index"])
    partial_a = [p for p in index_of(tmp_path).parent.iterdir() if ".partial-" in p.name]
    assert len(partial_a) == 1 and list(partial_a[0].glob("*.done.json"))

    replace_keeping_stat(clip, sources["B"])
    assert main_reco.main(["--config", str(config), "--stage", "index"]) == 0
    log = (index_of(tmp_path).parent / "build_tiny_vit_clip_train.log").read_text()
    assert "not resuming the interrupted build" in log and "meta.clip_weights" in log
    assert not partial_a[0].exists()

    fresh = tmp_path / "fresh"  # the same collection indexed with B from the start
    config_fresh, clip_fresh = world(sources, fresh, index_shard_size=2, index_batch_size=1)
    replace_keeping_stat(clip_fresh, sources["B"])
    assert main_reco.main(["--config", str(config_fresh), "--stage", "index"]) == 0
    resumed, expected = load_index(index_of(tmp_path)), load_index(index_of(fresh))
    assert resumed.meta["clip_weights"] == expected.meta["clip_weights"]
    np.testing.assert_array_equal(np.asarray(resumed.embeddings), np.asarray(expected.embeddings))


def test_build_index_never_resumes_shards_of_another_plan(tmp_path, caplog):
    """Library level: shards of weights A are not reused by a build with B's identity in meta, and a
    shard marker recording another plan does not count as done."""
    root = tmp_path / "ImageNet2012"
    write_imagenet(root, "train", n_per_class=2)
    paths = list_imagenet_images(root, "train")
    embed_a, embed_b = tiny_embed_fn(seed=0), tiny_embed_fn(seed=1)
    calls = {"n": 0, "images": 0}

    def build(out: Path, weights: str, embed) -> Path:
        meta = {"clip_arch": "tiny-vit-clip", "split": "train", "clip_weights": {"kind": "tag", "name": weights}}
        return build_index(paths, embed, out, meta, make_dataset=lambda subset: IndexBuildDataset(subset, 32),
                           batch_size=2, num_workers=0, shard_size=2, progress=False)

    def crashing_a(images):
        calls["n"] += 1
        if calls["n"] == 3:  # shard 0 done, shard 1 under way
            raise RuntimeError("simulated crash")
        return embed_a(images)

    def counting_b(images):
        calls["images"] += len(images)
        return embed_b(images)

    out = tmp_path / "index" / "tiny_vit_clip_train"
    with pytest.raises(RuntimeError, match="simulated crash"):
        build(out, "A", crashing_a)
    with caplog.at_level(logging.INFO, logger="reco"):
        build(out, "B", counting_b)
    assert calls["images"] == len(paths)  # nothing of A's shard reused
    assert "not resuming the interrupted build" in caplog.text and '"name": "A"' in caplog.text
    expected = build(tmp_path / "fresh" / "tiny_vit_clip_train", "B", embed_b)
    np.testing.assert_array_equal(np.asarray(load_index(out).embeddings), np.asarray(load_index(expected).embeddings))

    from image_index.build import _shard_files, shard_is_done
    work = tmp_path / "w" / ".idx.partial-0123456789ab"
    work.mkdir(parents=True)
    npy, done = _shard_files(work, 0)
    np.save(npy, np.zeros((2, 4), np.float16))
    done.write_text(json.dumps({"shard": 0, "start": 0, "stop": 2, "dim": 4, "failed": [], "plan": "ba9876543210"}))
    assert not shard_is_done(work, 0)
    done.write_text(json.dumps({"shard": 0, "start": 0, "stop": 2, "dim": 4, "failed": [], "plan": "0123456789ab"}))
    assert shard_is_done(work, 0)
