"""reco_api.ReCo with the colour-coded models: known answers for arrays, PIL images and paths, equal to
the command line's masks; memoised references; concurrent requests; bad input."""
import json
import shutil
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import main_reco
from datasets import images as own
from reco_api import ImageTooLargeError, ReCo, Segmentation, check_categories
from synthetic import draw_scene, render
from test_own_images import CLASSES, colour_setup, write_scenes  # noqa: F401 (colour_setup is a fixture)
from utils.config import ConfigError, load_reco_config


def accuracy(labels, truth):
    valid = truth >= 0
    return float((labels[valid] == truth[valid]).mean())


def test_array_pil_and_path_give_the_known_answer_and_the_cli_masks(tmp_path, colour_setup):
    expected = write_scenes(tmp_path / "photos")
    out = tmp_path / "out"
    # without the CRF, which costs seconds per image on a busy CPU (the CLI is the API plus file I/O)
    assert main_reco.main(["--config", str(colour_setup), "--images", str(tmp_path / "photos"),
                           "--categories", ",".join(CLASSES), "--out", str(out), "--no-crf"]) == 0
    summary = json.loads((out / "summary.json").read_text())

    model = ReCo.from_config(colour_setup, crf=False)
    for stem, truth in expected.items():
        path = next((tmp_path / "photos").glob(f"{stem}.*"))
        cli_mask = np.asarray(Image.open(out / "masks" / f"{stem}.png"))
        with Image.open(path) as opened:
            pil = opened.convert("RGB")
        for image in (path, str(path), pil, np.asarray(pil)):
            result = model.segment(image, CLASSES)
            assert isinstance(result, Segmentation)
            assert result.labels.dtype == np.uint8 and result.labels.shape == truth.shape
            assert accuracy(result.labels, truth) > 0.9, (stem, type(image))
            np.testing.assert_array_equal(result.labels, cli_mask)
            assert result.fractions == pytest.approx(summary["images"][stem])
        assert result.scores.shape[0] == len(CLASSES) and result.scores.dtype == np.float32
        assert min(result.scores.shape[1:]) == 320  # image_short_side: scores at the inference size
        assert result.crf_probabilities is None
        assert result.overlay.size == pil.size and result.overlay.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(result.overlay),
                                      np.asarray(Image.open(out / "overlays" / f"{stem}.png")))
        assert result.legend().size[0] > 0
        assert sum(result.fractions.values()) == pytest.approx(1.0)

    batch = model.segment_batch([tmp_path / "photos" / "scene0.jpg", tmp_path / "photos" / "scene2.png"], CLASSES)
    assert [r.labels.shape for r in batch] == [expected["scene0"].shape, expected["scene2"].shape]
    np.testing.assert_array_equal(batch[1].labels, np.asarray(Image.open(out / "masks" / "scene2.png")))
    assert model.segment_batch([], CLASSES) == []

    # with the CRF, at a small inference size to keep it fast
    small = ReCo.from_config(colour_setup, image_short_side=128)
    result = small.segment(tmp_path / "photos" / "scene0.jpg", CLASSES, crf=True)
    assert result.crf_probabilities.shape == (len(CLASSES), 128, 170)
    assert accuracy(result.labels, expected["scene0"]) > 0.9


def test_the_api_predicts_in_the_configured_sliding_windows(tmp_path, colour_setup, monkeypatch):
    """slide_window / slide_stride apply to the API as to the benchmarks (one predictor): every model call
    sees a window, and the colour-coded models still give the known answer."""
    import reco_api.models as models

    expected = write_scenes(tmp_path / "photos")
    crops = []
    original = models.predict

    def spy(images, *args, **kwargs):
        crops.append(tuple(images.shape[-2:]))
        return original(images, *args, **kwargs)

    monkeypatch.setattr(models, "predict", spy)
    model = ReCo.from_config(colour_setup, crf=False, image_short_side=64, slide_window=32, slide_stride=16)
    path = next((tmp_path / "photos").glob("scene0.*"))
    result = model.segment(path, CLASSES)
    assert len(crops) > 1 and all(h <= 32 and w <= 32 for h, w in crops)
    assert min(result.scores.shape[1:]) == 64
    assert accuracy(result.labels, expected["scene0"]) > 0.9


def test_references_are_computed_once_per_class_name(tmp_path, colour_setup, monkeypatch):
    import reco_api.references as common
    import networks

    computed, clips_built = [], []
    original_references, original_clip = common.compute_reference_embeddings, networks.build_clip

    def spy(categories, retrieve_images, *args, **kwargs):
        def tracking(name):
            computed.append(name)
            return retrieve_images(name)
        return original_references(categories, tracking, *args, **kwargs)

    def counting_clip(arch, *args, **kwargs):
        clips_built.append(arch)
        return original_clip(arch, *args, **kwargs)

    monkeypatch.setattr(common, "compute_reference_embeddings", spy)
    monkeypatch.setattr(networks, "build_clip", counting_clip)
    image = render(draw_scene(48, 64, np.random.default_rng(1)))
    model = ReCo.from_config(colour_setup, crf=False)
    messages = []
    model.segment(image, ["sky", "car"], progress=lambda fraction, message: messages.append((fraction, message)))
    assert set(computed) == {"tree", "sky", "building", "road", "person", "car"}
    assert any("co-segmenting" in m for _, m in messages) and messages[-1] == (1.0, "done")
    computed.clear()
    model.segment(image, "car, sky, fence")
    assert computed == ["fence"]  # sky and car memoised; only fence is new
    computed.clear()
    model.segment(image, ["fence", "sky"])
    assert computed == []
    assert clips_built.count("tiny-vit-clip") == 1  # the retrieval CLIP is kept for later classes

    fresh = ReCo.from_config(colour_setup)  # another process would find the per-category cache
    fresh.references(["car", "fence", "vegetation"])
    assert computed == []


def test_concurrent_requests_are_answered_correctly(tmp_path, colour_setup):
    rng = np.random.default_rng(2)
    scenes = [draw_scene(64, 96, rng) for _ in range(2)]
    images = [render(scene) for scene in scenes]
    truths = [np.where(s >= 0, np.array([CLASSES.index(c) for c in ("road", "building", "vegetation", "sky", "car")])[np.maximum(s, 0)], -1) for s in scenes]
    first, second = ReCo.from_config(colour_setup, crf=False), ReCo.from_config(colour_setup, crf=False)
    reversed_classes = CLASSES[::-1]
    jobs = [(first, 0, CLASSES), (first, 1, reversed_classes), (second, 1, CLASSES), (second, 0, reversed_classes)]
    answers, errors = [None] * len(jobs), []
    start = threading.Barrier(len(jobs))

    def run(i, model, image_index, classes):
        try:
            start.wait()
            answers[i] = model.segment(images[image_index], classes)
        except BaseException as e:  # reported below; a thread's exception would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, *job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    serial = ReCo.from_config(colour_setup, crf=False)
    for (_, image_index, classes), answer in zip(jobs, answers):
        again = serial.segment(images[image_index], classes)
        np.testing.assert_array_equal(answer.labels, again.labels)
        remap = np.array([classes.index(c) for c in CLASSES])
        truth = truths[image_index]
        assert accuracy(answer.labels, np.where(truth >= 0, remap[np.maximum(truth, 0)], -1)) > 0.9
    cache_files = list((tmp_path / "ckpt" / "references").rglob("*"))
    assert not [p for p in cache_files if p.name.endswith(".tmp")]
    for path in (p for p in cache_files if p.suffix == ".pt"):
        entry = torch.load(path, weights_only=True)
        vector = entry["embedding"] if path.is_relative_to(tmp_path / "ckpt" / "references" / "text") \
            else entry["reference"]  # text embeddings are cached beside the references
        assert vector.ndim == 1 and path.name.startswith(entry["name"].replace(" ", "_"))


@pytest.mark.parametrize("categories, message", [
    ([], "no class names given"),
    ("", "no class names given"),
    (["sky", " sky"], "duplicate class names ['sky']"),
    (["sky", ""], "empty class name"),
    ([f"c{i}" for i in range(256)], "at most 255 classes"),
    (["sky", 3], "must be strings"),
])
def test_bad_class_lists(categories, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_categories(categories)


def huge_png(path, width=20_000, height=20_000):
    """A PNG whose header claims width x height pixels (a "decompression bomb"); its data are never read."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL warns; we refuse
def test_bad_images_and_a_very_wide_one(tmp_path, colour_setup):
    model = ReCo.from_config(colour_setup, crf=False)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")
    with pytest.raises(OSError, match="cannot read image .*notes.txt"):
        model.segment(text_file, CLASSES)
    with pytest.raises(OSError, match="cannot read image"):
        model.segment(tmp_path / "missing.png", CLASSES)
    with pytest.raises(ValueError, match="outside 0..1 and 0..255"):  # float arrays: 0..1 or 0..255
        model.segment(np.full((8, 8, 3), 300.0, dtype=np.float32), CLASSES)
    with pytest.raises(own.ImageTooThinError, match="4000 x 3 pixels is too elongated"):
        model.segment(np.zeros((3, 4000, 3), dtype=np.uint8), CLASSES)
    with pytest.raises(ValueError, match=r"must be \(H, W, 3\)"):
        model.segment(np.zeros((8, 8, 5), dtype=np.uint8), CLASSES)
    with pytest.raises(TypeError, match="got int"):
        model.segment(3, CLASSES)
    with pytest.raises(ImageTooLargeError, match="120,000,000 pixels, more than the limit of 100,000,000"):
        model.segment(huge_png(tmp_path / "big.png", 20_000, 6_000), CLASSES)
    with pytest.raises(ImageTooLargeError, match="bomb.png is too large to decode safely"):
        model.segment(huge_png(tmp_path / "bomb.png"), CLASSES)  # PIL's own guard answers first
    with pytest.raises(ValueError, match="duplicate"):
        model.segment(np.zeros((8, 8, 3), dtype=np.uint8), ["sky", "sky"])

    # 20,000 pixels wide: inference is scaled down to MAX_INFERENCE_PIXELS, the mask comes back full size.
    # (Inference is then 56 pixels high: too few for the stride-32 DenseCLIP stand-in, so it is off.)
    model = ReCo.from_config(colour_setup, crf=False, dense_clip_inference=False)
    scene = draw_scene(60, 20_000, np.random.default_rng(3))
    remap = np.array([CLASSES.index(c) for c in ("road", "building", "vegetation", "sky", "car")])
    truth = np.where(scene >= 0, remap[np.maximum(scene, 0)], -1)
    result = model.segment(render(scene), CLASSES)
    assert result.labels.shape == (60, 20_000)
    assert result.scores.shape[1] * result.scores.shape[2] <= 1_048_576
    assert accuracy(result.labels, truth) > 0.85

    # the command line skips the too-large file and segments the rest
    photos = tmp_path / "photos"
    write_scenes(photos, sizes=((40, 60),))
    huge_png(photos / "bomb.png")
    out = tmp_path / "out"
    assert main_reco.main(["--config", str(colour_setup), "--images", str(photos), "--categories", "sky,car",
                           "--out", str(out), "--no-crf"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["images"]) == ["scene0"] and summary["skipped"][0].endswith("bomb.png")


def test_single_image_file_and_no_half_made_output(tmp_path, colour_setup, monkeypatch, capsys):
    expected = write_scenes(tmp_path / "photos", sizes=((40, 60),))
    image = tmp_path / "photos" / "scene0.jpg"
    out = tmp_path / "single"
    assert main_reco.main(["--config", str(colour_setup), "--images", str(image), "--categories", ",".join(CLASSES),
                           "--out", str(out), "--no-crf"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "legend.png", "masks/scene0.png", "overlays/scene0.png"]
    assert accuracy(np.asarray(Image.open(out / "masks" / "scene0.png")), expected["scene0"]) > 0.9
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "reco.log"}

    # A run that fails after starting (no ImageNet index for a new class) changes nothing.
    config = load_reco_config(colour_setup)
    broken = tmp_path / "broken.yaml"
    broken.write_text(colour_setup.read_text().replace(config.dir_imagenet, str(tmp_path / "no_imagenet")))
    for target in (out, tmp_path / "new" / "out"):
        argv = ["--config", str(broken), "--images", str(image), "--categories", "zebra,okapi", "--out", str(target)]
        assert main_reco.main(argv) == 2
    assert not (tmp_path / "new").exists()
    not_an_image = tmp_path / "photo.jpg"
    not_an_image.write_text("text")
    assert main_reco.main(["--config", str(colour_setup), "--images", str(not_an_image), "--categories", "sky,car",
                           "--out", str(tmp_path / "new" / "out")]) == 2
    assert "cannot read image" in capsys.readouterr().err and not (tmp_path / "new").exists()
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "reco.log"} == before
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]

    # The README's example runs as printed (with this test's config and images).
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = readme.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    for name in ("photo.jpg", "a.jpg", "b.jpg"):
        shutil.copy(image, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    small = tmp_path / "small.yaml"  # a small inference size keeps the example's CRF fast
    small.write_text(colour_setup.read_text() + "image_short_side: 96\n")
    exec(example.replace("configs/reco_custom.yaml", str(small)), namespace)
    assert (tmp_path / "overlay.png").is_file() and (tmp_path / "legend.png").is_file()
    assert len(namespace["results"]) == 2 and sum(namespace["result"].fractions.values()) == pytest.approx(1.0)

    # Keyword overrides of from_config are checked like the file's keys.
    assert ReCo.from_config(colour_setup, weights={"encoder": "random"}).config.weights.clip == "random"
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        ReCo.from_config(colour_setup, colour="red")
