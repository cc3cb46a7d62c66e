"""`python main_reco.py --demo [--out DIR]`: the whole ReCo pipeline on a synthetic world, offline, in seconds.

The demo writes a small world (demo/world.py) into OUT/world: an ImageNet-like folder with one colour
per word, a Cityscapes-layout benchmark of colour-coded street scenes (val and train) and a folder of
"own images". It then runs the real stages of main_reco.py on it: the ImageNet index is built,
k images are retrieved per category, co-segmented into reference embeddings, the benchmark is evaluated
(panels, results.json, CRF), pseudo-masks are written for the train split, and the own images are
segmented with their own class names.

No weights are needed: the config names hand-made colour-coded models (demo/colour_models.py) whose
right answer is known, registered as architectures while the demo runs (demo/registry.py), so the
stages build them as they build any registered CLIP or encoder. A word's text embedding is its colour, so
retrieval must find the images of that colour and inference must label each region by its colour: the
mIoU printed at the end must be close to 1, and a pipeline that merely runs cannot reach it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import yaml
from PIL import Image

from demo.registry import CLIP_ARCH, DENSE_CLIP_ARCH, ENCODER_ARCH, colour_model_entries
from demo.world import OWN_CLASSES, colour_world, demo_words, write_cityscapes, write_imagenet, write_photos
from utils import timing
from utils.config import ConfigError, load_reco_config

logger = logging.getLogger("reco")

DEFAULT_OUT = "reco_demo"
MARKER = ".reco_demo"  # marks a folder written by the demo, which a later --demo may overwrite
MIOU_EXPECTED = 0.9  # the colour-coded models segment the scenes almost perfectly (the tests check it)


def demo_config(out_dir: Path, device: str = "cpu") -> dict[str, Any]:
    """The config of the demo run (written to OUT/demo_config.yaml). Its architectures are the colour-coded
    ones, registered only while --demo runs, so run it through --demo, not --config."""
    world = out_dir / "world"
    return {
        "dir_ckpt": str(out_dir / "ckpt"), "dir_dataset": str(world / "cityscapes"),
        "dir_imagenet": str(world / "ImageNet2012"), "dataset_name": "cityscapes",
        "clip_arch": CLIP_ARCH, "dense_clip_arch": DENSE_CLIP_ARCH, "encoder_arch": ENCODER_ARCH,
        "weights": {"clip": "random", "dense_clip": "random", "encoder": "random"},
        "n_imgs": 3, "batch_size": 2, "n_workers": 0, "n_visualisations": 2, "device": device,
        "crf_workers": 1, "index_batch_size": 32, "index_shard_size": 256,
        "image_short_side": None,  # own images at their own (small) size: the CRF is the slowest stage
    }


def write_world(out_dir: Path, words: list[str]) -> tuple[dict[str, int], list, dict[str, np.ndarray]]:
    """OUT/world: ImageNet stand-in (3 images per colour), Cityscapes val (3) and train (4), own images.

    Returns the colour vocabulary (word -> colour index), the colours and the own images' expected masks.
    """
    world = out_dir / "world"
    vocabulary, colours = colour_world(words)
    wnids = [f"n{20000000 + i}" for i in range(len(colours))]  # one ImageNet class per colour
    write_imagenet(world / "ImageNet2012", "train", wnids, n_per_class=3, colours=colours)
    write_cityscapes(world / "cityscapes", "val", n_images=3)
    write_cityscapes(world / "cityscapes", "train", n_images=4, seed=1)
    expected = write_photos(world / "photos", classes=OWN_CLASSES)
    return vocabulary, colours, expected


def run_demo(out: Optional[str] = None, device: Optional[str] = None) -> dict[str, Any]:
    """Write the world into `out` (default ./reco_demo), run every stage on it (on `device`, default the
    CPU), print where things are."""
    from entry.reco_benchmark import run_benchmark
    from entry.reco_index import run_index_stage
    from entry.reco_own_images import run_own_images

    out_dir = Path(out or DEFAULT_OUT).expanduser()
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise ConfigError(f"--out: {out_dir} exists and was not written by --demo; give an empty or new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("written by python main_reco.py --demo\n")
    config_path = out_dir / "demo_config.yaml"
    config_path.write_text("# The config of `python main_reco.py --demo` (run it through --demo: the colour-coded\n"
                           "# architectures named here are registered only while the demo runs).\n"
                           + yaml.safe_dump(demo_config(out_dir, device or "cpu"), sort_keys=False))
    config = load_reco_config(config_path)
    words = demo_words(config.context_categories)
    vocabulary, colours, expected = write_world(out_dir, words)
    logger.info("demo: synthetic world written to %s", out_dir / "world")

    own_dir = out_dir / "own_images"
    with colour_model_entries(vocabulary, colours):
        _timed(run_index_stage, config)
        val = _timed(run_benchmark, config, split="val")
        train = _timed(run_benchmark, config, split="train")
        _timed(run_own_images, config, str(out_dir / "world" / "photos"), ",".join(OWN_CLASSES), str(own_dir))

    own_accuracy = _own_images_accuracy(own_dir, expected)
    report = {
        "out_dir": out_dir, "config": config_path, "run_dir": val["run_dir"], "train_run_dir": train["run_dir"],
        "miou": val["results"]["Mean IoU"], "miou_crf": val["results_crf"]["Mean IoU"],
        "own_images_dir": own_dir, "own_images_accuracy": own_accuracy,
    }
    print(summary_text(report))
    return report


def _timed(stage: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one stage as main_reco.py runs it: with its own timer, reported (and timings.json) at the end."""
    with timing.run() as timer:
        result = stage(*args, **kwargs)
    timing.report(timer)
    return result


def _own_images_accuracy(own_dir: Path, expected: dict[str, np.ndarray]) -> float:
    """Pixel accuracy of the own images' masks against the scenes they were drawn from (ignored pixels excluded)."""
    right = total = 0
    for stem, truth in expected.items():
        mask = np.asarray(Image.open(own_dir / "masks" / f"{stem}.png"))
        valid = truth >= 0
        right += int((mask[valid] == truth[valid]).sum())
        total += int(valid.sum())
    return right / max(total, 1)


def summary_text(report: dict[str, Any]) -> str:
    run_dir, own = report["run_dir"], report["own_images_dir"]
    return "\n".join([
        "",
        "ReCo demo: every stage ran on a synthetic world with colour-coded models (offline, no weights).",
        f"  world and config     {report['out_dir'] / 'world'}/, {report['config']}",
        f"  benchmark panels     {run_dir}/0000.png ... (image, ground truth, ReCo, ReCo + CRF)",
        f"  co-segmentation      {run_dir}/coseg_<category>.png",
        f"  results              {run_dir}/results.json, results_crf.json, timings.json",
        f"  pseudo-masks         {report['train_run_dir']}/dt/, dt_crf/",
        f"  own images           {own}/overlays/, masks/, legend.png, summary.json",
        f"  mIoU                 {report['miou']:.3f} (with CRF {report['miou_crf']:.3f}); "
        f"a correct pipeline reaches >= {MIOU_EXPECTED}",
        f"  own images accuracy  {report['own_images_accuracy']:.3f} of the pixels",
    ])
