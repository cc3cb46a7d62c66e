"""`python main_reco.py --demo`: every stage on the synthetic world, with a known answer."""
import json

import pytest

import main_reco


def test_demo_reaches_the_known_answer_and_says_where_things_are(demo_world, tmp_path, capsys):
    out, printed = demo_world

    from entry.reco_benchmark import run_dir_of
    from utils.config import load_reco_config

    config = load_reco_config(out / "demo_config.yaml")
    run_dir = run_dir_of(config, "val")  # the colour-coded models are not the paper's setting: a hashed name
    assert run_dir.parent.name.startswith("demo_colour_encoder_in_train_ce_ta_") and run_dir.name == "k003"
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


def test_demo_models_are_registry_entries_only_while_it_runs(tmp_path):
    import torch

    import networks
    from demo.registry import CLIP_ARCH, DENSE_CLIP_ARCH, ENCODER_ARCH, colour_model_entries
    from networks.clip import DenseCLIP
    from networks.clip_registry import clip_names
    from networks.encoder_registry import encoder_names

    with pytest.raises(RuntimeError):
        with colour_model_entries({"sky": 0}, [(0, 0, 255)]):
            assert CLIP_ARCH in clip_names() and DENSE_CLIP_ARCH in clip_names(dense=True)
            clip_model, tokenizer = networks.build_clip(DENSE_CLIP_ARCH, "random")
            text = clip_model.encode_text(tokenizer(["a photo of a sky."]))
            assert text.argmax().item() == 0  # the word's colour
            dense = DenseCLIP(clip_model)  # the colour-coded CLIP brings its own dense form
            assert dense(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 2, 2)
            encoder = networks.build_encoder(ENCODER_ARCH, "random")
            assert encoder.patch_size == 8 and encoder.embed_dim == 2
            checkpoint = tmp_path / "encoder.pth"
            checkpoint.write_bytes(b"")
            with pytest.raises(ValueError, match="takes no weights"):
                networks.build_encoder(ENCODER_ARCH, str(checkpoint))
            raise RuntimeError("a failing stage")
    assert CLIP_ARCH not in clip_names() and DENSE_CLIP_ARCH not in clip_names() and ENCODER_ARCH not in encoder_names()


def test_demo_takes_no_config(capsys):
    with pytest.raises(SystemExit) as exit_:
        main_reco.main(["--demo", "--config", "configs/reco_tiny.yaml"])
    assert exit_.value.code == 2 and "--demo runs on its own world" in capsys.readouterr().err
