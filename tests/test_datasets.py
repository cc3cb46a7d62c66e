"""Benchmark readers, metadata and evaluation transforms on synthetic trees (SPEC 9.3, 10, 11)."""
from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader

from datasets import metadata
from datasets.benchmarks import (UnreadableImageError, build_benchmark, collate, load_rgb, read_image_size,
                                 size_grouped_batches)
from datasets.cityscapes import cityscapes_label_ids_to_eval
from datasets.coco_stuff import coco_stuff_10k_root, coco_stuff_10k_to_coarse, coco_stuff_png_to_coarse
from datasets.kitti_step import kitti_step_panoptic_to_eval
from datasets.transforms import (eval_image_transform, eval_label_transform, full_resolution_image_transform,
                                 to_normalised_tensor)
from tests.synthetic import (CLASS_COLOURS, SCENE_CLASSES, write_cityscapes, write_coco_stuff,
                             write_corrupt_jpeg, write_imagenet, write_kitti_step)
from utils.normalisation import IMAGENET_MEAN, denormalise
from utils.palette import voc_colormap


# ----------------------------------------------------------------------------------------------- metadata
def test_metadata_lengths() -> None:
    assert len(metadata.categories("cityscapes")) == 27
    assert len(metadata.categories("coco_stuff")) == 171
    assert len(metadata.eval_categories("coco_stuff")) == 27
    assert len(metadata.categories("kitti_step")) == 19
    assert metadata.eval_categories("cityscapes") == metadata.categories("cityscapes")
    assert metadata.categories("cityscapes")[2] == "parking lot"
    for name, n in (("cityscapes", 27), ("coco_stuff", 27), ("kitti_step", 19)):
        pal = metadata.palette(name)
        assert pal.shape == (n, 3) and pal.dtype == np.uint8
        assert metadata.n_eval_classes(name) == n
    assert metadata.context_categories() == ["tree", "sky", "building", "road", "person"]
    # derived from the config's defaults; the original's table of these, as a known answer
    five = {"road": "road", "building": "building", "vegetation": "tree", "sky": "sky", "person": "person"}
    assert metadata.categories_reusing_context_features("cityscapes") == five
    assert metadata.categories_reusing_context_features("kitti_step") == five
    assert metadata.categories_reusing_context_features("coco_stuff") == {"person": "person", "road": "road",
                                                                          "tree": "tree"}
    assert tuple(metadata.palette("cityscapes")[0]) == (128, 64, 128)


def test_metadata_returns_copies_and_rejects_unknown_names() -> None:
    metadata.categories("cityscapes").append("x")
    metadata.palette("kitti_step")[0] = 0
    assert len(metadata.categories("cityscapes")) == 27
    assert tuple(metadata.palette("kitti_step")[0]) == (128, 64, 128)
    for fn in (metadata.categories, metadata.eval_categories, metadata.palette, metadata.prediction_to_eval):
        with pytest.raises(ValueError, match="cityscapes, coco_stuff, kitti_step"):
            fn("pascal")


def test_coco_fine_to_coarse_lut() -> None:
    lut = metadata.prediction_to_eval("coco_stuff")
    assert lut.shape == (171,) and lut.dtype == np.int64 and lut.min() == 0 and lut.max() == 26
    assert metadata.prediction_to_eval("cityscapes") is None and metadata.prediction_to_eval("kitti_step") is None
    fine, coarse = metadata.categories("coco_stuff"), metadata.eval_categories("coco_stuff")
    known = {"person": "person", "car": "vehicle", "traffic light": "outdoor", "cat": "animal", "tree": "plant",
             "sky other": "sky", "road": "ground", "wall brick": "wall", "sea": "water", "building other": "building"}
    for fine_name, coarse_name in known.items():
        assert coarse[lut[fine.index(fine_name)]] == coarse_name
    # Consistent with the 182-id GT table through the 182 -> 171 index table (11 unused ids skipped).
    id_to_coarse, id_to_fine = metadata.coco_stuff_label_id_to_coarse(), metadata.coco_stuff_label_id_to_fine()
    assert id_to_coarse.shape == (182,) and (id_to_fine == -1).sum() == 11
    used = id_to_fine >= 0
    np.testing.assert_array_equal(lut[id_to_fine[used]], id_to_coarse[used])
    assert coarse[id_to_coarse[0]] == "person" and coarse[id_to_coarse[156]] == "sky"


def test_coco_palette_is_the_voc_colormap() -> None:
    def colour(i: int) -> list[int]:  # SPEC 10.2, written independently of the module
        c = [0, 0, 0]
        for shift in range(7, -1, -1):
            for ch in range(3):
                c[ch] |= ((i >> ch) & 1) << shift
            i >>= 3
        return c

    expected = np.array([colour(i) for i in range(512)], dtype=np.uint8)
    with open(metadata.METADATA_DIR / "coco_stuff_palette_512.json") as f:
        np.testing.assert_array_equal(np.array(json.load(f), dtype=np.uint8), expected)
    np.testing.assert_array_equal(voc_colormap(512), expected)
    np.testing.assert_array_equal(metadata.palette("coco_stuff"), expected[:27])
    assert metadata.palette("coco_stuff")[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]


# --------------------------------------------------------------------------------------------- transforms
@pytest.mark.parametrize("size", [(64, 128), (48, 64), (100, 50), (320, 320), (500, 333)])
def test_eval_transform_sizes_match_torchvision(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    out = eval_image_transform(image)
    assert out.shape == (3, 320, 320) and out.dtype == torch.float32
    reference = T.Compose([T.Resize(320, interpolation=T.InterpolationMode.NEAREST), T.CenterCrop(320),
                           T.ToTensor(), T.Normalize(IMAGENET_MEAN, (0.229, 0.224, 0.225))])(image)
    torch.testing.assert_close(out, reference, rtol=0, atol=0)
    label = rng.integers(-1, 27, size)
    label_out = eval_label_transform(label)
    assert label_out.shape == (320, 320) and label_out.dtype == torch.int64
    encoded = Image.fromarray(np.where(label < 0, 255, label).astype(np.uint8))  # same geometry on uint8
    ref_label = np.asarray(T.Compose([T.Resize(320, T.InterpolationMode.NEAREST), T.CenterCrop(320)])(encoded))
    ref_label = ref_label.astype(np.int64)
    np.testing.assert_array_equal(label_out.numpy(), np.where(ref_label == 255, -1, ref_label))


def test_normalisation_and_full_resolution() -> None:
    mean_colour = np.array(IMAGENET_MEAN) * 255
    image = Image.fromarray(np.tile(np.round(mean_colour).astype(np.uint8), (40, 120, 1)))
    out = full_resolution_image_transform(image)
    assert out.shape == (3, 40, 120) and out.abs().max() < 0.01
    x = to_normalised_tensor(Image.fromarray(np.full((4, 5, 3), 200, np.uint8)))
    torch.testing.assert_close(denormalise(x), torch.full((3, 4, 5), 200 / 255))


# --------------------------------------------------------------------------------------------- cityscapes
@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, object]:
    root = tmp_path_factory.mktemp("cityscapes")
    written = write_cityscapes(root, "val", n_images=4)
    write_cityscapes(root, "train", n_images=2, cities=("zurich",), seed=1)
    return root, written


def _assert_colours_match_labels(item: dict, colours: dict[str, tuple[int, int, int]], index_of: dict[str, int],
                                 atol: float = 0.5) -> None:
    """The image pixels of each labelled class have that class's colour (image and label belong together)."""
    rgb = denormalise(item["image"]).permute(1, 2, 0).numpy() * 255
    for name, colour in colours.items():
        mask = item["label"].numpy() == index_of[name]
        assert mask.any(), name
        assert np.abs(rgb[mask] - np.array(colour)).mean() < atol, name


def test_cityscapes_items(cityscapes_root) -> None:
    root, written = cityscapes_root
    ds = build_benchmark("cityscapes", root, "val")
    assert len(ds) == 4 and ds.names == written.names
    assert ds.names[0] == "aachen_000000_000019_gtFine_labelIds.png"
    names = metadata.categories("cityscapes")
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 320, 320) and item["image"].dtype == torch.float32
        assert item["label"].shape == (320, 320) and item["label"].dtype == torch.int64
        assert item["image_path"] == str(written.pairs[i][0]) and item["name"] == written.names[i]
        torch.testing.assert_close(item["label"], eval_label_transform(written.labels[i]))
        assert set(np.unique(item["label"])) == {-1} | {names.index(c) for c in SCENE_CLASSES}
        _assert_colours_match_labels(item, CLASS_COLOURS, {c: names.index(c) for c in SCENE_CLASSES})
    assert len(build_benchmark("cityscapes", root, "train")) == 2


def test_cityscapes_pairing_does_not_depend_on_listing_order(cityscapes_root, monkeypatch) -> None:
    root, _ = cityscapes_root
    before = build_benchmark("cityscapes", root, "val")
    original_glob = pathlib.Path.glob
    monkeypatch.setattr(pathlib.Path, "glob", lambda self, pattern: iter(sorted(original_glob(self, pattern))[::-1]))
    after = build_benchmark("cityscapes", root, "val")
    assert after.names == before.names and after.image_paths == before.image_paths
    assert after.label_paths == before.label_paths
    for image, label in zip(after.image_paths, after.label_paths):
        assert label.name.replace("_gtFine_labelIds", "_leftImg8bit") == image.name


def test_cityscapes_label_decoding() -> None:
    ids = np.array([[0, 6, 7, 8], [23, 33, 34, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(cityscapes_label_ids_to_eval(ids), [[-1, -1, 0, 1], [16, 26, -1, -1]])


def test_cityscapes_errors(tmp_path, cityscapes_root) -> None:
    with pytest.raises(ValueError, match="directory not found"):
        build_benchmark("cityscapes", tmp_path / "nowhere", "val")
    (tmp_path / "empty" / "leftImg8bit" / "val").mkdir(parents=True)
    (tmp_path / "empty" / "gtFine" / "val").mkdir(parents=True)
    with pytest.raises(ValueError, match="no"):
        build_benchmark("cityscapes", tmp_path / "empty", "val")
    (tmp_path / "empty" / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="gtFine"):
        build_benchmark("cityscapes", tmp_path / "empty", "train")
    with pytest.raises(ValueError, match="unknown split"):
        build_benchmark("cityscapes", tmp_path / "empty", "test")
    with pytest.raises(ValueError, match="unknown dataset_name"):
        build_benchmark("cityscapes_fine", tmp_path, "val")
    copy = tmp_path / "copy"
    shutil.copytree(cityscapes_root[0], copy)
    missing = next((copy / "gtFine" / "val" / "bochum").glob("*_gtFine_labelIds.png"))
    missing.unlink()
    with pytest.raises(ValueError, match=missing.name):
        build_benchmark("cityscapes", copy, "val")


def test_unreadable_image_raises_with_path(tmp_path, cityscapes_root) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(cityscapes_root[0], copy)
    ds = build_benchmark("cityscapes", copy, "val")
    write_corrupt_jpeg(ds.image_paths[1], "truncated")
    write_corrupt_jpeg(ds.image_paths[2], "garbage")
    ds[0]
    for i in (1, 2):
        with pytest.raises(UnreadableImageError, match=ds.image_paths[i].name) as info:
            ds[i]
        assert info.value.path == ds.image_paths[i] and isinstance(info.value, ValueError)


# --------------------------------------------------------------------------------------------- coco-stuff
def test_coco_stuff_val_and_grayscale(tmp_path) -> None:
    written = write_coco_stuff(tmp_path / "cocostuff", n_val=3, n_train10k=1)["val"]
    ds = build_benchmark("coco_stuff", tmp_path / "cocostuff", "val")
    assert ds.names == ["000000000139.png", "000000000239.png", "000000000339.png"] == written.names
    coarse = metadata.eval_categories("coco_stuff")
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 320, 320) and item["label"].dtype == torch.int64
        torch.testing.assert_close(item["label"], eval_label_transform(written.labels[i]))
        present = {coarse[v] for v in np.unique(item["label"]) if v >= 0}
        assert present == {"ground", "building", "plant", "sky", "vehicle"}
    with Image.open(written.pairs[0][0]) as image:
        assert image.mode == "L"
    gray = denormalise(ds[0]["image"])
    torch.testing.assert_close(gray[0], gray[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(gray[1], gray[2], atol=1e-5, rtol=0)


def test_coco_stuff_10k_train_mat_dtypes_and_order(tmp_path) -> None:
    root = tmp_path / "cocostuff"
    written = write_coco_stuff(root, n_val=1, n_train10k=3, mat_dtype=("uint8", "uint16", "float64"))["train"]
    ds = build_benchmark("coco_stuff", str(root) + "/", "train")  # trailing slash: still the sibling
    assert ds.names == written.names == [f"COCO_train2014_{i:012d}.png" for i in (97, 87, 77)]  # file order
    assert all(p.parent.parent == tmp_path / "cocostuff10k" for p in ds.image_paths)
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 320, 320)
        torch.testing.assert_close(item["label"], eval_label_transform(written.labels[i]))
    with Image.open(written.pairs[1][0]) as image:
        assert image.mode == "L" and ds[1]["image"].shape[0] == 3


def test_coco_stuff_label_mapping_quirks() -> None:
    lut = metadata.coco_stuff_label_id_to_coarse()
    png = np.array([[0, 255, 200, 181]], dtype=np.uint8)
    np.testing.assert_array_equal(coco_stuff_png_to_coarse(png), [[9, -1, 0, lut[181]]])  # 200 -> 0 (QUIRK)
    for dtype in (np.uint8, np.uint16, np.float64, np.int32):
        s = np.array([[0, 1, 157, 182]], dtype=dtype)
        np.testing.assert_array_equal(coco_stuff_10k_to_coarse(s), [[-1, 9, 23, lut[181]]])
    assert coco_stuff_10k_root("/data/cocostuff/") == pathlib.Path("/data/cocostuff10k")
    assert coco_stuff_10k_root(pathlib.Path("/data/cocostuff")) == pathlib.Path("/data/cocostuff10k")


def test_coco_stuff_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="directory not found"):
        build_benchmark("coco_stuff", tmp_path / "cocostuff", "val")
    (tmp_path / "cocostuff").mkdir()
    with pytest.raises(ValueError, match="Coco164kFull_Stuff_Coarse.txt"):
        build_benchmark("coco_stuff", tmp_path / "cocostuff", "val")
    with pytest.raises(ValueError, match="cocostuff10k"):
        build_benchmark("coco_stuff", tmp_path / "cocostuff", "train")
    write_coco_stuff(tmp_path / "cocostuff", n_val=2, n_train10k=2)
    next((tmp_path / "cocostuff10k" / "annotations").glob("*.mat")).unlink()
    with pytest.raises(ValueError, match=r"\.mat"):
        build_benchmark("coco_stuff", tmp_path / "cocostuff", "train")


# --------------------------------------------------------------------------------------------- kitti-step
def test_kitti_step_two_sizes_and_batching(tmp_path) -> None:
    written = write_kitti_step(tmp_path / "kitti", "val")
    ds = build_benchmark("kitti_step", tmp_path / "kitti", "val")
    assert ds.names == ["0000/000000.png", "0000/000001.png", "0001/000000.png", "0001/000001.png"]
    assert ds.image_sizes() == [(40, 120), (40, 120), (48, 96), (48, 96)]
    assert read_image_size(ds.image_paths[2]) == (48, 96)
    names = metadata.categories("kitti_step")
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, *ds.image_sizes()[i]) and item["label"].dtype == torch.int64
        np.testing.assert_array_equal(item["label"].numpy(), written.labels[i])
        _assert_colours_match_labels(item, CLASS_COLOURS, {c: names.index(c) for c in SCENE_CLASSES})
    batches = size_grouped_batches(ds.image_sizes(), batch_size=4)
    assert batches == [[0, 1], [2, 3]]
    loader = DataLoader(ds, batch_sampler=batches, collate_fn=collate, num_workers=0)
    shapes = [(tuple(b["image"].shape), tuple(b["label"].shape), b["name"]) for b in loader]
    assert shapes[0] == ((2, 3, 40, 120), (2, 40, 120), ds.names[:2])
    assert shapes[1][:2] == ((2, 3, 48, 96), (2, 48, 96))
    with pytest.raises(ValueError, match="size_grouped_batches"):
        collate([ds[0], ds[2]])


def test_kitti_step_pairing_errors(tmp_path) -> None:
    write_kitti_step(tmp_path / "kitti", "train", sequences={"0003": ((24, 40), 2)})
    assert build_benchmark("kitti_step", tmp_path / "kitti", "train").names == ["0003/000000.png", "0003/000001.png"]
    with pytest.raises(ValueError, match="directory not found"):
        build_benchmark("kitti_step", tmp_path / "kitti", "val")
    shutil.copytree(tmp_path / "kitti" / "train", tmp_path / "kitti" / "val")
    with pytest.raises(ValueError, match="panoptic_maps"):
        build_benchmark("kitti_step", tmp_path / "kitti", "val")
    (tmp_path / "kitti" / "panoptic_maps" / "train" / "0003" / "000001.png").unlink()
    with pytest.raises(ValueError, match="0003/000001.png"):
        build_benchmark("kitti_step", tmp_path / "kitti", "train")


def test_kitti_step_label_decoding() -> None:
    panoptic = np.zeros((1, 4, 3), dtype=np.uint8)
    panoptic[0, :, 0] = [0, 18, 255, 19]
    panoptic[0, :, 1] = [5, 6, 7, 8]
    np.testing.assert_array_equal(kitti_step_panoptic_to_eval(panoptic), [[0, 18, -1, -1]])


# ----------------------------------------------------------------------------------------- batching, misc
def test_size_grouped_batches() -> None:
    a, b = (10, 20), (20, 10)
    assert size_grouped_batches([a, a, b, a, b], 2) == [[0, 1], [2, 4], [3]]
    assert size_grouped_batches([a] * 5, 2) == [[0, 1], [2, 3], [4]]
    assert size_grouped_batches([], 3) == []
    with pytest.raises(ValueError):
        size_grouped_batches([a], 0)


def test_write_imagenet_layout(tmp_path) -> None:
    train = write_imagenet(tmp_path / "imagenet", "train", wnids=("n01", "n02"), n_per_class=2)
    val = write_imagenet(tmp_path / "imagenet", "val", wnids=("n01", "n02"), n_per_class=2)
    assert [p.name for p in train["n02"]] == ["n02_1.JPEG", "n02_2.JPEG"]
    assert val["n02"][1] == tmp_path / "imagenet" / "val" / "n02" / "ILSVRC2012_val_00000004.JPEG"
    rgb = np.asarray(load_rgb(train["n01"][0])).reshape(-1, 3).astype(int)
    share = (np.abs(rgb - np.array(CLASS_COLOURS[SCENE_CLASSES[0]])).sum(1) < 40).mean()
    assert 0.5 < share < 0.9
    with pytest.raises(UnreadableImageError):
        load_rgb(write_corrupt_jpeg(tmp_path / "bad.JPEG"))
