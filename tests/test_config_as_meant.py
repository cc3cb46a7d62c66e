"""A config file is read as meant: a key given twice, empty or repeated context names, a ReCo+ config
given to main_reco.py (and the reverse), a misspelt key and a relative path each get one line that says
what is wrong and where."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

import main_reco
import main_reco_plus
from utils.config import ConfigError, load_reco_config, load_reco_plus_config, require_dir

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    cfg = _write(tmp_path / "twice.yaml", "dir_ckpt: a\nn_imgs: 5\ndevice: cpu\nn_imgs: 50\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: key 'n_imgs' is given twice \(lines 2 and 4\)"):
        load_reco_config(cfg)


@pytest.mark.parametrize("contexts, message", [
    (["tree", "sky", "tree"], "'context_categories' repeats ['tree']"),
    (["tree", " "], "'context_categories' has an empty name at position 1"),
    ([], "'context_categories' is empty while context_elimination is true"),
])
def test_context_categories_are_checked(tmp_path, contexts, message):
    cfg = _write(tmp_path / "c.yaml", yaml.safe_dump({"dir_ckpt": "a", "context_categories": contexts}))
    with pytest.raises(ConfigError) as error:
        load_reco_config(cfg)
    assert message in str(error.value)
    ok = _write(tmp_path / "ok.yaml", yaml.safe_dump({"dir_ckpt": "a", "context_categories": [],
                                                      "context_elimination": False}))
    assert load_reco_config(ok).context_categories == []


def test_the_other_programs_config_is_named(tmp_path, capsys):
    assert main_reco.main(["--config", str(REPO / "configs" / "reco_plus_tiny.yaml")]) == 2
    line = capsys.readouterr().err.splitlines()[0]
    assert "this is a ReCo+ config: run it with main_reco_plus.py" in line
    with pytest.raises(ConfigError, match="this is a ReCo config: run it with main_reco.py"):
        load_reco_plus_config(REPO / "configs" / "reco_tiny.yaml")


def test_a_misspelt_key_gets_the_closest_one(tmp_path):
    cfg = _write(tmp_path / "m.yaml", "dir_ckpt: a\nn_img: 5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'n_img' \(did you mean 'n_imgs'\?"):
        load_reco_config(cfg)
    cfg = _write(tmp_path / "w.yaml", "dir_ckpt: a\nweights: {clipp: random}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'weights.clipp' \(did you mean 'weights.clip'\?"):
        load_reco_config(cfg)


def test_relative_paths_are_shown_resolved(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = load_reco_config(_write(tmp_path / "r.yaml", "dir_ckpt: a\ndir_dataset: data/cityscapes\n"))
    with pytest.raises(ConfigError) as error:
        require_dir(config, "dir_dataset")
    assert f"data/cityscapes (= {tmp_path}/data/cityscapes, relative to the working directory)" in str(error.value)
    assert main_reco.main(["--config", "no_such.yaml"]) == 2
    assert f"config file not found: no_such.yaml (= {tmp_path}/no_such.yaml" in capsys.readouterr().err
    assert main_reco_plus.main(["--config", "no_such.yaml"]) == 2
    assert os.path.join(str(tmp_path), "no_such.yaml") in capsys.readouterr().err
