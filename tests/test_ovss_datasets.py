"""Readers and class lists of the eight open-vocabulary benchmarks, on synthetic trees in their layouts."""
import numpy as np
import pytest
import torch
from PIL import Image

from datasets import metadata
from datasets.registry import BENCHMARKS
from datasets.benchmarks import AnnotationMismatchError, build_benchmark
from datasets.ovss import labels_to_classes, ovss_layout
from synthetic_ovss import write_ovss

N_CLASSES = {"voc21": 21, "context60": 60, "coco_object": 81, "voc20": 20, "context59": 59,
             "coco_stuff171": 171, "cityscapes19": 19, "ade20k150": 150}


def test_class_lists_and_sources():
    assert BENCHMARKS.names(lambda spec: spec.protocol == "ovss") == tuple(N_CLASSES)
    for name, n in N_CLASSES.items():
        classes = metadata.ovss_classes(name)
        assert len(classes) == n == metadata.n_eval_classes(name) == len(metadata.palette(name))
        assert metadata.eval_categories(name) == [c.name for c in classes]
        queries = metadata.categories(name)
        assert len(queries) == len(set(queries)) >= n
        assert "SCLIP" in metadata._load(metadata.ovss_metadata_path(name).name)["source"]
    assert [metadata.ovss_background(n) for n in N_CLASSES] == ["background"] * 3 + [None] * 5
    voc21 = metadata.ovss_classes("voc21")
    assert voc21[0].name == "background" and "tree" in voc21[0].queries and len(voc21[0].queries) == 26
    assert voc21[4].name == "boat" and voc21[4].queries == ("ship",)  # the peers' renamed class
    assert metadata.ovss_classes("context60")[0].queries == ("background",)
    assert metadata.eval_categories("ade20k150")[44] == "chest of drawers"
    assert metadata.categories("ade20k150")[44] == "chestofdrawers"  # queried as the peers spell it
    # VOC and Context share query names, so their reference embeddings are shared through the cache
    assert len(set(metadata.categories("voc20")) & set(metadata.categories("context59"))) >= 14


def test_label_conventions():
    raw = np.array([[0, 1, 20, 255]])
    np.testing.assert_array_equal(labels_to_classes(raw, 21, reduce_zero_label=False), [[0, 1, 20, -1]])
    np.testing.assert_array_equal(labels_to_classes(raw, 20, reduce_zero_label=True), [[-1, 0, 19, -1]])


@pytest.mark.parametrize("name", list(N_CLASSES))
def test_reader_of_each_layout(tmp_path, name):
    written = write_ovss(name, tmp_path / name)
    dataset = build_benchmark(name, tmp_path / name, "val")
    assert len(dataset) == 2 and dataset.names == written.names
    assert dataset.image_sizes() == [label.shape for label in written.labels]
    for i, expected in enumerate(written.labels):
        item = dataset[i]
        assert item["image"].shape == (3, *expected.shape) and item["image"].dtype == torch.float32
        assert torch.equal(item["label"], torch.from_numpy(expected))
        assert item["label"].max() < N_CLASSES[name] and (item["label"] >= 0).any()


def test_wrong_layout_names_the_expected_path(tmp_path):
    write_ovss("voc21", tmp_path / "VOCdevkit" / "VOC2012")
    with pytest.raises(ValueError) as error:
        build_benchmark("voc21", tmp_path / "VOCdevkit", "val")  # one level too high
    message = str(error.value)
    assert "VOCdevkit/VOC2012 folder" in message and str(tmp_path / "VOCdevkit" / "JPEGImages") in message
    with pytest.raises(ValueError, match="unknown split 'train'"):
        build_benchmark("voc21", tmp_path / "VOCdevkit" / "VOC2012", "train")
    write_ovss("cityscapes19", tmp_path / "cityscapes")
    (tmp_path / "cityscapes" / "gtFine").rename(tmp_path / "cityscapes" / "gtCoarse")
    with pytest.raises(ValueError, match=f"not found: {tmp_path / 'cityscapes' / 'gtFine' / 'val'}"):
        build_benchmark("cityscapes19", tmp_path / "cityscapes", "val")


def test_missing_split_list_and_label_files(tmp_path):
    root = tmp_path / "VOC2010"
    written = write_ovss("context59", root)
    (root / "ImageSets" / "SegmentationContext" / "val.txt").unlink()
    with pytest.raises(ValueError, match=f"split list not found: {root / 'ImageSets/SegmentationContext/val.txt'}"):
        build_benchmark("context59", root, "val")
    root = tmp_path / "ADEChallengeData2016"
    written = write_ovss("ade20k150", root)
    written.pairs[0][1].unlink()
    with pytest.raises(ValueError, match="label files") as error:
        build_benchmark("ade20k150", root, "val")
    assert str(written.pairs[0][1]) in str(error.value)


def test_annotation_of_another_size_is_an_error_naming_it(tmp_path):
    root = tmp_path / "coco_stuff164k"
    written = write_ovss("coco_stuff171", root)
    label = written.pairs[1][1]
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(label)
    dataset = build_benchmark("coco_stuff171", root, "val")
    with pytest.raises(AnnotationMismatchError, match=f"label {label} is 10x10"):
        dataset[1]


def test_label_values_beyond_the_class_list_name_both_files(tmp_path):
    root = tmp_path / "cityscapes"
    written = write_ovss("cityscapes19", root)
    label = written.pairs[0][1]
    array = np.asarray(Image.open(label)).copy()
    array[0, 0] = 33  # a labelIds value: the labelTrainIds conversion was not run
    Image.fromarray(array).save(label)
    with pytest.raises(AnnotationMismatchError) as error:
        build_benchmark("cityscapes19", root, "val")[0]
    message = str(error.value)
    assert str(label) in message and "ovss_cityscapes19.json" in message and "19 classes" in message
    assert "label value 33" in message


def test_layouts_cover_every_benchmark():
    for name in N_CLASSES:
        assert ovss_layout(name).image_dir
    with pytest.raises(ValueError, match="unknown open-vocabulary benchmark 'cityscapes'"):
        ovss_layout("cityscapes")
