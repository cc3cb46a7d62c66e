"""A retrieval collection that is any folder of images (`collection_dir`): listing, index, retrieval."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

import main_reco
from reco_api.collection import list_folder_images
from synthetic import write_corrupt_jpeg
from test_end_to_end import colour_world, install_colour_models, reco_config, write_imagenet_of


def _write_mixed_folder(root: Path, n: int = 7) -> list[Path]:
    """n small images in nested folders, alternately PNG, JPEG and WebP, plus one corrupt JPEG, a text
    file, a hidden image and an image inside the top-level index/ folder (both must be skipped)."""
    rng = np.random.default_rng(0)
    written = []
    for i in range(n):
        folder = root / ("a" if i % 2 else "b/c") / ("deep" if i % 3 == 0 else "")
        path = folder / f"img_{i}.{['png', 'jpg', 'webp'][i % 3]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)).save(path)
        written.append(path)
    written.append(write_corrupt_jpeg(root / "a" / "broken.jpg"))
    (root / "notes.txt").write_text("not an image")
    Image.new("RGB", (8, 8)).save(root / "a" / ".hidden.png")
    (root / "index").mkdir()
    Image.new("RGB", (8, 8)).save(root / "index" / "stray.png")
    return written


def test_folder_listing_is_recursive_sorted_and_skips_the_index_folder(tmp_path):
    written = _write_mixed_folder(tmp_path / "col")
    listed = list_folder_images(tmp_path / "col")
    assert sorted(listed) == sorted(written)
    relative = [p.relative_to(tmp_path / "col").as_posix() for p in listed]
    assert relative == sorted(relative)


def _config(tmp_path: Path, name: str, **extra) -> str:
    config = {"dir_ckpt": str(tmp_path / "ckpt"), "clip_arch": "tiny-vit-clip", "weights": {"clip": "random"},
              "device": "cpu", "n_workers": 0, "index_batch_size": 3, "index_shard_size": 4, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_folder_index_equals_the_index_of_the_same_files_in_the_imagenet_layout(tmp_path):
    collection = tmp_path / "my photos"
    files = _write_mixed_folder(collection)
    imagenet = tmp_path / "ImageNet2012"
    as_imagenet = {}
    for i, path in enumerate(files):  # the same bytes under ImageNet names (PIL reads by content)
        wnid = f"n{10000000 + i % 3}"
        target = imagenet / "train" / wnid / f"{wnid}_{i}.JPEG"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        as_imagenet[path.relative_to(collection).as_posix()] = target.name

    assert main_reco.main(["--config", _config(tmp_path, "folder", collection_dir=str(collection)), "--stage",
                           "index"]) == 0
    assert main_reco.main(["--config", _config(tmp_path, "imagenet", dir_imagenet=str(imagenet)), "--stage",
                           "index"]) == 0

    folder_index = collection / "index" / "tiny_vit_clip_my_photos"
    imagenet_index = imagenet / "index" / "tiny_vit_clip_train"
    rows = {}
    for directory in (folder_index, imagenet_index):
        names = (directory / "filenames.txt").read_text().splitlines()
        rows[directory] = dict(zip(names, np.load(directory / "embeddings.npy")))
        meta = json.loads((directory / "meta.json").read_text())
        assert meta["count"] == len(files) - 1 and meta["n_failed"] == 1
    assert "a/broken.jpg" not in rows[folder_index] and len(rows[folder_index]) == len(files) - 1
    assert "a/broken.jpg" in (folder_index / "failed_images.txt").read_text()
    for relative, row in rows[folder_index].items():
        np.testing.assert_array_equal(row, rows[imagenet_index][as_imagenet[relative]])


def test_retrieval_from_a_folder_gives_the_colour_world_references(tmp_path, monkeypatch):
    """The colour-world known-answer references with the retrieval images in a nested folder of PNGs and
    JPEGs instead of ImageNet: retrieval returns paths in the folder, and each category's reference
    embedding is its colour."""
    from datasets import metadata
    from synthetic import write_cityscapes

    categories = metadata.categories("cityscapes")
    vocabulary, colours = colour_world(categories + ["tree", "person"])
    install_colour_models(monkeypatch, vocabulary, colours)
    wnids = write_imagenet_of(tmp_path / "source", colours)
    collection = tmp_path / "colour photos"
    for i, wnid in enumerate(wnids):
        for j, path in enumerate(sorted((tmp_path / "source" / "train" / wnid).glob("*.JPEG"))):
            target = collection / f"group{i % 4}" / wnid / f"photo{j}.{'png' if j % 2 else 'jpg'}"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.open(path).save(target)
    write_cityscapes(tmp_path / "cityscapes", "val", n_images=2)
    config = reco_config(tmp_path, dir_imagenet=None, collection_dir=str(collection), collection_name="colours")

    retrieved: dict[str, list[Path]] = {}
    import reco_api.references as common

    original = common.retrieve

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        retrieved.update(result)
        return result

    monkeypatch.setattr(common, "retrieve", spy)
    assert main_reco.main(["--config", str(config), "--stage", "references"]) == 0
    assert retrieved and all(Path(p).is_relative_to(collection.resolve()) for ps in retrieved.values() for p in ps)
    assert (collection / "index" / "tiny_vit_clip_colours" / "meta.json").is_file()
    # Known answer: every category's retrieved images show its colour, so its reference is that colour.
    from utils.io import safe_load_pickle

    from entry.run_dirs import reference_pickle_path
    from utils.config import load_reco_config

    pickle_path = reference_pickle_path(load_reco_config(config))  # tiny models: the name has a setting hash
    assert pickle_path.name.startswith("tiny_vit_col_colours_ce_ta_") and pickle_path.name.endswith("_k3.pkl")
    references = safe_load_pickle(pickle_path)
    assert list(references) == categories
    for name in categories:
        assert int(references[name].argmax()) == vocabulary[name], name


def test_missing_or_empty_collection_is_one_clear_error(tmp_path, capsys):
    assert main_reco.main(["--config", _config(tmp_path, "none", collection_dir=str(tmp_path / "nowhere")),
                           "--stage", "index"]) == 2
    assert "collection_dir: directory not found" in capsys.readouterr().err
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert main_reco.main(["--config", _config(tmp_path, "empty", collection_dir=str(tmp_path / "empty")),
                           "--stage", "index"]) == 2
    assert "collection_dir: no image files under" in capsys.readouterr().err
