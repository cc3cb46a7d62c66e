"""CPU defaults that fit the machine: index_batch_size 'auto' (256 on CUDA, 32 on a CPU) and DataLoader
workers on a CPU capped at the cores less one (utils/device.py)."""
import pytest
import torch

from entry.reco_index import index_workers
from utils.config import ConfigError, RecoConfig, reco_config_from_dict
from utils.device import effective_batch_size, effective_workers, usable_cores


def test_auto_batch_is_256_on_cuda_and_at_most_32_on_a_cpu():
    assert effective_batch_size("auto", "cuda") == 256
    assert effective_batch_size("auto", torch.device("cuda", 1)) == 256
    assert effective_batch_size("auto", "cpu") == 32
    assert effective_batch_size(300, "cpu") == 300  # a number is taken as given
    for bad in (0, "fast", 2.5, True):
        with pytest.raises(ValueError, match="batch size"):
            effective_batch_size(bad, "cpu")


def test_workers_on_a_cpu_are_capped_at_the_cores_less_one():
    assert effective_workers(4, "cpu", cores=2) == 1
    assert effective_workers(4, "cpu", cores=1) == 0
    assert effective_workers(2, "cpu", cores=16) == 2
    assert effective_workers(0, "cpu", cores=16) == 0
    assert effective_workers(8, "cuda", cores=2) == 8  # a GPU build needs its loaders
    assert effective_workers(64, "cpu") == max(0, usable_cores() - 1)


def test_index_batch_size_key_accepts_auto_and_integers():
    assert RecoConfig(dir_ckpt="c").index_batch_size == "auto"
    assert reco_config_from_dict({"dir_ckpt": "c", "index_batch_size": 64}).index_batch_size == 64
    assert reco_config_from_dict({"dir_ckpt": "c", "index_batch_size": "auto"}).index_batch_size == "auto"
    with pytest.raises(ConfigError, match="index_batch_size"):
        reco_config_from_dict({"dir_ckpt": "c", "index_batch_size": "fast"})
    with pytest.raises(ConfigError, match="'index_batch_size' must be >= 1"):
        reco_config_from_dict({"dir_ckpt": "c", "index_batch_size": 0})


def test_the_cpu_index_build_uses_no_more_workers_than_cores_less_one():
    config = RecoConfig(dir_ckpt="c", n_workers=4)
    assert index_workers(config, torch.device("cpu")) == min(4, max(0, usable_cores() - 1))
    assert index_workers(RecoConfig(dir_ckpt="c", index_workers=3), torch.device("cpu")) == 3  # as set
