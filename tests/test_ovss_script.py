"""scripts/reco_ovss.sh: runs the named benchmarks, goes on after a failure, always writes the table."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def run(args, config_dir, cwd=REPO):
    env = {**os.environ, "CONFIG_DIR": str(config_dir), "PYTHON": sys.executable}
    script = "scripts/reco_ovss.sh" if cwd == REPO else "reco_ovss.sh"
    return subprocess.run(["bash", script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_every_config_is_checked_before_any_runs(tmp_path):
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    for name in ("voc20", "ade20k150"):
        (config_dir / f"reco_{name}.yaml").write_text(yaml.safe_dump({
            "dir_ckpt": str(tmp_path / "ckpt"), "dir_dataset": str(tmp_path / f"no_{name}_here"),
            "dataset_name": name}))
    result = run(["voc20", "ade20k150", "--", "--device", "cpu"], config_dir, cwd=REPO / "scripts")
    assert result.returncode == 2, result.stderr
    assert "no_voc20_here" in result.stderr and "no_ade20k150_here" in result.stderr  # both, in one report
    assert "2 of 2 configs are not ready; nothing was run" in result.stderr
    assert "===" not in result.stdout and not (tmp_path / "ckpt").exists()

    result = run(["voc20", "pascal"], config_dir)
    assert result.returncode == 2 and "no config" in result.stderr and "reco_pascal.yaml" in result.stderr


@pytest.mark.slow
def test_script_runs_each_benchmark_and_writes_the_table(tmp_path):
    """Inputs that pass the check but fail in the run (an empty benchmark folder): the next benchmark
    still runs, the table is written, the status is 1."""
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (tmp_path / "ImageNet2012" / "train").mkdir(parents=True)
    for name in ("voc20", "ade20k150"):
        (tmp_path / f"empty_{name}").mkdir()
        (config_dir / f"reco_{name}.yaml").write_text(yaml.safe_dump({
            "dir_ckpt": str(tmp_path / "ckpt"), "dir_dataset": str(tmp_path / f"empty_{name}"),
            "dir_imagenet": str(tmp_path / "ImageNet2012"), "dataset_name": name,
            "clip_arch": "tiny-vit-clip", "dense_clip_arch": "tiny-rn-clip", "encoder_arch": "tiny-vit",
            "weights": {"clip": "random", "dense_clip": "random", "encoder": "random"}, "n_workers": 0}))
    result = run(["voc20", "ade20k150", "--", "--device", "cpu"], config_dir, cwd=REPO / "scripts")
    assert result.returncode == 1, result.stderr
    assert result.stdout.count("=== ") == 2  # both were tried
    table = json.loads((tmp_path / "ckpt" / "ovss_results.json").read_text())
    assert [row["benchmark"] for row in table["benchmarks"]] == ["voc20", "ade20k150"]
    assert "no results for: voc20, ade20k150" in result.stderr


def test_shipped_configs_load_and_name_every_benchmark():
    from datasets import metadata
    from datasets.registry import BENCHMARKS
    from entry.reco_ovss import ovss_protocol
    from reco_api.config_checks import check_reco_names
    from utils.config import load_reco_config

    for name in BENCHMARKS.names(lambda spec: spec.protocol == "ovss"):
        config = check_reco_names(load_reco_config(REPO / "configs" / "ovss" / f"reco_{name}.yaml"))
        assert config.dataset_name == name and config.slide_window == 224 and config.slide_stride == 112
        assert config.eval_short_side == {"cityscapes19": 560, "coco_stuff171": 448}.get(name, 336)
        assert ovss_protocol(config).class_names == metadata.eval_categories(name)


def test_default_benchmark_list_comes_from_the_registry(tmp_path):
    from datasets.registry import benchmark_names

    result = run([], tmp_path)  # no configs there: the first default benchmark is reported with the list
    names = benchmark_names("ovss")
    assert len(names) == 8 and result.returncode == 2, result.stderr
    assert f"reco_{names[0]}.yaml" in result.stderr and f"known: {' '.join(names)})" in result.stderr
