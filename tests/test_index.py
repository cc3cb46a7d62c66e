"""ImageNet index: reading ImageNet, building (resume, corrupt images, torchrun), the published pickle."""
from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from datasets.imagenet import (IndexBuildDataset, imagenet_path, list_imagenet_images, load_retrieved_images)
from utils.normalisation import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from index_driver import EMBED_DIM, build, tiny_embed_fn
from image_index.published import ensure_index
from image_index.storage import (IndexNotFoundError, index_dir, index_tag, load_index,
                                 published_pickle_path)
from image_index.build import build_index
from image_index.published import _parse_legacy_storage, convert_published_pickle
from synthetic import write_corrupt_jpeg, write_imagenet
from test_io import pickle_as_if_saved_on_cuda
from utils.io import UnsafePickleError

REPO = Path(__file__).resolve().parents[1]
WNIDS = ("n01000001", "n01000002", "n01000003")


@pytest.fixture
def imagenet(tmp_path):
    root = tmp_path / "ImageNet2012"
    write_imagenet(root, "train", wnids=WNIDS, n_per_class=4, size=(40, 56))  # 12 images
    return root


def _expected_embeddings(paths, image_size=32):
    dataset, fn = IndexBuildDataset(paths, image_size), tiny_embed_fn()
    images = torch.stack([dataset[i][1] for i in range(len(paths))])
    return torch.nn.functional.normalize(fn(images).float(), dim=-1).half().numpy()


# ------------------------------------------------------------------------------------------ ImageNet

def test_list_imagenet_images_one_folder_level_sorted(imagenet):
    (imagenet / "train" / WNIDS[0] / "deeper").mkdir()
    Image.new("RGB", (8, 8)).save(imagenet / "train" / WNIDS[0] / "deeper" / "x_1.JPEG", format="JPEG")
    (imagenet / "train" / WNIDS[0] / "notes.txt").write_text("not an image")
    Image.new("RGB", (8, 8)).save(imagenet / "train" / "top_level.JPEG", format="JPEG")
    paths = list_imagenet_images(imagenet, "train")
    assert len(paths) == 12 and [str(p) for p in paths] == sorted(str(p) for p in paths)
    assert all(p.parent.parent == imagenet / "train" for p in paths)
    with pytest.raises(ValueError, match="val"):
        list_imagenet_images(imagenet, "val")


def test_imagenet_path_train_and_val(tmp_path):
    root = tmp_path / "imagenet"  # no 'ImageNet2012' in the path: no string hack needed
    write_imagenet(root, "val", wnids=WNIDS, n_per_class=2)
    assert imagenet_path(root, "train", "n01440764_10026.JPEG") == root / "train" / "n01440764" / "n01440764_10026.JPEG"
    assert imagenet_path(root, "val", "ILSVRC2012_val_00000003.JPEG") == root / "val" / WNIDS[1] / \
        "ILSVRC2012_val_00000003.JPEG"
    with pytest.raises(ValueError, match="not found"):
        imagenet_path(root, "val", "ILSVRC2012_val_00000099.JPEG")


def test_index_build_dataset_is_spec2_preprocessing(tmp_path):
    path = tmp_path / "g.JPEG"
    rgb = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("L").save(path, format="JPEG")  # greyscale: RGB conversion after the resize
    i, image, ok = IndexBuildDataset([path], 32)[0]
    with Image.open(path) as pil:
        ref = TF.center_crop(TF.resize(pil, 32, interpolation=InterpolationMode.BICUBIC), [32, 32]).convert("RGB")
    expected = TF.normalize(TF.to_tensor(ref), list(CLIP_MEAN), list(CLIP_STD))
    assert i == 0 and ok and image.shape == (3, 32, 32) and torch.equal(image, expected)
    bad = write_corrupt_jpeg(tmp_path / "bad.JPEG", "truncated")
    _, image, ok = IndexBuildDataset([bad], 32)[0]
    assert not ok and torch.count_nonzero(image) == 0


def test_load_retrieved_images_spec4(imagenet, tmp_path):
    paths = list_imagenet_images(imagenet, "train")[:3]
    images = load_retrieved_images(paths)
    assert images.shape == (3, 3, 224, 224) and images.dtype == torch.float32
    with Image.open(paths[1]) as pil:
        ref = TF.center_crop(TF.resize(pil.convert("RGB"), 224), [224, 224])
    assert torch.equal(images[1], TF.normalize(TF.to_tensor(ref), list(IMAGENET_MEAN), list(IMAGENET_STD)))
    bad = write_corrupt_jpeg(tmp_path / "bad.JPEG", "garbage")
    with pytest.raises(ValueError, match="bad.JPEG"):
        load_retrieved_images([paths[0], bad])


# ------------------------------------------------------------------------------------------ build

def test_paths_and_tag():
    assert index_tag("ViT-L/14@336px") == "ViT_L_14_336px"
    assert index_dir("/d", "ViT-L/14@336px", "train") == Path("/d/index/ViT_L_14_336px_train")
    assert published_pickle_path("/d", "ViT-L/14@336px", "train") == \
        Path("/d/filename_to_ViT_L_14_336px_train_img_embedding.pkl")


def test_build_index_layout_and_values(imagenet, tmp_path):
    out = tmp_path / "index" / "tiny_vit_clip_train"
    build(imagenet, out, shard_size=5, batch_size=2)  # 12 images: shards of 5, 5, 2
    index = load_index(out, expected_dim=EMBED_DIM, expected_arch="tiny-vit-clip")
    paths = list_imagenet_images(imagenet, "train")
    assert index.filenames == [p.name for p in paths]
    assert isinstance(index.embeddings, np.memmap) and index.embeddings.dtype == np.float16
    np.testing.assert_array_equal(np.asarray(index.embeddings), _expected_embeddings(paths))
    np.testing.assert_allclose(np.linalg.norm(index.embeddings.astype(np.float32), axis=1), 1, atol=2e-3)
    assert index.meta["count"] == 12 and index.meta["dim"] == EMBED_DIM and index.meta["image_size"] == 32
    assert (out / "failed_images.txt").read_text() == ""
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # shards and staging dirs cleaned up
    build(imagenet, out)  # already built: returns at once


def test_resume_after_crash_equals_uninterrupted_build(imagenet, tmp_path):
    reference = build(imagenet, tmp_path / "ref" / "idx", shard_size=4, batch_size=2)
    base, calls = tiny_embed_fn(), {"n": 0, "images": 0}

    def crashing(images):
        calls["n"] += 1
        if calls["n"] == 4:  # shards of 4 images = 2 batches: shard 0 done, crash inside shard 1
            raise RuntimeError("simulated crash")
        return base(images)

    out = tmp_path / "run" / "idx"
    with pytest.raises(RuntimeError, match="simulated crash"):
        build(imagenet, out, shard_size=4, batch_size=2, embed_fn=crashing)
    assert not out.exists()
    partial = [p for p in out.parent.iterdir() if ".partial-" in p.name]
    assert len(partial) == 1 and sorted(p.name for p in partial[0].glob("*.done.json")) == ["shard_000000.done.json"]

    def counting(images):
        calls["images"] += len(images)
        return base(images)

    build(imagenet, out, shard_size=4, batch_size=2, embed_fn=counting)
    assert calls["images"] == 8  # shard 0 (4 images) was not recomputed
    ref, res = load_index(reference), load_index(out)
    assert res.filenames == ref.filenames
    np.testing.assert_array_equal(np.asarray(res.embeddings), np.asarray(ref.embeddings))
    assert not partial[0].exists()


def test_corrupt_jpegs_are_skipped_counted_and_listed(imagenet, tmp_path, caplog):
    bad = [write_corrupt_jpeg(imagenet / "train" / WNIDS[1] / f"{WNIDS[1]}_90.JPEG", "truncated"),
           write_corrupt_jpeg(imagenet / "train" / WNIDS[2] / f"{WNIDS[2]}_91.JPEG", "garbage")]
    out = tmp_path / "idx"
    with caplog.at_level("INFO", logger="reco"):
        build(imagenet, out, shard_size=5, batch_size=3)
    index = load_index(out)
    good = [p for p in list_imagenet_images(imagenet, "train") if p not in bad]
    assert index.filenames == [p.name for p in good] and index.meta["n_failed"] == 2
    np.testing.assert_array_equal(np.asarray(index.embeddings), _expected_embeddings(good))
    assert (out / "failed_images.txt").read_text().splitlines() == [str(p) for p in bad]
    assert "2 unreadable image(s) skipped" in caplog.text


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(imagenet, tmp_path):
    single = build(imagenet, tmp_path / "one" / "idx", shard_size=2, batch_size=2)
    out = tmp_path / "two" / "idx"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests" / "index_driver.py"), "--root", str(imagenet), "--out", str(out),
           "--shard-size", "2", "--batch-size", "2"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    one, two = load_index(single), load_index(out)
    assert two.filenames == one.filenames and two.meta["count"] == 12
    np.testing.assert_array_equal(np.asarray(two.embeddings), np.asarray(one.embeddings))


def test_build_rejects_bad_arguments(imagenet, tmp_path):
    with pytest.raises(ValueError, match="barrier"):
        build(imagenet, tmp_path / "x", world_size=2)
    with pytest.raises(ValueError, match="no images"):
        build_index([], tiny_embed_fn(), tmp_path / "y", {"clip_arch": "a", "split": "train"},
                    make_dataset=lambda p: IndexBuildDataset(p, 32))


# ------------------------------------------------------------------------------- published pickle

def _legacy_storage_bytes(storage, location: str) -> bytes:
    buffer = io.BytesIO()
    torch.save(storage, buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    tag = b"X\x03\x00\x00\x00cpu"
    assert data.count(tag) == 1
    return data.replace(tag, b"X" + len(location).to_bytes(4, "little") + location.encode())


def _pickle_legacy_with_location(obj, location: str) -> bytes:
    """A plain pickle of `obj` whose tensor storages are legacy archives recording `location` (e.g.
    'cuda:0', as if saved on a GPU); test_io.pickle_as_if_saved_on_cuda makes the zip-archive kind."""
    out = io.BytesIO()

    class LocationPickler(pickle.Pickler):
        def reducer_override(self, value):
            if isinstance(value, torch.storage.TypedStorage):
                return torch.storage._load_from_bytes, (_legacy_storage_bytes(value, location),)
            return NotImplemented

    LocationPickler(out, protocol=4).dump(obj)
    return out.getvalue()


def _published(n=7, dim=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    names = [f"n0{(i * 7919) % 97:04d}_{i}.JPEG" for i in range(n)]  # not sorted: dict order must be kept
    return {name: torch.nn.functional.normalize(torch.randn(dim, generator=g), dim=0) for name in names}


@pytest.mark.parametrize("variant", ["plain", "legacy-cuda", "zip-cuda", "numpy", "shared", "views"])
def test_published_pickle_converts_exactly(tmp_path, variant):
    table = _published()
    pkl = published_pickle_path(tmp_path, "ViT-L/14@336px", "train")
    if variant == "shared":  # one tensor object under two keys: pickled once, referenced twice
        names = list(table)
        table[names[3]] = table[names[1]]
    if variant == "views":  # rows of one batch tensor (not cloned): views into a shared storage
        batch = torch.stack(list(table.values()))
        table = {name: batch[i] for i, name in enumerate(table)}
    if variant in ("plain", "shared", "views"):
        data = pickle.dumps(table)
    elif variant == "numpy":
        data = pickle.dumps({k: v.numpy() for k, v in table.items()})
    else:
        data = (_pickle_legacy_with_location(table, "cuda:0") if variant == "legacy-cuda"
                else pickle_as_if_saved_on_cuda(table))
        assert b"cuda:0" in data
    pkl.write_bytes(data)
    index = ensure_index(tmp_path, "ViT-L/14@336px", "train", expected_dim=24)
    assert index.directory == index_dir(tmp_path, "ViT-L/14@336px", "train")
    assert index.filenames == list(table)
    expected = torch.stack(list(table.values())).numpy().astype(np.float16)
    np.testing.assert_array_equal(np.asarray(index.embeddings), expected)
    assert index.meta["source"] == "published_pickle" and index.meta["image_size"] == 336
    assert ensure_index(tmp_path, "ViT-L/14@336px", "train").filenames == list(table)  # now loads the index


def test_legacy_fast_path_matches_torch_load():
    storage = torch.randn(768).storage()
    data = _legacy_storage_bytes(storage, "cuda:1")
    values = _parse_legacy_storage(data)
    assert values is not None and np.array_equal(values, np.asarray(storage.tolist(), dtype=np.float32))
    assert _parse_legacy_storage(data[:-4]) is None  # truncated: falls back to torch.load


class _Evil:
    marker: Path

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("position", ["first", "after valid entries"])
def test_malicious_pickle_is_refused_without_side_effects(tmp_path, position):
    _Evil.marker = tmp_path / "pwned"
    table = _published(n=5, dim=8)
    entries = {"evil.JPEG": _Evil(), **table} if position == "first" else {**table, "evil.JPEG": _Evil()}
    pkl = published_pickle_path(tmp_path, "ViT-L/14@336px", "train")
    pkl.write_bytes(pickle.dumps(entries))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafePickleError, match="system"):
        ensure_index(tmp_path, "ViT-L/14@336px", "train")
    assert not _Evil.marker.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no index, no staging directory


def test_wrong_dimension_or_clip_is_a_clear_error(tmp_path):
    pkl = tmp_path / "x.pkl"
    pkl.write_bytes(pickle.dumps(_published(dim=24)))
    out = convert_published_pickle(pkl, tmp_path / "index" / "RN50_train", "RN50", "train")
    with pytest.raises(ValueError, match="another CLIP.*1024-dim.*--stage index"):
        load_index(out, expected_dim=1024)
    with pytest.raises(ValueError, match="another CLIP.*ViT-L/14@336px"):
        load_index(out, expected_dim=24, expected_arch="ViT-L/14@336px")
    with pytest.raises(ValueError, match="another CLIP"):
        convert_published_pickle(pkl, tmp_path / "index" / "other", "RN50", "train", expected_dim=1024)
    assert not (tmp_path / "index" / "other").exists()


def test_missing_index_tells_how_to_get_one(tmp_path):
    with pytest.raises(IndexNotFoundError, match="--stage index.*filename_to_ViT_L_14_336px_train_img_embedding"):
        ensure_index(tmp_path, "ViT-L/14@336px", "train", expected_dim=768)


def test_incomplete_index_is_a_clear_error(tmp_path):
    out = tmp_path / "index" / "ViT_L_14_336px_train"
    out.mkdir(parents=True)
    np.save(out / "embeddings.npy", np.zeros((2, 4), np.float16))
    (out / "meta.json").write_text(json.dumps({"count": 2}))
    with pytest.raises(ValueError, match="missing filenames.txt"):
        ensure_index(tmp_path, "ViT-L/14@336px", "train")
