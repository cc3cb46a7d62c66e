"""Artefacts know what made them (issue 26): a weights file by its content, the reference pickle and its
record in one commit, each pseudo-mask by its own record, damaged reference values refused; and a kill
after any rename of a run of setting B never lets a run of setting A read B's files.

The two settings A and B differ only in the bytes of the encoder file: same name, same size, same
modification time (two tiny-vit checkpoints of other seeds), so every name (pickle, run directory,
cache directory) is the same and only the content hash tells them apart.
"""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import main_reco
from kill_points import every_n, kill_at_every_rename, snapshot
from networks.encoder_registry import get_encoder
from reco.references import reference_problem, stack_references
from reco_api import ReCo
from reco_api.reference_cache import FileReferenceCache
from reco_api.reference_setting import sidecar_differences, sidecar_path, write_with_sidecar
from reco_api.settings import reference_settings
from synthetic import write_cityscapes, write_imagenet
from test_end_to_end import reco_config
from utils.config import load_reco_config

VOLATILE = ["reco.log", "timings.json", ".file_hashes.json"]  # times; stats of files (inode, ctime)


def write_seeded_weights(path: Path, seed: int, build) -> Path:
    """The state dict of `build()` under torch seed `seed`, saved to `path`: two seeds give two files of
    the same name and size with other bytes."""
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(build().state_dict(), path)
    return path


def write_encoder(path: Path, seed: int) -> Path:
    spec = get_encoder("tiny-vit")
    return write_seeded_weights(path, seed, lambda: spec.build(spec))


def replace_keeping_stat(path: Path, source: Path) -> None:
    """`path` gets the bytes of `source`, keeping its name, size and modification time."""
    before = path.stat()
    data = source.read_bytes()
    assert len(data) == before.st_size
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def config_with(root: Path, name: str, encoder: Path, **extra) -> Path:
    base = yaml.safe_load(reco_config(root, n_imgs=2, batch_size=1, n_visualisations=0, **extra).read_text())
    base["weights"] = {"clip": "random", "dense_clip": "random", "encoder": str(encoder)}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny world: ImageNet-like collection (indexed), Cityscapes val and train, encoders A and B."""
    root = tmp_path_factory.mktemp("integrity")
    write_imagenet(root / "ImageNet2012", "train", n_per_class=2)
    write_cityscapes(root / "cityscapes", "val", n_images=1)
    write_cityscapes(root / "cityscapes", "train", n_images=2)
    a = write_encoder(root / "A" / "encoder.pth", seed=1)
    b = write_encoder(root / "B" / "encoder.pth", seed=2)
    assert a.stat().st_size == b.stat().st_size and a.read_bytes() != b.read_bytes()
    config_a, config_b = config_with(root, "A", a), config_with(root, "B", b)
    assert main_reco.main(["--config", str(config_a), "--stage", "index"]) == 0
    return {"root": root, "A": config_a, "B": config_b, "encoder_a": a, "encoder_b": b}


# ------------------------------------------------------------------ item 5a: damaged reference values

def test_reference_problem_known_answers():
    assert reference_problem(torch.ones(4)) is None
    assert reference_problem(torch.ones(4), dim=4) is None
    assert "NaN or infinite" in reference_problem(torch.tensor([1.0, float("nan"), 0, 0]))
    assert "NaN or infinite" in reference_problem(torch.tensor([1.0, float("inf")]))
    assert reference_problem(torch.zeros(4)) == "is all zeros"
    assert "expected (5,)" in reference_problem(torch.ones(4), dim=5)
    with pytest.raises(ValueError, match="'car' is all zeros"):
        stack_references({"sky": torch.ones(3), "car": torch.zeros(3)}, ["sky", "car"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0])
def test_a_damaged_reference_pickle_is_one_line_naming_file_and_category(world, tmp_path, bad, capsys):
    config = load_reco_config(world["A"])
    assert main_reco.main(["--config", str(world["A"]), "--stage", "references"]) == 0
    from entry.run_dirs import reference_pickle_path

    path = reference_pickle_path(config)
    saved = path.read_bytes(), sidecar_path(path).read_bytes()
    try:
        references = pickle.loads(saved[0])
        references["road"] = torch.full_like(references["road"], bad)
        write_with_sidecar(references, path, __import__("json").loads(saved[1])["setting"])
        capsys.readouterr()
        assert main_reco.main(["--config", str(world["A"])]) != 0
        error = capsys.readouterr().err.strip().splitlines()
        assert str(path) in error[0] and "'road'" in error[0] and "RECO_DEBUG" in error[-1], error
        assert len(error) == 2, error
    finally:
        path.write_bytes(saved[0])
        sidecar_path(path).write_bytes(saved[1])


def test_a_damaged_cache_entry_is_recomputed_and_a_bad_one_never_cached(tmp_path):
    config = load_reco_config(reco_config(tmp_path))
    cache = FileReferenceCache(reference_settings(config))
    cache.put("car", (), torch.ones(4))
    path = next(cache.directory.iterdir())
    entry = torch.load(path, weights_only=True)
    torch.save({**entry, "reference": torch.full((4,), float("nan"))}, path)
    assert FileReferenceCache(reference_settings(config)).get("car", ()) is None
    with pytest.raises(ValueError, match="'sky' just computed .* all zeros"):
        cache.put("sky", (), torch.zeros(4))
    assert len(list(cache.directory.iterdir())) == 1


# ------------------------------------------------------------------ item 1: pickle and record together

def test_a_sidecar_naming_another_pickle_is_a_difference(tmp_path):
    path = tmp_path / "refs.pkl"
    assert sidecar_differences(path, {"n_imgs": 2}) is None
    write_with_sidecar({"car": torch.ones(2)}, path, {"n_imgs": 2})
    assert sidecar_differences(path, {"n_imgs": 2}) == []
    assert sidecar_differences(path, {"n_imgs": 3}) == ["n_imgs: 2 -> 3"]
    other = pickle.dumps({"car": torch.zeros(2)}, protocol=pickle.HIGHEST_PROTOCOL)
    path.write_bytes(other)  # the pickle of another run, its record not yet written
    assert "names another pickle" in sidecar_differences(path, {"n_imgs": 2})[0]


# ------------------------------------------------------------------ item 0: a replaced weights file

def test_weights_replaced_by_same_name_size_and_mtime_recompute_references_and_masks(world, tmp_path):
    root = tmp_path
    encoder = shutil.copy2(world["encoder_a"], root / "encoder.pth")
    for sub in ("ImageNet2012", "cityscapes"):
        shutil.copytree(world["root"] / sub, root / sub, symlinks=True)
    config_path = config_with(root, "C", Path(encoder))
    config = load_reco_config(config_path)
    from entry.run_dirs import reference_pickle_path, run_dir_of

    assert main_reco.main(["--config", str(config_path), "--split", "train"]) == 0
    pickle_path, out = reference_pickle_path(config), run_dir_of(config, "train")
    first = pickle.loads(pickle_path.read_bytes())
    masks = {p.name: p.read_bytes() for p in (out / "dt").iterdir()}
    model = ReCo.from_config(config_path, crf=False)
    api_first = model.references(["car", "sky"])

    replace_keeping_stat(Path(encoder), world["encoder_b"])
    assert reference_pickle_path(load_reco_config(config_path)) == pickle_path  # the names stay
    assert main_reco.main(["--config", str(config_path), "--split", "train"]) == 0
    log = (out / "reco.log").read_text()
    assert "made with another setting" in log and "encoder.weights" in log and "sha256" in log
    second = pickle.loads(pickle_path.read_bytes())
    assert not torch.allclose(first["car"], second["car"])
    assert "not reusing the pseudo-masks of 2 images" in log
    assert {p.name: p.read_bytes() for p in (out / "dt").iterdir()} != masks

    # the API: a fresh ReCo finds the per-category cache, and recomputes because the record differs
    api_second = ReCo.from_config(config_path, crf=False).references(["car", "sky"])
    assert not torch.allclose(api_first, api_second)
    assert torch.allclose(api_second[0], torch.nn.functional.normalize(second["car"], dim=0), atol=1e-6)


# ------------------------------------------------------------------ kill points (tests/kill_points.py)

PRELOAD = ["torch", "open_clip", "timm", "entry.reco_benchmark"]


def _state_of(world, config: Path, tmp: Path, name: str, argv_extra: list[str]) -> Path:
    """A copy of the dataset folder and dir_ckpt after an uninterrupted run of `config`."""
    root = world["root"]
    for folder in ("cityscapes", "ckpt"):
        if (root / folder).exists() and folder == "ckpt":
            shutil.rmtree(root / folder)
    assert main_reco.main(["--config", str(config)] + argv_extra) == 0
    state = tmp / name
    for folder in ("cityscapes", "ckpt"):
        shutil.copytree(root / folder, state / folder)
    return state


def _reset_to(state: Path, root: Path) -> list[list]:
    return [[str(state / f), str(root / f)] for f in ("cityscapes", "ckpt")]


@pytest.mark.slow
def test_references_of_b_killed_then_a_run_of_a_and_a_rerun_of_b(world, tmp_path):
    """A kill after B's renames (a spread of N: the first, and the last four, where the sidecar and the
    pickle go in; every N would take minutes) leaves files that a run of A reads as A's or recomputes, and a re-run
    of B gives B's files."""
    root = world["root"]
    argv_a = ["--config", str(world["A"]), "--stage", "references"]
    argv_b = ["--config", str(world["B"]), "--stage", "references"]
    base = _state_of(world, world["A"], tmp_path, "a", ["--stage", "references"])
    folders = [str(root / "cityscapes"), str(root / "ckpt")]
    result = kill_at_every_rename({
        "module": "main_reco", "argv": argv_b, "then": [argv_a, argv_b], "reset": _reset_to(base, root),
        "snapshot": folders, "ignore": VOLATILE, "preload": PRELOAD, "values": True,
        "points": [1, -4, -3, -2, -1]},
        tmp_path / "work")
    a_files = [snapshot(base / "cityscapes", VOLATILE, values=True), snapshot(base / "ckpt", VOLATILE, values=True)]
    b_files = result["uninterrupted"]
    assert result["uninterrupted_rc"] == 0 and a_files[0] != b_files[0]
    assert len(result["points"]) == (result["count"] if every_n() else 5)
    for n, point in result["points"].items():
        assert point["killed_rc"] == -9, n
        (run_a, run_b) = point["after"]
        assert run_a["rc"] == 0 and run_b["rc"] == 0, n
        assert run_a["files"][0] == a_files[0], f"after a kill at rename {n} of B, A did not get A's references"
        assert run_b["files"] == b_files, f"after a kill at rename {n} of B and a run of A, B's re-run differs"


@pytest.mark.slow
def test_pseudo_masks_of_a_then_b_killed_and_resumed(world, tmp_path):
    """A train run of B over A's finished one, killed after any of a spread of renames, then resumed:
    the masks are B's uninterrupted ones (none of A's reused)."""
    root = world["root"]
    base = _state_of(world, world["A"], tmp_path, "a", ["--split", "train"])
    folders = [str(root / "cityscapes"), str(root / "ckpt")]
    # a co-segmentation picture is drawn only for a category computed by the run: one whose reference
    # the killed run had cached keeps the earlier run's picture
    result = kill_at_every_rename({
        "module": "main_reco", "argv": ["--config", str(world["B"]), "--split", "train"],
        "reset": _reset_to(base, root), "snapshot": folders, "ignore": VOLATILE + ["coseg_*.png"], "preload": PRELOAD,
        "values": True, "points": [30, -4, -2]}, tmp_path / "work")
    assert result["uninterrupted_rc"] == 0
    for n, point in result["points"].items():
        assert point["killed_rc"] == -9 and point["rerun_rc"] == 0, n
        assert point["after_rerun"] == result["uninterrupted"], f"a kill at rename {n}: the resumed run differs"


def test_pictures_of_another_setting_never_stay_beside_a_run(world, tmp_path):
    """A and B share a run directory (same file names), each with its own reference cache. B's references
    come from its cache on its second run, so it draws no picture: A's pictures must not stay beside B's
    results."""
    from entry.run_dirs import run_dir_of

    for sub in ("ImageNet2012", "cityscapes"):
        shutil.copytree(world["root"] / sub, tmp_path / sub, symlinks=True)
    config_a, config_b = (config_with(tmp_path, name, world[f"encoder_{name.lower()}"], cosegmentation_pictures=True,
                                      reference_cache_dir=str(tmp_path / f"references_{name}")) for name in "AB")
    run = run_dir_of(load_reco_config(config_a), "val")
    assert run == run_dir_of(load_reco_config(config_b), "val")
    assert main_reco.main(["--config", str(config_b), "--stage", "references"]) == 0
    pictures_b = {p.name: p.read_bytes() for p in run.glob("coseg_*.png")}
    assert main_reco.main(["--config", str(config_a), "--stage", "references"]) == 0
    pictures_a = {p.name: p.read_bytes() for p in run.glob("coseg_*.png")}
    assert pictures_a.keys() == pictures_b.keys() and pictures_a != pictures_b
    assert main_reco.main(["--config", str(config_b), "--stage", "references"]) == 0  # all from B's cache
    assert not list(run.glob("coseg_*.png"))
    assert f"removed {len(pictures_a)} co-segmentation pictures of another setting" in (run / "reco.log").read_text()
    assert main_reco.main(["--config", str(config_b), "--stage", "references"]) == 0  # same setting: nothing to do
    assert "removed" not in (run / "reco.log").read_text().split("ReCo on")[-1]
