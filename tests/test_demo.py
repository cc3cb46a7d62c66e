"""`python main_reco.py --demo`: every stage on the synthetic world, with a known answer."""
import json

import pytest

import main_reco


def test_demo_reaches_the_known_answer_and_says_where_things_are(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main_reco.main(["--demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out

    from entry.reco_benchmark import run_dir_of
    from utils.config import load_reco_config

    config = load_reco_config(out / "demo_config.yaml")
    run_dir = run_dir_of(config, "val")  # the tiny models are not the paper's setting: a hashed name
    assert run_dir.parent.name.startswith("tiny_vit_in_train_ce_ta_") and run_dir.name == "k003"
    results = json.loads((run_dir / "results.json").read_text())
    results_crf = json.loads((run_dir / "results_crf.json").read_text())
    assert results["Mean IoU"] >= 0.9 and results_crf["Mean IoU"] >= 0.9, (results, results_crf)
    assert f"mIoU                 {results['Mean IoU']:.3f}" in printed
    for path in (run_dir / "0000.png", run_dir / "coseg_car.png", run_dir / "timings.json",
                 out / "own_images/overlays/scene0.png", out / "own_images/summary.json", out / "demo_config.yaml"):
        assert path.is_file(), path
        assert str(path.parent) in printed or path.name == "demo_config.yaml" and str(path) in printed
    train_dir = run_dir_of(config, "train")
    assert len(list((train_dir / "dt_crf").rglob("*.png"))) == 4
    accuracy = float(printed.split("own images accuracy")[1].split()[0])
    assert accuracy >= 0.9

    timings = json.loads((run_dir / "timings.json").read_text())
    assert {"models", "retrieval", "co-segmentation", "inference", "CRF", "writing"} <= set(timings["stages"])
    assert set(timings["items"]["co-segmentation"]) >= {"car", "sky", "tree"}  # per category

    # A foreign non-empty folder is refused before anything is written into it.
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    assert main_reco.main(["--demo", "--out", str(foreign)]) == 2
    assert "--out:" in capsys.readouterr().err and (foreign / "thesis.tex").read_text() == "precious"


def test_demo_leaves_the_real_models_in_place(tmp_path):
    import entry.reco_common as common
    import networks
    from entry.reco_demo import colour_models

    before = (networks.build_clip, networks.build_encoder, common.DenseCLIP)
    with pytest.raises(RuntimeError):
        with colour_models({"sky": 0}, [(0, 0, 255)]):
            assert networks.build_clip is not before[0]
            raise RuntimeError("a failing stage")
    assert (networks.build_clip, networks.build_encoder, common.DenseCLIP) == before


def test_demo_takes_no_config(capsys):
    with pytest.raises(SystemExit) as exit_:
        main_reco.main(["--demo", "--config", "configs/reco_tiny.yaml"])
    assert exit_.value.code == 2 and "--demo runs on its own world" in capsys.readouterr().err
