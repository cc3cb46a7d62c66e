"""Outputs of two versions of the code on the same synthetic worlds, compared file by file.

    python benchmarks/compare_outputs.py                 # this tree against `main`
    python benchmarks/compare_outputs.py --old 0a2e394   # ... against any commit
    python benchmarks/compare_outputs.py --keep DIR      # keep the worlds and the outputs in DIR

The old version is checked out with `git worktree add` into a temporary folder. One synthetic world is
written (by this tree's test helpers) and copied for each version, which then runs, in one process of
its own, every stage that leaves outputs: the three paper benchmarks (val and train pseudo-masks), the
eight open-vocabulary benchmarks, own images through main_reco.py, the Python API (with and without
CRF) and `main_reco.py --demo`. Models are the tiny random architectures (the demo: its colour-coded
ones), so nothing is downloaded. Compared: every results.json / results_crf.json exactly, every
pseudo-mask and own-image mask byte for byte, summary.json, and the API's labels, scores and CRF
probabilities exactly. Exit status 0 when all are equal; the differences are listed otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TINY = {"clip_arch": "tiny-vit-clip", "dense_clip_arch": "tiny-rn-clip", "encoder_arch": "tiny-vit",
        "weights": {"clip": "random", "dense_clip": "random", "encoder": "random"}}
PAPER_BENCHMARKS = ("cityscapes", "coco_stuff", "kitti_step")
OWN_CLASSES = "road, building, vegetation, sky, car"
BACKGROUND = {"voc21": {"mode": "synonyms"}, "context60": {"mode": "threshold", "threshold": 0.55},
              "coco_object": {"mode": "threshold", "threshold": 0.65}}
COMPARED_SUFFIXES = (".json", ".png")  # results, summaries, masks; logs, timings and panels aside
SKIPPED_NAMES = ("timings.json", "config.json")  # times; config.json holds the run's own paths


# ----------------------------------------------------------------------------- the world (this tree)

def write_world(world: Path) -> list[str]:
    """Synthetic ImageNet, the three paper benchmarks, the open-vocabulary ones and own images under
    `world`; returns the open-vocabulary benchmark names."""
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    from datasets.registry import BENCHMARKS
    from demo.world import write_cityscapes, write_imagenet, write_photos
    from synthetic import write_coco_stuff, write_kitti_step
    from synthetic_ovss import write_ovss

    write_imagenet(world / "ImageNet2012", "train", n_per_class=3)
    for split, n in (("val", 2), ("train", 2)):
        write_cityscapes(world / "cityscapes", split, n_images=n, seed=0 if split == "val" else 1)
    write_coco_stuff(world / "cocostuff", n_val=2, n_train10k=2, size=(40, 56))
    for split in ("val", "train"):
        write_kitti_step(world / "kitti_step", split)
    ovss = [name for name, spec in BENCHMARKS.items() if spec.protocol == "ovss"]
    for name in ovss:
        write_ovss(name, world / name)
    write_photos(world / "photos", classes=[c.strip() for c in OWN_CLASSES.split(",")])
    return ovss


# ----------------------------------------------------------------------------- one version's run

def run_cases(tree: Path, world: Path, out: Path, ovss: list[str]) -> None:
    """Every case on `tree`'s code (this function runs in a process of its own, cwd = tree)."""
    import yaml

    sys.path.insert(0, str(tree))
    os.chdir(tree)
    import main_reco
    from utils.device import setup_logging

    setup_logging()
    base = {"dir_ckpt": str(out / "ckpt"), "dir_imagenet": str(world / "ImageNet2012"), **TINY,
            "n_imgs": 3, "batch_size": 2, "n_workers": 0, "n_visualisations": 1, "device": "cpu",
            "crf_workers": 1, "index_batch_size": 16, "index_shard_size": 32}
    roots = {"cityscapes": "cityscapes", "coco_stuff": "cocostuff", "kitti_step": "kitti_step"}

    def config(name: str, **extra: Any) -> str:
        path = out / "configs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({**base, **extra}))
        return str(path)

    def main(*argv: str) -> None:
        rc = main_reco.main(list(argv))
        if rc != 0:
            raise SystemExit(f"main_reco.py {' '.join(argv)} failed with {rc}")

    for name in PAPER_BENCHMARKS:
        cfg = config(name, dir_dataset=str(world / roots[name]), dataset_name=name)
        main("--config", cfg)
        main("--config", cfg, "--split", "train")
    for name in ovss:
        main("--config", config(name, dir_dataset=str(world / name), dataset_name=name, dense_clip_inference=False,
                                eval_short_side=96, slide_window=48, slide_stride=24,
                                background=BACKGROUND.get(name, {"mode": "none"})))
    own = config("own", image_short_side=48)
    main("--config", own, "--images", str(world / "photos"), "--categories", OWN_CLASSES, "--out", str(out / "own"))
    _run_api(own, world / "photos", out / "api")
    main("--demo", "--out", str(out / "demo"))


def _run_api(config: str, photos: Path, out: Path) -> None:
    import numpy as np
    from reco_api import ReCo

    model = ReCo.from_config(config)
    out.mkdir(parents=True, exist_ok=True)
    images = sorted(p for p in photos.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    for crf in (False, True):
        for i, result in enumerate(model.segment_batch(images, OWN_CLASSES, crf=crf)):
            arrays = {"labels": result.labels, "scores": result.scores}
            if result.crf_probabilities is not None:
                arrays["crf_probabilities"] = result.crf_probabilities
            np.savez(out / f"{i}_crf{int(crf)}.npz", **arrays)
            (out / f"{i}_crf{int(crf)}_fractions.json").write_text(json.dumps(result.fractions, sort_keys=True))


# ----------------------------------------------------------------------------- comparison

def compared_files(out: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name not in SKIPPED_NAMES and (
                path.suffix in COMPARED_SUFFIXES and not _is_panel(path) or path.suffix == ".npz"):
            files[path.relative_to(out).as_posix()] = path
    return files


def _is_panel(path: Path) -> bool:
    """Visualisation panels ({i:04d}.png in a run directory), co-segmentation pictures and legends
    (matplotlib renderings) and the world's own images: not compared. Pseudo-masks (dt/, dt_crf/, KITTI
    frames named by number included), own-image masks and overlays are."""
    if path.suffix != ".png" or "world" in path.parts:
        return path.suffix == ".png"
    if {"dt", "dt_crf", "masks", "overlays"} & set(path.parts):
        return False
    return (path.stem.isdigit() and len(path.stem) == 4) or path.stem.startswith("coseg_") or path.name == "legend.png"


def differences(old: Path, new: Path) -> list[str]:
    import numpy as np

    old_files, new_files = compared_files(old), compared_files(new)
    found = [f"only in old: {name}" for name in sorted(set(old_files) - set(new_files))]
    found += [f"only in new: {name}" for name in sorted(set(new_files) - set(old_files))]
    for name in sorted(set(old_files) & set(new_files)):
        a, b = old_files[name], new_files[name]
        if a.suffix == ".npz":
            x, y = np.load(a), np.load(b)
            if set(x.files) != set(y.files) or any(not np.array_equal(x[k], y[k]) for k in x.files):
                found.append(f"differs: {name}")
        elif a.suffix == ".json":
            if _normalised_json(a, old) != _normalised_json(b, new):
                found.append(f"differs: {name}")
        elif a.read_bytes() != b.read_bytes():
            found.append(f"differs: {name}")
    return found


def _normalised_json(path: Path, root: Path) -> Any:
    """The JSON with this run's own root replaced, so paths written into summaries compare."""
    return json.loads(path.read_text().replace(str(root), "<out>").replace(str(root.parent / "world"), "<world>"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", default="main", help="the commit to compare against (default: main)")
    p.add_argument("--keep", help="write everything here instead of a temporary folder (kept)")
    p.add_argument("--run-cases", nargs=3, metavar=("TREE", "WORLD", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--ovss", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run_cases:
        tree, world, out = map(Path, args.run_cases)
        run_cases(tree, world, out, [n for n in args.ovss.split(",") if n])
        return 0

    work = Path(args.keep or tempfile.mkdtemp(prefix="reco-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    old_tree = work / "old_tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--force", str(old_tree), args.old],
                   check=True, capture_output=True)
    try:
        ovss = write_world(work / "world_template")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        runs = {}
        for label, tree in (("old", old_tree), ("new", REPO)):  # side by side, one process each
            shutil.copytree(work / "world_template", work / label / "world", dirs_exist_ok=True)
            log = work / f"{label}.log"
            print(f"running {label} ({tree}), log {log} ...", flush=True)
            with open(log, "w") as out:
                runs[label] = subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), "--run-cases", str(tree),
                     str(work / label / "world"), str(work / label / "out"), "--ovss", ",".join(ovss)],
                    cwd=tree, env=env, stdout=out, stderr=out)
        failed = [label for label, run in runs.items() if run.wait() != 0]
        if failed:
            raise SystemExit(f"the {' and '.join(failed)} run failed: see {work}/<old|new>.log"
                             + ("" if args.keep else " (pass --keep DIR to keep it)"))
        found = differences(work / "old" / "out", work / "new" / "out")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_tree)], capture_output=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    n = len(compared_files(work / "new" / "out")) if args.keep else None
    print(f"compared {'' if n is None else f'{n} '}files: "
          + ("all equal" if not found else f"{len(found)} differ"))
    for line in found:
        print("  " + line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
