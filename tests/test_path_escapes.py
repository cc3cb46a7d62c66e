"""Names users give never write outside the run's folders; index entries never read outside the collection."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

import main_reco
from reco_api.collection import Collection
from entry.run_dirs import cosegmentation_visualiser
from reco_api.reference_cache import FileReferenceCache
from image_index.storage import index_dir
from test_cli_errors import error_lines, reco_yaml
from test_torchscript_weights import write_index
from reco_api.settings import reference_settings
from utils.config import ConfigError, load_reco_config
from utils.naming import NAME_MAX_BYTES, file_name_part, fit_file_name

LONG_NAME = "a very long class name " * 13  # 299 bytes: over the 255 a file name may have
HOSTILE_NAMES = ["../x", "a/b", "../../../../../../tmp/escaped", "nul\0byte", LONG_NAME, "é" * 150]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_file_names_of_ordinary_names_are_unchanged_and_others_are_safe():
    for name in ["traffic light", "sky other", "parking lot", "person", "T-shirt (2)", "café"]:
        assert file_name_part(name) == name
    parts = [file_name_part(name) for name in HOSTILE_NAMES]
    assert len(set(parts)) == len(parts)
    for part in parts:
        assert "/" not in part and "\0" not in part and part not in (".", "..")
        assert len(f"coseg_{part}.png".encode()) <= NAME_MAX_BYTES - 20
    assert file_name_part("../x").startswith("x_")
    assert fit_file_name("abc", 3) == "abc" and len(fit_file_name("é" * 100, 50).encode()) <= 50


def test_cosegmentation_panels_of_any_name_stay_in_the_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    visualise = cosegmentation_visualiser(run_dir)
    images, similarity = torch.rand(2, 3, 16, 16), torch.rand(2, 4, 4)
    for name in ["traffic light"] + HOSTILE_NAMES:
        visualise(name, images, similarity)
    written = files_under(tmp_path)
    assert all(p.parent == run_dir for p in written - {run_dir}), written
    assert (run_dir / "coseg_traffic light.png").is_file()  # the original's name for an ordinary class
    assert len(written - {run_dir}) == 1 + len(HOSTILE_NAMES)
    assert not Path("/tmp/escaped.png").exists()
    for path in run_dir.iterdir():
        Image.open(path).verify()


def test_reference_cache_files_of_any_name_stay_in_the_cache_and_hold_the_real_name(tmp_path):
    config = load_reco_config(reco_yaml(tmp_path))
    cache = FileReferenceCache(dataclasses.replace(reference_settings(config), cache_root=tmp_path / "references"))
    for i, name in enumerate(HOSTILE_NAMES):
        cache.put(name, ("../ctx",), torch.full((4,), float(i + 1)))  # a zero vector is refused
    fresh = FileReferenceCache(dataclasses.replace(reference_settings(config), cache_root=tmp_path / "references"))
    for i, name in enumerate(HOSTILE_NAMES):
        assert torch.equal(fresh.get(name, ("../ctx",)), torch.full((4,), float(i + 1)))
    written = [p for p in files_under(tmp_path) if p.is_file() and p.suffix == ".pt"]
    assert len(written) == len(HOSTILE_NAMES) and all(p.parent == cache.directory for p in written)
    assert all(len(p.name.encode()) < NAME_MAX_BYTES - 30 for p in written)  # room for atomic_write's temp name
    assert {torch.load(p, weights_only=True)["name"] for p in written} == set(HOSTILE_NAMES)


@pytest.mark.parametrize("where", ["argument", "config"])
def test_a_suffix_naming_another_folder_is_refused(tmp_path, capsys, where):
    (tmp_path / "cityscapes").mkdir()
    if where == "argument":
        cfg = reco_yaml(tmp_path)
        argv = ["--config", str(cfg), "--suffix", "../x"]
    else:
        cfg = reco_yaml(tmp_path, suffix="../../x")
        argv = ["--config", str(cfg)]
    before = files_under(tmp_path)
    assert main_reco.main(argv) == 2
    (line,) = error_lines(capsys)
    assert "suffix (--suffix): " in line and "'/'" in line
    assert files_under(tmp_path) == before
    cfg = reco_yaml(tmp_path, suffix="x" * 65)
    assert main_reco.main(["--config", str(cfg)]) == 2
    assert "longer than 64 bytes" in error_lines(capsys)[0]


@pytest.mark.parametrize("entry", ["/etc/hostname", "../../outside.jpg", "n01/../../../x.JPEG", ".._x.JPEG"])
def test_index_entries_outside_the_collection_are_refused(tmp_path, entry):
    imagenet = Collection("dir_imagenet", tmp_path / "ImageNet2012", "train", "tiny-vit-clip", is_imagenet=True)
    folder = Collection("collection_dir", tmp_path / "photos", "photos", "tiny-vit-clip", is_imagenet=False)
    assert imagenet.path_of("n01_1.JPEG") == tmp_path / "ImageNet2012" / "train" / "n01" / "n01_1.JPEG"
    assert folder.path_of("a/b.jpg") == tmp_path / "photos" / "a" / "b.jpg"
    for collection in (imagenet, folder):
        if entry == ".._x.JPEG" and not collection.is_imagenet:
            continue  # a file name starting with '..' is fine in a folder
        with pytest.raises(ConfigError, match=r"filenames\.txt: the entry .* lies outside"):
            collection.path_of(entry)


def test_retrieval_from_an_index_listing_etc_hostname_reads_nothing(tmp_path, monkeypatch):
    from reco_api import ReCo

    write_index(index_dir(tmp_path / "ImageNet2012", "tiny-vit-clip", "train"), ["/etc/hostname", "/etc/passwd"])
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    model = ReCo.from_config(reco_yaml(tmp_path), text_attention=False, dense_clip_inference=False)
    with pytest.raises(ConfigError) as caught:
        model.references(["cat"])
    message = str(caught.value)
    assert "\n" not in message and "filenames.txt" in message
    assert "'/etc/hostname'" in message or "'/etc/passwd'" in message  # whichever ranks first
    assert not any(os.fspath(p).startswith("/etc") for p in opened)
