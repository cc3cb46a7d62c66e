"""A benchmark run that builds its missing index keeps logging to its own reco.log after the build."""
from __future__ import annotations

import logging

import main_reco
from test_end_to_end import colour_cityscapes, reco_config, run_dir
from utils.device import extra_log_file, setup_logging


def test_extra_log_file_is_added_then_removed(tmp_path):
    logger = setup_logging(tmp_path / "run.log")
    before = list(logger.handlers)
    with extra_log_file(tmp_path / "build.log"):
        logger.info("during the build")
    logger.info("after the build")
    assert logger.handlers == before
    run_log, build_log = (tmp_path / "run.log").read_text(), (tmp_path / "build.log").read_text()
    assert "during the build" in run_log and "after the build" in run_log
    assert "during the build" in build_log and "after the build" not in build_log
    for handler in before:
        if isinstance(handler, logging.FileHandler):
            logger.removeHandler(handler)
            handler.close()


def test_benchmark_run_that_builds_its_index_logs_to_reco_log(tmp_path, monkeypatch):
    colour_cityscapes(tmp_path, monkeypatch)
    config = reco_config(tmp_path, crf=False, n_visualisations=0)

    assert main_reco.main(["--config", str(config)]) == 0  # no --stage index first: the run builds it

    build_logs = list((tmp_path / "ImageNet2012" / "index").glob("build_*.log"))
    assert len(build_logs) == 1
    build_log = build_logs[0].read_text()
    run_log = (run_dir(config) / "reco.log").read_text()
    assert "building it" in run_log
    assert "mIoU" in run_log  # the messages after the build still reach the run's log
    assert "mIoU" not in build_log


def test_dense_clip_not_loaded_when_the_reference_pickle_is_reused(tmp_path, monkeypatch):
    """Text attention on, DenseCLIP inference off: the second run reads the reference pickle and needs
    no DenseCLIP; it must not build one, and its results must equal the first run's."""
    import json

    import reco_api.models as common

    colour_cityscapes(tmp_path, monkeypatch)
    built = []
    colour_dense_clip = common.DenseCLIP
    monkeypatch.setattr(common, "DenseCLIP", lambda clip: built.append(1) or colour_dense_clip(clip))
    config = reco_config(tmp_path, crf=False, n_visualisations=0, text_attention=True, dense_clip_inference=False)

    assert main_reco.main(["--config", str(config)]) == 0
    assert len(built) == 1  # co-segmentation with text attention needs it
    first = json.loads((run_dir(config) / "results.json").read_text())
    assert main_reco.main(["--config", str(config)]) == 0
    assert len(built) == 1  # the pickle is reused: no DenseCLIP this time
    assert json.loads((run_dir(config) / "results.json").read_text()) == first
