"""Own images are read as a viewer shows them: 16-bit and float pixels scaled, EXIF orientation applied,
and an image too thin to segment skipped with a count (known answers)."""
import json

import cv2
import numpy as np
import pytest
from PIL import Image

import main_reco
from datasets import images as own
from synthetic import draw_scene, render
from test_own_images import CLASSES, SCENE_CLASSES, colour_setup  # noqa: F401 (colour_setup is a fixture)

EXIF_ORIENTATION = 0x0112


def two_colour(width=4, height=2):
    """Left half red, right half blue."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2:] = (0, 0, 255)
    return pixels


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    grey = np.array([[0, 257 * 128, 65535]], np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")  # PIL's 16-bit modes, not "L"
    assert own.load_image(tmp_path / "grey16.png").getpixel((1, 0)) == (128, 128, 128)
    assert np.asarray(own.load_image(tmp_path / "grey16.png"))[0, :, 0].tolist() == [0, 128, 255]

    rgb16 = np.zeros((1, 2, 3), np.uint16)
    rgb16[0, 0] = (65535, 257 * 128, 0)  # R, G, B
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16[:, :, ::-1])  # OpenCV writes BGR
    assert own.load_image(tmp_path / "rgb16.png").getpixel((0, 0)) == (255, 128, 0)
    # the same data as a uint16 array or a PIL image give the same pixels as the file
    assert np.array_equal(np.asarray(own.to_rgb_image(grey)), np.asarray(own.load_image(tmp_path / "grey16.png")))
    assert np.array_equal(np.asarray(own.to_rgb_image(Image.open(tmp_path / "grey16.png"))),
                          np.asarray(own.load_image(tmp_path / "grey16.png")))


def test_float_tiff_and_arrays(tmp_path):
    values = np.array([[0.0, 0.25, 1.0]], np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")
    assert np.asarray(own.load_image(tmp_path / "float.tif"))[0, :, 0].tolist() == [0, 64, 255]
    assert np.asarray(own.to_rgb_image(values))[0, :, 1].tolist() == [0, 64, 255]
    assert np.asarray(own.to_rgb_image(np.full((2, 2, 3), 200.0)))[0, 0].tolist() == [200, 200, 200]
    with pytest.raises(ValueError, match="float pixel values -1..1 are outside 0..1 and 0..255"):
        own.to_rgb_image(np.array([[-1.0, 1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        own.to_rgb_image(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="outside 0..65535"):
        own.to_rgb_image(np.array([[70000, 1]], np.int32))


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored sideways: a viewer turns it 90 degrees clockwise
    Image.fromarray(two_colour()).save(tmp_path / "turned.png", exif=exif.tobytes())
    shown = own.load_image(tmp_path / "turned.png")
    assert shown.size == (2, 4)  # width, height as displayed
    assert shown.getpixel((0, 0)) == (255, 0, 0) and shown.getpixel((1, 3)) == (0, 0, 255)  # red on top
    assert own.to_rgb_image(Image.open(tmp_path / "turned.png")).size == (2, 4)


def test_too_thin_image_is_refused_with_its_size():
    assert own.inference_size(60, 80, 320) == (320, 426)
    with pytest.raises(own.ImageTooThinError, match="4000 x 3 pixels is too elongated"):
        own.inference_size(4000, 3, 320)


def test_own_images_read_as_meant_end_to_end(tmp_path, colour_setup):
    """A 16-bit PNG and an EXIF-turned JPEG of known scenes are segmented as displayed; a 4000 x 3 image is
    a counted skip and the run goes on."""
    rng = np.random.default_rng(3)
    photos = tmp_path / "photos"
    photos.mkdir()
    remap = np.array([CLASSES.index(c) for c in SCENE_CLASSES])
    truth = {}

    scene = draw_scene(64, 96, rng)
    cv2.imwrite(str(photos / "deep.png"), (render(scene).astype(np.uint16) * 257)[:, :, ::-1])
    truth["deep"] = np.where(scene >= 0, remap[np.maximum(scene, 0)], -1)

    scene = draw_scene(64, 96, rng)
    stored = np.rot90(render(scene), k=1)  # stored turned 90 degrees anticlockwise: orientation 6 undoes it
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(photos / "turned.jpg", quality=95, subsampling=0,
                                                       exif=exif.tobytes())
    truth["turned"] = np.where(scene >= 0, remap[np.maximum(scene, 0)], -1)

    Image.fromarray(np.zeros((3, 4000, 3), np.uint8)).save(photos / "thin.png")
    out = tmp_path / "out"
    argv = ["--config", str(colour_setup), "--images", str(photos), "--categories", ",".join(CLASSES),
            "--out", str(out), "--no-crf"]
    assert main_reco.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [p.rsplit("/", 1)[-1] for p in summary["skipped"]] == ["thin.png"]
    for stem, expected in truth.items():
        mask = np.asarray(Image.open(out / "masks" / f"{stem}.png"))
        assert mask.shape == expected.shape, stem  # as displayed
        valid = expected >= 0
        assert float((mask[valid] == expected[valid]).mean()) > 0.9, stem
