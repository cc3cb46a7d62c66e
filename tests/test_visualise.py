"""Pictures a person looks at: panel titles and legends inside the figure, overlay colours that match their
legend swatches, a colour scale on the co-segmentation maps."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from utils.visualise import (IGNORED_NAME, OVERLAY_ALPHA, cosegmentation_figure, grey_levels, label_palette,
                             legend_png, overlay, overlay_ramp, panels_figure, present_classes, save_panels)

NAMES = [f"class {i}" for i in range(10)]
PALETTE = np.array([[20 * i, 255 - 20 * i, (70 * i) % 256] for i in range(10)], dtype=np.uint8)


def drawn(fig: Figure) -> Figure:
    FigureCanvasAgg(fig).draw()  # runs the layout, as saving a PNG does
    return fig


def assert_inside(fig: Figure, artist, margin: float = 1.0) -> None:
    box = artist.get_window_extent(fig.canvas.get_renderer())
    assert box.x0 >= -margin and box.y0 >= margin - 1 and box.x1 <= fig.bbox.x1 + margin, (artist, box)
    assert box.y1 <= fig.bbox.y1 - margin, (artist, box, fig.bbox)  # the top one: clipped titles


@pytest.mark.parametrize("height, width", [(300, 280), (100, 200), (400, 150)])
def test_panel_titles_and_legend_lie_inside_the_figure(height, width):
    labels = np.arange(height * width).reshape(height, width) % 3
    fig = drawn(panels_figure(np.zeros((height, width, 3), np.uint8), labels, labels, labels, PALETTE, NAMES))
    titles = [ax.title for ax in fig.axes]
    assert [t.get_text() for t in titles] == ["image", "ground truth", "prediction", "prediction + CRF"]
    for artist in titles + fig.legends:
        assert_inside(fig, artist)


def test_panel_legend_lists_the_classes_present_in_the_ground_truth_and_predictions():
    gt = np.array([[1, 1], [3, 255]])
    pred = np.array([[3, 5], [5, 5]])
    fig = panels_figure(np.zeros((2, 2, 3), np.uint8), gt, pred, None, PALETTE, NAMES)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["class 1", "class 3", "class 5", IGNORED_NAME]
    swatches = [tuple(np.round(np.asarray(p.get_facecolor()[:3]) * 255).astype(int)) for p in legend.get_patches()]
    assert swatches == [tuple(PALETTE[c]) for c in (1, 3, 5)] + [(0, 0, 0)]
    # no ignored labels: no such entry; the CRF prediction counts too
    fig = panels_figure(np.zeros((2, 2, 3), np.uint8), gt[:1], pred[:1], np.array([[9, 9]]), PALETTE, NAMES)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["class 1", "class 3", "class 5", "class 9"]


def test_present_classes_known_answer():
    assert present_classes([np.array([[2, -1]]), None, np.array([[0, 2]])], 3) == ([0, 2], True)
    assert present_classes([np.array([[1, 1]])], 3) == ([1], False)


def test_saved_panels_keep_three_inches_a_panel_whatever_the_number_of_classes(tmp_path):
    labels = np.arange(40 * 60).reshape(40, 60) % 40 * 4  # 40 classes of a 171-class benchmark
    names = [f"c{i}" for i in range(171)]
    palette = np.tile(PALETTE, (18, 1))[:171]
    save_panels(tmp_path / "p.png", np.zeros((40, 60, 3), np.uint8), labels, labels, None, palette, names)
    assert Image.open(tmp_path / "p.png").size[0] == 3 * 300
    with pytest.raises(ValueError, match="palette"):
        save_panels(tmp_path / "q.png", np.zeros((4, 4, 3), np.uint8), None, labels[:4, :4], None, PALETTE, names)


def test_overlay_known_answer_tints_the_grey_levels():
    # a pure blue image (grey level 0.114 * 255 = 29.07) under navy: (14.5, 14.5, 64 + 14.5), not the
    # (0, 0, 192) of a blend with the image's colour, which reads as another blue than the legend's
    image = np.zeros((1, 2, 3), np.uint8)
    image[..., 2] = 255
    out = overlay(image, np.array([[0, 1]]), np.array([[0, 0, 128], [255, 0, 0]], np.uint8))
    assert out.tolist() == [[[15, 15, 79], [142, 15, 15]]]


def test_every_overlay_pixel_lies_on_its_class_ramp_in_the_legend():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    labels = rng.integers(0, 6, (30, 40))
    palette = label_palette(6)
    out = overlay(image, labels, palette)
    assert out.shape == image.shape and out.dtype == np.uint8
    ramps = overlay_ramp(palette).astype(int)  # (6, 256, 3)
    for c in range(6):
        pixels = out[labels == c].astype(int)  # (P, 3)
        nearest = np.abs(pixels[:, None, :] - ramps[c][None]).max(axis=2).min(axis=1)
        assert nearest.max() <= 1, c  # within rounding of a colour of the class's swatch
        # and the grey level it lies over is the pixel's own
        level = grey_levels(image[labels == c])
        expected = (1 - OVERLAY_ALPHA) * level[:, None] + OVERLAY_ALPHA * palette[c]
        assert np.abs(pixels - expected).max() <= 1


def test_legend_swatches_show_the_overlay_colours_over_dark_mid_and_light_grey():
    palette = label_palette(3)
    picture = np.asarray(Image.open(io.BytesIO(legend_png(["a", "b", "c"], palette))).convert("RGB")).astype(int)
    pixels = picture.reshape(-1, 3)
    for c in range(3):
        for level in (40, 128, 215):
            expected = np.round((1 - OVERLAY_ALPHA) * level + OVERLAY_ALPHA * palette[c].astype(float))
            assert np.abs(pixels - expected).max(axis=1).min() <= 2, (c, level)
    # the untinted class colour itself (pure red) is not what the legend shows
    assert np.abs(pixels - np.array([255, 0, 0])).max(axis=1).min() > 40


def test_label_palette_keeps_classes_apart_over_any_grey_levels():
    # over grey levels only chroma (colour minus its grey) tells classes apart: ALPHA * |chroma difference|
    palette = label_palette(24).astype(float)
    assert palette[:3].tolist() == [[255, 0, 0], [0, 255, 255], [128, 0, 255]]
    np.testing.assert_array_equal(label_palette(5), label_palette(24)[:5])  # a class keeps its colour
    chroma = palette - palette.mean(axis=1, keepdims=True)
    assert np.linalg.norm(chroma, axis=1).min() >= 80  # a visible tint
    for n, bound in ((8, 60), (16, 35), (24, 25)):
        gap = OVERLAY_ALPHA * np.linalg.norm(chroma[:n, None] - chroma[None, :n], axis=2)
        assert gap[~np.eye(n, dtype=bool)].min() >= bound, n
    assert len(label_palette(256)) == 256
    with pytest.raises(ValueError, match="label_palette"):
        label_palette(10_000)


def test_cosegmentation_figure_has_a_colour_scale_of_the_cosine_similarity():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    fig = drawn(cosegmentation_figure(images, rng.uniform(-1, 1, (3, 20, 30)), title="traffic light"))
    (bar,) = [image.colorbar for ax in fig.axes for image in ax.images if image.colorbar is not None]
    assert bar.mappable.norm.vmin == -1 and bar.mappable.norm.vmax == 1 and bar.mappable.get_cmap().name == "jet"
    assert "cosine similarity" in bar.ax.get_ylabel()
    assert fig.get_suptitle() == "traffic light"
    for artist in [fig._suptitle, bar.ax.yaxis.label] + bar.ax.get_yticklabels():
        assert_inside(fig, artist)


def test_importing_the_project_leaves_pyplot_alone():
    """No module uses pyplot: a notebook that imports the API keeps its own backend (inline plots)."""
    import subprocess
    import sys

    code = ("import sys, reco_api, utils.visualise, entry.reco_benchmark, entry.reco_plus; "
            "print('matplotlib.pyplot' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]


def test_training_curves_are_drawn_without_pyplot(tmp_path):
    from utils.visualise import plot_training_curves

    plot_training_curves(tmp_path / "curves.png", [{"iteration": i, "loss": 1 / (i + 1), "miou": i / 10}
                                                   for i in range(5)])
    assert Image.open(tmp_path / "curves.png").size == (900, 320)
