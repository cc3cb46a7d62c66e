"""Own-images output names: today's names where they were unique, unique names always, linear time; and
per-file skip warnings that stop after the first few."""
from __future__ import annotations

import logging
from pathlib import Path

from datasets.images import output_stems
from utils.progress import FirstFewWarnings


def test_existing_names_are_kept(tmp_path):
    paths = [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "b.jpeg", tmp_path / "sub" / "photo.JPG",
             tmp_path / "sub" / "a.png"]
    assert output_stems(paths, tmp_path) == ["a_jpg", "a_png", "b", "sub/photo", "sub/a"]


def test_a_single_file_is_named_after_itself(tmp_path):
    image = tmp_path / "photo.jpg"
    image.write_bytes(b"")
    assert output_stems([image], image) == ["photo"]


def test_names_that_would_still_collide_are_numbered(tmp_path):
    paths = [tmp_path / "a.JPG", tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "a_png.jpg",
             tmp_path / "a_jpg_2.png"]
    # a.JPG and a.jpg both give "a_jpg"; "a_jpg_2" is a file's own name, so the repeat becomes "a_jpg_3";
    # a.png gives "a_png", which is also a_png.jpg's own name
    assert output_stems(paths, tmp_path) == ["a_jpg", "a_jpg_3", "a_png", "a_png_2", "a_jpg_2"]


def test_many_duplicate_stems_get_unique_names_in_the_usual_form(tmp_path):
    n = 5_000
    paths = [tmp_path / f"img{i:05d}.{ext}" for i in range(n) for ext in ("jpg", "png")]
    paths += [tmp_path / "same.jpg", tmp_path / "same.JPG", tmp_path / "same.Jpg"]
    names = output_stems(paths, tmp_path)
    assert len(set(names)) == len(names) == 2 * n + 3
    assert names[:4] == ["img00000_jpg", "img00000_png", "img00001_jpg", "img00001_png"]
    assert names[-3:] == ["same_jpg", "same_jpg_2", "same_jpg_3"]


def test_only_the_first_few_skips_are_logged_one_by_one(caplog):
    logger = logging.getLogger("test_output_names")
    warnings = FirstFewWarnings(logger, listed_in="summary.json", limit=3)
    with caplog.at_level(logging.WARNING, logger="test_output_names"):
        for i in range(1000):
            warnings.warn("skipped %s", Path(f"broken{i}.jpg"))
    messages = [record.getMessage() for record in caplog.records]
    assert messages[:3] == ["skipped broken0.jpg", "skipped broken1.jpg", "skipped broken2.jpg"]
    assert len(messages) == 4 and "more than 3 images skipped" in messages[3] and "summary.json" in messages[3]
    assert warnings.count == 1000
