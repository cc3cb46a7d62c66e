"""main_reco.py --images: own images and own class names, with the colour-coded models (known answer)."""
import json

import numpy as np
import pytest
from PIL import Image

import main_reco
from synthetic import SCENE_CLASSES, draw_scene, render
from test_end_to_end import colour_world, install_colour_models, reco_config, write_imagenet_of

CLASSES = ["road", "building", "vegetation", "sky", "car"]


def write_scenes(directory, sizes=((60, 80), (97, 131), (200, 150))):
    """Scenes of three sizes (one in a sub-folder, one PNG) and their expected masks (-1 = ignore)."""
    rng = np.random.default_rng(0)
    expected = {}
    for i, (h, w) in enumerate(sizes):
        scene = draw_scene(h, w, rng)
        stem = f"sub/scene{i}" if i == 1 else f"scene{i}"
        path = directory / f"{stem}.{'png' if i == 2 else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render(scene)).save(path, quality=95, subsampling=0)
        # scene indices are SCENE_CLASSES order; the user's class order is CLASSES
        remap = np.array([CLASSES.index(c) for c in SCENE_CLASSES])
        expected[stem] = np.where(scene >= 0, remap[np.maximum(scene, 0)], -1)
    return expected


@pytest.fixture
def colour_setup(tmp_path, monkeypatch):
    vocabulary, colours = colour_world(CLASSES + ["tree", "person", "building", "road"])
    install_colour_models(monkeypatch, vocabulary, colours)
    write_imagenet_of(tmp_path / "ImageNet2012", colours)
    config = reco_config(tmp_path)
    assert main_reco.main(["--config", str(config), "--stage", "index"]) == 0
    return config


def test_own_images_known_answer(tmp_path, colour_setup):
    expected = write_scenes(tmp_path / "photos")
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    argv = ["--config", str(colour_setup), "--images", str(tmp_path / "photos"),
            "--categories", ",".join(CLASSES), "--out", str(out)]
    assert main_reco.main(argv) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["categories"] == CLASSES
    assert sorted(summary["images"]) == sorted(expected)
    assert summary["skipped"] and summary["skipped"][0].endswith("broken.jpg")
    assert (out / "legend.png").is_file()
    for stem, truth in expected.items():
        mask = np.asarray(Image.open(out / "masks" / f"{stem}.png"))
        assert mask.shape == truth.shape  # the input's size
        valid = truth >= 0
        accuracy = float((mask[valid] == truth[valid]).mean())
        assert accuracy > 0.9, (stem, accuracy)
        overlay = Image.open(out / "overlays" / f"{stem}.png")
        assert overlay.size == (truth.shape[1], truth.shape[0])
        fractions = summary["images"][stem]
        assert sum(fractions.values()) == pytest.approx(1.0)
        assert fractions["sky"] == pytest.approx(float((truth == CLASSES.index("sky")).mean()), abs=0.1)


def test_per_category_cache_makes_a_new_class_cheap(tmp_path, colour_setup, monkeypatch):
    write_scenes(tmp_path / "photos", sizes=((40, 60),))
    out = tmp_path / "out"
    base = ["--config", str(colour_setup), "--images", str(tmp_path / "photos"), "--out", str(out), "--no-crf"]
    assert main_reco.main(base + ["--categories", "sky,car"]) == 0

    import reco_api.references as common

    computed = []
    original = common.compute_reference_embeddings

    def spy(categories, retrieve_images, *args, **kwargs):
        def tracking(name):
            computed.append(name)
            return retrieve_images(name)
        return original(categories, tracking, *args, **kwargs)

    monkeypatch.setattr(common, "compute_reference_embeddings", spy)
    categories_file = tmp_path / "classes.txt"
    categories_file.write_text("sky\ncar\n# a comment\nroad\nbuilding\n")
    assert main_reco.main(base + ["--categories", str(categories_file)]) == 0
    assert computed == []  # contexts, sky and car are cached; road and building are contexts
    assert json.loads((out / "summary.json").read_text())["categories"] == ["sky", "car", "road", "building"]
    assert main_reco.main(base + ["--categories", "sky,car,vegetation,person,fence"]) == 0
    assert computed == ["fence"]  # vegetation -> tree, person is a context: only fence is new


def test_many_unreadable_images_are_counted_not_logged_one_by_one(tmp_path, colour_setup):
    photos = tmp_path / "photos"
    write_scenes(photos, sizes=((40, 60),))
    Image.open(photos / "scene0.jpg").save(photos / "scene0.png")  # same stem: both keep their extension
    for i in range(8):
        (photos / f"broken{i}.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    argv = ["--config", str(colour_setup), "--images", str(photos), "--categories", "sky,car", "--out", str(out),
            "--no-crf"]
    assert main_reco.main(argv) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["skipped"]) == 8  # all listed
    assert sorted(summary["images"]) == ["scene0_jpg", "scene0_png"]
    assert (out / "masks" / "scene0_jpg.png").is_file() and (out / "masks" / "scene0_png.png").is_file()
    log = (out / "reco.log").read_text()
    assert log.count("skipped cannot read image") == 5
    assert log.count("more than 5 images skipped") == 1
    assert "8 unreadable images skipped (listed in summary.json)" in log


@pytest.mark.parametrize("case, message", [
    ("empty", "no images found"),
    ("duplicate", "duplicate class names ['sky']"),
    ("no_index", "--stage index"),
    ("missing_dir", "folder not found"),
])
def test_own_images_clear_errors(tmp_path, capsys, case, message):
    photos = tmp_path / "photos"
    photos.mkdir()
    if case != "empty":
        write_scenes(photos, sizes=((40, 60),))
    (tmp_path / "ImageNet2012" / "train").mkdir(parents=True)
    config = reco_config(tmp_path)
    categories = "sky,car,sky" if case == "duplicate" else "sky,car"
    images = str(tmp_path / "nowhere") if case == "missing_dir" else str(photos)
    argv = ["--config", str(config), "--images", images, "--categories", categories, "--out", str(tmp_path / "o")]
    assert main_reco.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # a failed run leaves no half-made output folder
