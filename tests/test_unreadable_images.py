"""A corrupt image in a benchmark split is a counted, logged skip: the run scores the other images.

Cityscapes is read at the 320x320 evaluation size; KITTI-STEP at full resolution, where batches are
grouped by the sizes read from the image headers, so the corrupt header must not stop that grouping.
"""
import json

import pytest

import main_reco
from synthetic import write_cityscapes, write_imagenet, write_kitti_step
from test_end_to_end import reco_config, run_dir

WRITERS = {"cityscapes": write_cityscapes, "kitti_step": write_kitti_step}


@pytest.mark.parametrize("dataset_name", sorted(WRITERS))
def test_corrupt_image_is_skipped_and_listed(tmp_path, dataset_name):
    write_imagenet(tmp_path / "ImageNet2012", "train", n_per_class=2)
    written = WRITERS[dataset_name](tmp_path / dataset_name, "val")
    corrupt = written.pairs[0][0]
    corrupt.write_bytes(b"not an image at all")
    config = reco_config(tmp_path, n_imgs=2, dataset_name=dataset_name, dir_dataset=str(tmp_path / dataset_name),
                         crf=False, n_visualisations=0)

    assert main_reco.main(["--config", str(config)]) == 0

    out = run_dir(config)
    listed = (out / "skipped_images.txt").read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(str(corrupt)), listed
    assert "1 unreadable images skipped" in (out / "reco.log").read_text()
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["Pixel Acc"] <= 1.0  # scored on the readable images
