"""ReCo+ run directories hold one setting and one process: other hyperparameters are refused, a torn
metrics.jsonl is mended, a second training in the same directory stops; the folder lock and the weights'
content hash on their own."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import main_reco_plus
from test_reco_plus import _config, _one_thread, cityscapes_tree  # noqa: F401 (fixtures)
from utils.file_identity import content_hash
from utils.file_lock import FolderInUseError, folder_lock

REPO = Path(__file__).resolve().parents[1]
RUN = Path("cityscapes/val/reco_plus/deeplabv3plus_tiny")


def test_other_hyperparameters_are_refused_not_reported_finished(cityscapes_tree, tmp_path, capsys):
    cfg = _config(cityscapes_tree, tmp_path / "c.yaml", tmp_path / "c", iter_train=2, iter_val=2)
    assert main_reco_plus.main(["--config", str(cfg)]) == 0
    run_dir = tmp_path / "c" / RUN
    config_yaml = (run_dir / "config.yaml").read_text()
    last = (run_dir / "last.pt").read_bytes()
    capsys.readouterr()

    _config(cityscapes_tree, cfg, tmp_path / "c", iter_train=2, iter_val=2, lr=1e-3, crop_size=32)
    assert main_reco_plus.main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "trained with other settings" in err and "crop_size: 48 -> 32" in err and "lr: 0.005 -> 0.001" in err, err
    assert len([line for line in err.strip().splitlines() if "RECO_DEBUG" not in line]) == 1
    assert (run_dir / "config.yaml").read_text() == config_yaml  # the record of the run is not rewritten
    assert (run_dir / "last.pt").read_bytes() == last

    # The same setting again: finished, nothing to do; a longer schedule resumes (iter_train is not a setting).
    _config(cityscapes_tree, cfg, tmp_path / "c", iter_train=2, iter_val=2, n_workers=0)
    assert main_reco_plus.main(["--config", str(cfg)]) == 0
    setting = torch.load(run_dir / "last.pt", weights_only=True)["extra"]["setting"]
    assert setting["lr"] == 0.005 and setting["crop_size"] == 48


def test_a_torn_metrics_line_is_dropped_and_named(cityscapes_tree, tmp_path, caplog):
    cfg = _config(cityscapes_tree, tmp_path / "t.yaml", tmp_path / "t", iter_train=4, iter_val=4)
    assert main_reco_plus.main(["--config", str(cfg), "--stop-at", "2"]) == 0
    metrics = tmp_path / "t" / RUN / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"iteration": 3, "loss": 0.5, "lr_ba')  # an append cut short by a kill
    with caplog.at_level("WARNING", logger="reco"):
        assert main_reco_plus.main(["--config", str(cfg)]) == 0
    assert any("metrics.jsonl: dropped a torn last line" in r.getMessage() for r in caplog.records)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["iteration"] for r in records if "loss" in r] == [2, 4]

    metrics.write_text('{"iteration": 2}\nnot json\n{"iteration": 4}\n')  # damage before the last line
    _config(cityscapes_tree, cfg, tmp_path / "t", iter_train=6, iter_val=6)
    assert main_reco_plus.main(["--config", str(cfg)]) == 2


HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from utils.file_lock import folder_lock
    with folder_lock(sys.argv[1], "test folder"):
        print("held", flush=True)
        time.sleep(60)
""")


def _hold(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(REPO)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_folder_lock_names_the_holder_and_is_free_once_it_dies(tmp_path):
    holder = _hold(tmp_path / "f")
    try:
        with pytest.raises(FolderInUseError, match=rf"test folder is in use by another process \(PID {holder.pid}\)"):
            with folder_lock(tmp_path / "f", "test folder"):
                pass
        told = []
        started = time.monotonic()
        with pytest.raises(FolderInUseError):
            with folder_lock(tmp_path / "f", "test folder", wait_s=0.5, on_wait=told.append):
                pass
        assert time.monotonic() - started >= 0.5 and len(told) == 1 and f"PID {holder.pid}" in told[0]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with folder_lock(tmp_path / "f", "test folder"):  # a killed holder leaves nothing to clean up
        assert (tmp_path / "f" / ".lock").read_text().strip() == str(os.getpid())
    assert not (tmp_path / "f" / ".lock").exists()  # removed by its holder


def test_second_training_in_the_same_run_directory_stops(cityscapes_tree, tmp_path, capsys):
    cfg = _config(cityscapes_tree, tmp_path / "l.yaml", tmp_path / "l", iter_train=2, iter_val=2)
    holder = _hold(tmp_path / "l" / RUN)
    try:
        assert main_reco_plus.main(["--config", str(cfg)]) == 2
        assert f"in use by another process (PID {holder.pid})" in capsys.readouterr().err
        assert not (tmp_path / "l" / RUN / "metrics.jsonl").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_content_hash_sees_a_replaced_file_of_the_same_name_size_and_mtime(tmp_path):
    weights, memo = tmp_path / "w.pt", tmp_path / "memo.json"
    weights.write_bytes(b"a" * 1000)
    first = content_hash(weights, memo)
    assert first.startswith("sha256:") and content_hash(weights, memo) == first
    assert list(json.loads(memo.read_text()).values()) == [first]
    stat = weights.stat()
    time.sleep(0.01)
    weights.write_bytes(b"b" * 1000)  # same name and size
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old mtime
    assert weights.stat().st_mtime_ns == stat.st_mtime_ns
    assert content_hash(weights, memo) != first
    assert len(json.loads(memo.read_text())) == 1  # entries of files that changed are dropped


def test_a_replaced_backbone_file_is_another_setting(cityscapes_tree, tmp_path):
    from entry.reco_plus import check_same_setting, training_setting
    from utils.config import ConfigError, load_reco_plus_config
    backbone = tmp_path / "backbone.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 7, 7)}, backbone)
    cfg = _config(cityscapes_tree, tmp_path / "b.yaml", tmp_path / "b", weights={"backbone": str(backbone)})
    before = training_setting(load_reco_plus_config(cfg))
    assert before["weights.backbone"].startswith("sha256:")
    assert (tmp_path / "b" / ".file_hashes.json").is_file()  # remembered in dir_ckpt, not beside the weights
    stat = backbone.stat()
    torch.save({"conv1.weight": torch.ones(4, 3, 7, 7)}, backbone)  # same name and size, and the old mtime
    os.utime(backbone, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert backbone.stat().st_size == stat.st_size
    after = training_setting(load_reco_plus_config(cfg))
    with pytest.raises(ConfigError, match="weights.backbone: 'sha256:"):
        check_same_setting(tmp_path / "last.pt", before, after)


def test_every_missing_input_in_one_message(cityscapes_tree, tmp_path, capsys):
    cfg = _config(cityscapes_tree, tmp_path / "m.yaml", tmp_path / "m", dir_dataset=str(tmp_path / "no_data"),
                  dir_pseudo_masks=str(tmp_path / "no_masks"), weights={"backbone": str(tmp_path / "no.pth")})
    assert main_reco_plus.main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "m.yaml: 3 inputs of this run are missing:" in err
    for expected in ("dir_dataset: directory not found", "dir_pseudo_masks: directory not found",
                     "weights.backbone: file not found"):
        assert expected in err
    assert not (tmp_path / "m").exists()
    assert main_reco_plus.main(["--config", str(cfg), "--weights", str(tmp_path / "w.pt")]) == 2
    err = capsys.readouterr().err
    assert "2 inputs of this run are missing" in err and "--weights: file not found" in err
