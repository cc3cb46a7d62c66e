"""ReCo+ (SPEC 12): schedule, optimiser, data order, augmentations, pseudo-mask pairing, the training
loop (it must learn), resume == uninterrupted, evaluation of saved weights, configs and scripts."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import main_reco_plus
from datasets.augmentations import augment, base_geometry, gaussian_blur, sample_rng
from datasets.pseudo_masks import PseudoMaskDataset, PseudoMaskError, build_pseudo_mask_dataset, pair_pseudo_masks
from datasets.transforms import label_geometry
from networks.deeplab import build_segmentor
from reco_plus import (EvalResult, PolyLR, ResumableBatchSampler, TrainHooks, TrainSettings, build_optimizer,
                       evaluate, train)
from synthetic import write_cityscapes, write_coco_stuff, write_kitti_step
from utils.config import load_reco_plus_config
from utils.io import save_png
from utils.normalisation import IMAGENET_MEAN, IMAGENET_STD

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models on a shared 2-core machine: one intra-op thread avoids oversubscription stalls.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- schedule and optimiser
def test_poly_lr_matches_the_original(fixtures_dir):
    expected = json.loads((fixtures_dir / "poly_lr_expected.json").read_text())
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    optimizer = torch.optim.SGD([{"params": [params[0]], "lr": 5e-5}, {"params": [params[1]], "lr": 5e-4}])
    scheduler = PolyLR(optimizer, max_iters=20000, power=0.9, min_lr=1e-6)
    for iteration in range(1, 20001):  # training iteration i runs with t = i - 1 scheduler steps
        if str(iteration) in expected:
            assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(expected[str(iteration)], rel=1e-12)
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(expected["after_20000_steps"], rel=1e-12)
    resumed = PolyLR(torch.optim.SGD([{"params": [params[0]], "lr": 5e-5}, {"params": [params[1]], "lr": 5e-4}]),
                     max_iters=20000)
    resumed.load_state_dict(scheduler.state_dict())
    assert resumed.last_epoch == 20000


def test_poly_lr_built_after_resuming_continues_the_schedule():
    """The entry builds the scheduler after loading the optimiser, at the resumed iteration."""
    def make():
        params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
        return torch.optim.Adam([{"params": [params[0]], "lr": 5e-5}, {"params": [params[1]], "lr": 5e-4}])

    optimizer = make()
    scheduler = PolyLR(optimizer, max_iters=100, min_lr=1e-6)
    for _ in range(37):
        optimizer.step()
        scheduler.step()
    resumed_optimizer = make()
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed = PolyLR(resumed_optimizer, max_iters=100, min_lr=1e-6, last_epoch=37 - 1)
    assert resumed.last_epoch == 37
    assert [g["lr"] for g in resumed_optimizer.param_groups] == [g["lr"] for g in optimizer.param_groups]
    for _ in range(5):
        for opt, sched in ((optimizer, scheduler), (resumed_optimizer, resumed)):
            opt.step()
            sched.step()
    assert [g["lr"] for g in resumed_optimizer.param_groups] == [g["lr"] for g in optimizer.param_groups]


class _ScriptedScores:
    """evaluate(model, iteration) returning the given CRF mIoUs in turn."""

    def __init__(self, mious):
        self.mious = list(mious)

    def __call__(self, model, iteration):
        miou = self.mious.pop(0)
        scores = {"Mean IoU": miou, "Pixel Acc": 0.5}
        return EvalResult(scores=scores, scores_crf=dict(scores))


@pytest.mark.parametrize("mious, best_at", [
    ([0.0, 0.0, 0.0], [2]),                     # a first evaluation of 0 is still the best so far
    ([float("nan"), 0.1, 0.05], [2, 4]),        # NaN first: the next real score replaces it
    ([0.2, 0.3, 0.1], [2, 4]),
], ids=["zero_first", "nan_first", "improves_then_worsens"])
def test_best_model_is_saved_from_the_first_evaluation(mious, best_at):
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    saved = []

    class Hooks(TrainHooks):
        def on_best(self, iteration, state_dict):
            saved.append(iteration)

    def batches():
        while True:
            yield {"image": torch.randn(2, 3, 4, 4), "mask": torch.randint(0, 2, (2, 4, 4))}

    result = train(model=model, optimizer=optimizer, scheduler=PolyLR(optimizer, 6), batches=batches(),
                   settings=TrainSettings(iter_train=6, iter_val=2, n_classes=2, log_every=2),
                   device=torch.device("cpu"), evaluate=_ScriptedScores(mious), hooks=Hooks())
    assert saved == best_at
    assert result.best_miou == pytest.approx(max(m for m in mious if m == m))


def test_optimizer_has_backbone_and_head_groups():
    model = build_segmentor("deeplabv3plus_tiny", 27, "random")
    optimizer = build_optimizer(model, lr=5e-4, backbone_lr_ratio=0.1, weight_decay=2e-4)
    assert isinstance(optimizer, torch.optim.Adam) and len(optimizer.param_groups) == 2
    backbone, head = optimizer.param_groups
    assert backbone["lr"] == pytest.approx(5e-5) and head["lr"] == pytest.approx(5e-4)
    assert backbone["weight_decay"] == head["weight_decay"] == 2e-4 and head["betas"] == (0.9, 0.999)
    assert {id(p) for p in backbone["params"]} == {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in head["params"]} == {id(p) for p in model.classifier.parameters()}


# ---------------------------------------------------------------------------------------- data order
def test_batch_sampler_is_a_function_of_seed_epoch_and_iteration():
    sampler = ResumableBatchSampler(10, 4, seed=3)
    stream = iter(sampler)
    batches = [next(stream) for _ in range(9)]
    assert sampler.batches_per_epoch == 3 and [len(b) for b in batches[:3]] == [4, 4, 2]
    for epoch in range(3):
        epoch_batches = batches[3 * epoch: 3 * epoch + 3]
        assert sorted(i for b in epoch_batches for i, _ in b) == list(range(10))
        assert {e for b in epoch_batches for _, e in b} == {epoch}
    assert batches[0] != batches[3]  # a new order every epoch
    resumed = iter(ResumableBatchSampler(10, 4, seed=3, start_iteration=5))
    assert [next(resumed) for _ in range(4)] == batches[5:9]
    assert batches == [sampler.batch(i) for i in range(9)]
    assert next(iter(ResumableBatchSampler(10, 4, seed=4))) != batches[0]
    # DDP: ranks take disjoint shares that cover the epoch; no batch of a single sample (BatchNorm).
    shards = [ResumableBatchSampler(11, 3, seed=3, rank=r, world_size=2) for r in range(2)]
    shares = [[i for b in range(s.batches_per_epoch) for i, _ in s.batch(b)] for s in shards]
    assert len(shares[0]) == len(shares[1]) == 6 and set(shares[0] + shares[1]) == set(range(11))
    assert all(len(ResumableBatchSampler(9, 4).batch(i)) > 1 for i in range(4))


# ------------------------------------------------------------------------------------- augmentations
def _image_and_mask(h: int = 40, w: int = 60) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    mask = Image.fromarray(np.repeat(np.arange(w, dtype=np.uint8)[None] % 5, h, axis=0))
    return image, mask


def test_augment_is_reproducible_and_keeps_labels_valid():
    image, mask = _image_and_mask()
    a = augment(image, mask, sample_rng(0, 1, 2), crop_size=32)
    b = augment(image, mask, sample_rng(0, 1, 2), crop_size=32)
    c = augment(image, mask, sample_rng(0, 2, 2), crop_size=32)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (3, 32, 32) and a[0].dtype == torch.float32
    assert a[1].shape == (32, 32) and a[1].dtype == torch.int64
    values = set()
    for epoch in range(20):
        values |= set(augment(image, mask, sample_rng(0, epoch, 0), crop_size=32)[1].unique().tolist())
    assert values <= {0, 1, 2, 3, 4, 255} and 255 in values  # scale < 1 pads right/bottom with ignore


def test_augment_geometry_details():
    image, _ = _image_and_mask(375, 1242)
    kitti_mask = Image.fromarray(np.zeros((375, 1242), np.uint8))
    resized, mask = base_geometry(image, kitti_mask, 320)
    assert resized.size == (320, 320) and mask.size == (320, 320)  # KITTI masks: nearest + centre crop
    saved_mask = Image.fromarray(np.full((320, 320), 3, np.uint8))
    assert base_geometry(image, saved_mask, 320)[1] is saved_mask   # Cityscapes / COCO: used as saved
    blurred = gaussian_blur(np.zeros((320, 320, 3), np.uint8), np.random.default_rng(0))
    assert blurred.shape == (320, 320, 3) and blurred.dtype == np.uint8
    impulse = np.zeros((320, 320, 3), np.uint8)
    impulse[160, 160] = 255
    spread = np.nonzero(gaussian_blur(impulse, np.random.default_rng(5))[..., 0].sum(axis=0))[0]
    assert spread.max() - spread.min() <= 32  # kernel 33 at 320x320


# ------------------------------------------------------------------------------- pseudo-mask pairing
def test_pseudo_mask_pairing_by_name(tmp_path):
    names = ["aachen_000000_000019_gtFine_labelIds.png", "bochum_000001_000020_gtFine_labelIds.png"]
    for name in names[::-1]:
        save_png(tmp_path / name, np.zeros((4, 4), np.uint8))
    assert pair_pseudo_masks(names, tmp_path, "cityscapes") == [tmp_path / n for n in names]
    save_png(tmp_path / "zurich_000009_000019_gtFine_labelIds.png", np.zeros((4, 4), np.uint8))
    (tmp_path / names[0]).unlink()
    with pytest.raises(PseudoMaskError) as error:
        pair_pseudo_masks(names, tmp_path, "cityscapes")
    message = str(error.value)
    assert "1 image(s) without a pseudo-mask" in message and names[0] in message
    assert "1 pseudo-mask(s) without an image" in message and "zurich_000009_000019" in message
    kitti = tmp_path / "kitti"
    save_png(kitti / "0000" / "000001.png", np.zeros((4, 4), np.uint8))
    assert pair_pseudo_masks(["0000/000001.png"], kitti, "kitti_step") == [kitti / "0000" / "000001.png"]
    with pytest.raises(PseudoMaskError, match="not found"):
        pair_pseudo_masks(names, tmp_path / "nowhere", "coco_stuff")


def test_pseudo_mask_values_are_checked(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    save_png(tmp_path / "m.png", np.full((32, 32), 100, np.uint8))
    dataset = PseudoMaskDataset([image], [tmp_path / "m.png"], ["m.png"], n_classes=27, crop_size=32)
    with pytest.raises(PseudoMaskError, match="value 100"):
        dataset[(0, 0)]


@pytest.mark.parametrize("dataset_name", ["coco_stuff", "kitti_step"])
def test_pseudo_mask_dataset_on_coco_10k_and_kitti_layouts(tmp_path, dataset_name):
    if dataset_name == "coco_stuff":
        split = write_coco_stuff(tmp_path / "cocostuff", n_val=1, n_train10k=3)["train"]
        root, shape = tmp_path / "cocostuff", (320, 320)          # saved at the evaluation crop
    else:
        split = write_kitti_step(tmp_path / "kitti", "train")
        root, shape = tmp_path / "kitti", None                    # saved at full resolution
    for name, label in zip(split.names, split.labels):
        mask = label if shape is None else label_geometry(label, 320)
        save_png(tmp_path / "masks" / name, np.where(mask < 0, 255, mask).astype(np.uint8))
    dataset = build_pseudo_mask_dataset(dataset_name, root, tmp_path / "masks", 27, crop_size=32, seed=0)
    assert dataset.names == split.names and len(dataset) == len(split.names)
    item = dataset[(1, 3)]
    assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (32, 32)
    assert set(item["mask"].unique().tolist()) <= set(range(27)) | {255}


# --------------------------------------------------------------------------------- the loop learns
COLOURS = np.array([(220, 30, 30), (30, 200, 40), (40, 40, 230), (230, 220, 30)], np.float32)


def _colour_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four quadrants of random classes painted in the class colour (+ noise): class = f(colour)."""
    rng = np.random.default_rng(seed)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    images, masks = [], []
    for _ in range(n):
        r, c = rng.integers(16, 48, 2)
        cls = rng.permutation(4)
        mask = np.empty((64, 64), np.int64)
        mask[:r, :c], mask[:r, c:], mask[r:, :c], mask[r:, c:] = cls
        image = np.clip(COLOURS[mask] + rng.normal(0, 10, (64, 64, 3)), 0, 255) / 255.0
        images.append((torch.from_numpy(image).permute(2, 0, 1).float() - mean) / std)
        masks.append(torch.from_numpy(mask))
    return torch.stack(images), torch.stack(masks)


def test_tiny_segmentor_learns_a_predictable_task():
    x_train, y_train = _colour_task(32, 0)
    x_val, y_val = _colour_task(8, 1)
    y_val[:, :4, :4] = -1
    val = [{"image": x_val[i:i + 4], "label": y_val[i:i + 4]} for i in (0, 4)]
    torch.manual_seed(0)
    model = build_segmentor("deeplabv3plus_tiny", 4, "random")
    optimizer = build_optimizer(model, lr=1e-2)
    scheduler = PolyLR(optimizer, 80)

    def batches():
        for batch in ResumableBatchSampler(32, 8, seed=0):
            index = [i for i, _ in batch]
            yield {"image": x_train[index], "mask": y_train[index]}

    device = torch.device("cpu")
    before = evaluate(model, val, 4, device).scores["Mean IoU"]
    logs, evals = [], []

    class Hooks(TrainHooks):
        def on_log(self, record):
            logs.append(record)

        def on_evaluation(self, iteration, result, record):
            evals.append(record)

    result = train(model=model, optimizer=optimizer, scheduler=scheduler, batches=batches(),
                   settings=TrainSettings(80, 40, 4, log_every=10), device=device,
                   evaluate=lambda m, it: evaluate(m, val, 4, device, crf_fn=lambda im, logits: logits.softmax(1)),
                   hooks=Hooks())
    assert result.iteration == 80 and not result.stopped and model.training
    assert [r["iteration"] for r in evals] == [40, 80]
    assert logs[-1]["loss"] < 0.3 * logs[0]["loss"]
    assert logs[-1]["train_miou"] > max(0.5, logs[0]["train_miou"])  # running score against the masks
    assert evals[-1]["miou"] > 0.7 and evals[-1]["miou"] > before + 0.4
    assert evals[-1]["miou_crf"] == pytest.approx(evals[-1]["miou"])
    assert result.best_miou == pytest.approx(max(r["miou_crf"] for r in evals))
    assert optimizer.param_groups[1]["lr"] == pytest.approx(1e-6)


# ------------------------------------------------------------------- entry: train, resume, evaluate
@pytest.fixture(scope="module")
def cityscapes_tree(tmp_path_factory) -> dict[str, Path]:
    """Synthetic Cityscapes train/val and 320x320 pseudo-masks named as main_reco writes them (= GT here)."""
    root = tmp_path_factory.mktemp("reco_plus")
    train_split = write_cityscapes(root / "cityscapes", "train", n_images=6, seed=1)
    write_cityscapes(root / "cityscapes", "val", n_images=2, seed=2)
    for name, label in zip(train_split.names, train_split.labels):
        mask = label_geometry(label, 320)
        save_png(root / "pseudo_masks" / name, np.where(mask < 0, 255, mask).astype(np.uint8))
    return {"root": root, "dataset": root / "cityscapes", "masks": root / "pseudo_masks"}


def _config(tree: dict[str, Path], path: Path, ckpt: Path, **overrides) -> Path:
    config = yaml.safe_load((REPO / "configs" / "reco_plus_tiny.yaml").read_text())
    config.update(dir_ckpt=str(ckpt), dir_dataset=str(tree["dataset"]), dir_pseudo_masks=str(tree["masks"]),
                  iter_train=6, iter_val=6, log_every=2, batch_size=2, n_workers=0, eval_batch_size=2,
                  crop_size=48, n_visualisations=1)
    config.update(overrides)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_resume_equals_uninterrupted_and_saved_weights_evaluate(cityscapes_tree, tmp_path):
    tree = cityscapes_tree
    run = Path("cityscapes/val/reco_plus/deeplabv3plus_tiny")
    straight = _config(tree, tmp_path / "a.yaml", tmp_path / "a")
    assert main_reco_plus.main(["--config", str(straight)]) == 0
    # Interrupted after iteration 3, resumed with a worker process (data order must not depend on it).
    split = _config(tree, tmp_path / "b.yaml", tmp_path / "b")
    assert main_reco_plus.main(["--config", str(split), "--stop-at", "3"]) == 0
    assert torch.load(tmp_path / "b" / run / "last.pt", weights_only=True)["iteration"] == 3
    _config(tree, split, tmp_path / "b", n_workers=1)
    assert main_reco_plus.main(["--config", str(split)]) == 0

    a = torch.load(tmp_path / "a" / run / "last.pt", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "b" / run / "last.pt", map_location="cpu", weights_only=True)
    assert a["iteration"] == b["iteration"] == 6
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert a["model"]["classifier.classifier.1.num_batches_tracked"] == 6
    records = [json.loads(line) for line in (tmp_path / "b" / run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "loss" in r] == [2, 4, 6]
    assert [r["iteration"] for r in records if "miou" in r] == [6]
    assert (tmp_path / "b" / run / "best_model.pt").is_file()  # the resumed run's first evaluation

    run_dir = tmp_path / "a" / run
    for name in ("best_model.pt", "curves.png", "train.log", "config.yaml", "config.json",
                 "00006/results.json", "00006/results_crf.json", "00006/0000.png"):
        assert (run_dir / name).is_file(), name
    best = torch.load(run_dir / "best_model.pt", map_location="cpu", weights_only=True)
    build_segmentor("deeplabv3plus_tiny", 27, "random").load_state_dict(best, strict=True)  # a plain state_dict
    crf_during_training = json.loads((run_dir / "00006" / "results_crf.json").read_text())

    # Evaluate the saved weights through the script, from another directory, with a relative path.
    shutil.copy(run_dir / "best_model.pt", tmp_path / "weights.pt")
    env = dict(os.environ, PYTHON=sys.executable, CONFIG=str(straight), OMP_NUM_THREADS="1")
    done = subprocess.run(["bash", str(REPO / "scripts" / "reco_plus_cityscapes.sh"), "weights.pt"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    results_crf = json.loads((run_dir / "eval" / "results_crf.json").read_text())
    assert {"Pixel Acc", "Mean Acc", "FreqW Acc", "Mean IoU", "road", "sky", "bicycle"} <= set(results)
    assert "0" not in results and len(results) == 4 + 27
    assert results_crf["Mean IoU"] == pytest.approx(crf_during_training["Mean IoU"])
    assert (run_dir / "eval" / "0000.png").is_file()


def test_entry_errors_are_clear(cityscapes_tree, tmp_path, capsys):
    tree = cityscapes_tree
    cfg = _config(tree, tmp_path / "c.yaml", tmp_path / "c", dir_pseudo_masks=str(tmp_path / "missing"))
    assert main_reco_plus.main(["--config", str(cfg)]) == 2
    assert "c.yaml: dir_pseudo_masks: directory not found" in capsys.readouterr().err
    cfg = _config(tree, tmp_path / "c.yaml", tmp_path / "c", dir_dataset=str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    assert main_reco_plus.main(["--config", str(cfg)]) == 2
    assert "c.yaml: dir_dataset:" in capsys.readouterr().err
    cfg = _config(tree, tmp_path / "c.yaml", tmp_path / "c", weights={"backbone": None})
    assert main_reco_plus.main(["--config", str(cfg)]) == 2
    assert "weights.backbone" in capsys.readouterr().err
    cfg = _config(tree, tmp_path / "c.yaml", tmp_path / "c")
    assert main_reco_plus.main(["--config", str(cfg), "--weights", str(tmp_path / "none.pt")]) == 2
    assert "--weights" in capsys.readouterr().err
    torch.save(build_segmentor("deeplabv3plus_tiny", 19, "random").state_dict(), tmp_path / "c19.pt")
    assert main_reco_plus.main(["--config", str(cfg), "--weights", str(tmp_path / "c19.pt")]) == 2
    assert "does not fit" in capsys.readouterr().err
    masks = tmp_path / "masks"
    shutil.copytree(tree["masks"], masks)
    next(masks.iterdir()).rename(masks / "ulm_000000_000000_gtFine_labelIds.png")
    cfg = _config(tree, tmp_path / "c.yaml", tmp_path / "c", dir_pseudo_masks=str(masks))
    assert main_reco_plus.main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "without a pseudo-mask" in err and "ulm_000000_000000_gtFine_labelIds.png" in err
    assert not (tmp_path / "c").exists()  # no run directory for a run that could not start


# ------------------------------------------------------------------------------ configs and scripts
def test_every_reco_plus_config_loads_and_keeps_the_original_keys(fixtures_dir):
    originals = json.loads((fixtures_dir / "original_configs.json").read_text())
    paths = sorted((REPO / "configs").glob("reco_plus_*.yaml"))
    assert {p.name for p in paths} >= {"reco_plus_cityscapes.yaml", "reco_plus_coco_stuff.yaml",
                                       "reco_plus_kitti_step.yaml", "reco_plus_tiny.yaml"}
    for path in paths:
        config = load_reco_plus_config(path)
        original = originals.get(path.name)
        if original is None:
            continue
        for key, value in original.items():
            if not key.startswith("dir_"):  # paths are placeholders users edit
                assert getattr(config, key) == value, (path.name, key)
        assert config.iter_train == 20000 and config.weights.backbone is not None


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_torchrun_ddp_stops_together_and_resumes_in_one_process(cityscapes_tree, tmp_path):
    """Two CPU processes (gloo): the stop vote, the gathered RNG states and a single-process resume."""
    cfg = _config(cityscapes_tree, tmp_path / "d.yaml", tmp_path / "d", iter_train=4, iter_val=4, batch_size=4)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO / "main_reco_plus.py"), "--config", str(cfg), "--stop-at", "2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "d" / "cityscapes/val/reco_plus/deeplabv3plus_tiny"
    state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    assert state["iteration"] == 2 and len(state["rng"]) == 2
    assert not any(k.startswith("module.") for k in state["model"])
    assert main_reco_plus.main(["--config", str(cfg)]) == 0
    assert torch.load(run_dir / "last.pt", weights_only=True)["iteration"] == 4
    assert (run_dir / "00004" / "results_crf.json").is_file() and (run_dir / "best_model.pt").is_file()
