"""A ReCo+ training killed right after one of its renames (tests/kill_points.py), then run again, gives
the files of an uninterrupted run (issue 26): the same file set, the same weights and training state in
last.pt and best_model.pt, the same metrics.jsonl records, evaluation results and curves."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import main_reco_plus
from kill_points import every_n, kill_at_every_rename
from synthetic import write_cityscapes
from test_reco_plus import _config, _one_thread, cityscapes_tree  # noqa: F401 (fixtures)

PRELOAD = ["torch", "timm", "entry.reco_plus"]
# train.log and timings.json hold times (and the log says "resuming"); they are not results.
VOLATILE_FILES = ["train.log", "timings.json"]
# A metrics.jsonl record's it_per_s is the wall-clock speed of its window; every other field (loss,
# learning rates, training and validation scores) must be equal.
VOLATILE_KEYS = ["it_per_s"]
RUN = "cityscapes/val/reco_plus/deeplabv3plus_tiny/"


@pytest.fixture(scope="module")
def one_val_image(cityscapes_tree, tmp_path_factory) -> dict[str, Path]:
    """cityscapes_tree with one val image: the evaluations' CRF is most of a run's time."""
    dataset = tmp_path_factory.mktemp("reco_plus_kill") / "cityscapes"
    for folder in ("leftImg8bit", "gtFine"):
        shutil.copytree(cityscapes_tree["dataset"] / folder / "train", dataset / folder / "train")
    write_cityscapes(dataset, "val", n_images=1, seed=2)
    return {**cityscapes_tree, "dataset": dataset}


def _kill_spec(config: Path, ckpt: Path, start: Path | None, points: list[int]) -> dict:
    """Each run starts from a copy of `start` (None: no dir_ckpt)."""
    return {"module": "main_reco_plus", "argv": ["--config", str(config)],
            "reset": [[None if start is None else str(start), str(ckpt)]], "snapshot": [str(ckpt)],
            "ignore": VOLATILE_FILES, "volatile_keys": VOLATILE_KEYS, "preload": PRELOAD, "values": True,
            "points": points}


def _check_resumed_equal(result: dict, uninterrupted: dict) -> None:
    for n, point in result["points"].items():
        assert point["killed_rc"] == -9 and point["rerun_rc"] == 0, n
        resumed = point["after_rerun"][0]
        assert resumed.keys() == uninterrupted.keys(), f"a kill after rename {n}: other files"
        differ = sorted(k for k in resumed if resumed[k] != uninterrupted[k])
        assert not differ, f"a kill after rename {n}, then a re-run: {differ} differ from an uninterrupted run"


@pytest.mark.slow
def test_training_killed_after_a_rename_then_resumed_equals_uninterrupted(one_val_image, tmp_path):
    # Two evaluations (iterations 2 and 4); a record per iteration, so that a resume from last.pt at 2
    # must drop the records a killed run appended after it. The renames of a run:
    #  1 config.json, 2 config.yaml, 3-4 00002/results(_crf).json, 5 curves.png, 6 best_model.pt,
    #  7 last.pt (2), 8-9 00004/results(_crf).json, 10 curves.png, 11 last.pt (4), 12 timings.json.
    # Every N takes about a minute on one core; the spread covers each kind of state a kill leaves:
    # no last.pt (1, 6), last.pt behind the results and records on disk (7, 10), finished (11, 12).
    ckpt = tmp_path / "ckpt"
    config = _config(one_val_image, tmp_path / "kill.yaml", ckpt, iter_train=4, iter_val=2, log_every=1,
                     crop_size=32, n_visualisations=0, crf_backend="torch")
    result = kill_at_every_rename(_kill_spec(config, ckpt, None, [1, 6, 7, 10, -2, -1]), tmp_path / "work")
    uninterrupted = result["uninterrupted"][0]
    assert result["uninterrupted_rc"] == 0 and result["count"] == 12
    assert len(result["points"]) == (12 if every_n() else 6)
    for name in ("last.pt", "best_model.pt", "metrics.jsonl", "curves.png", "config.yaml", "00002/results.json",
                 "00004/results_crf.json"):
        assert RUN + name in uninterrupted, name
    _check_resumed_equal(result, uninterrupted)

    # A resumed run's first rename is metrics.jsonl without the records after last.pt: start from a run
    # stopped at 2 whose metrics.jsonl has a record of iteration 3 (a killed run appended it).
    stopped = tmp_path / "stopped"
    shutil.rmtree(ckpt)  # the kill runs leave the last re-run's
    assert main_reco_plus.main(["--config", str(config), "--stop-at", "2"]) == 0
    shutil.move(ckpt, stopped)
    with open(stopped / RUN / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 3, "loss": 9.0}\n')
    resumed = kill_at_every_rename(_kill_spec(config, ckpt, stopped, [1, 2]), tmp_path / "work_resumed")
    assert resumed["uninterrupted"][0] == uninterrupted, "stopped at 2 and resumed differs from uninterrupted"
    _check_resumed_equal(resumed, uninterrupted)
