"""torchrun evaluation: two CPU processes (gloo) give the results, skipped-image list, panels, reference
pickle and pseudo-masks of one process, byte for byte (tiny random models, a few tiny images)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main_reco
from synthetic import write_cityscapes, write_imagenet
from test_end_to_end import reco_config, reference_pickle, run_dir
from utils.io import safe_load_pickle

REPO = Path(__file__).resolve().parents[1]


def _torchrun(config: Path, cwd: Path, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(cwd)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO / "main_reco.py"), "--config", str(config), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _one_process(config: Path, *args: str) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the torchrun processes (OMP_NUM_THREADS=1)
    try:
        assert main_reco.main(["--config", str(config), *args]) == 0
    finally:
        torch.set_num_threads(threads)


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.suffix in {".json", ".png", ".txt"} and p.name not in {"timings.json"}}


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_processes_equal_one_on_val_and_train(tmp_path):
    write_imagenet(tmp_path / "ImageNet2012", "train", n_per_class=2)
    one_tree = tmp_path / "one" / "cityscapes"
    val = write_cityscapes(one_tree, "val", n_images=4, size=(32, 64))
    for image, _ in (val.pairs[1], val.pairs[3]):  # one unreadable image in each rank's block of batches
        image.write_bytes(b"not an image")
    write_cityscapes(one_tree, "train", n_images=3, size=(32, 64))
    shutil.copytree(one_tree, tmp_path / "two" / "cityscapes")  # no reference pickle: rank 0 computes it
    configs = {}
    for name in ("one", "two"):  # batch size 1: the two ranks hold batches 0-1 and 2-3 (val), 0 and 1-2 (train)
        configs[name] = reco_config(tmp_path / name, n_imgs=2, batch_size=1, n_visualisations=3,
                                    dir_imagenet=str(tmp_path / "ImageNet2012"))
    assert main_reco.main(["--config", str(configs["one"]), "--stage", "index"]) == 0
    # The references first, in both: with random weights the lazily built DenseCLIP of a run that computes
    # them differs from that of a run that reads them, so both evaluations read the same pickle.
    _one_process(configs["one"], "--stage", "references")
    _torchrun(configs["two"], tmp_path / "two", "--stage", "references")  # rank 0 computes, rank 1 receives
    pickles = [safe_load_pickle(reference_pickle(configs[name])) for name in ("one", "two")]
    assert list(pickles[0]) == list(pickles[1])
    for category, embedding in pickles[0].items():
        assert torch.equal(pickles[1][category], embedding), category

    for split in ("val", "train"):
        _one_process(configs["one"], "--split", split)
        _torchrun(configs["two"], tmp_path / "two", "--split", split)
        one, two = run_dir(configs["one"], split), run_dir(configs["two"], split)
        files_one, files_two = _files(one), _files(two)
        assert sorted(files_two) == sorted(files_one)
        for name in files_one:  # config.json records dir_ckpt and dir_dataset, which differ
            if name == "skipped_images.txt":
                files_two[name] = files_two[name].replace(b"/two/", b"/one/")
            if name != "config.json":
                assert files_two[name] == files_one[name], name
        assert (two / "timings.json").is_file()
        if split == "val":
            assert {"results.json", "results_crf.json", "0000.png", "0002.png"} <= set(files_one)
            assert len((one / "skipped_images.txt").read_text().splitlines()) == 2
        else:
            assert len([n for n in files_one if n.startswith(("dt/", "dt_crf/"))]) == 6
