"""Reproducible, resumable data order for training (a function of seed, epoch and rank only).

The original shuffled with an unseeded DataLoader and re-created the loader at every epoch. Here the
order of epoch e is a permutation drawn from a generator seeded with (seed, e), so the batch used at
any global iteration can be recomputed after a restart: resuming at iteration i simply starts the
stream at i. Each yielded element is a pair (dataset index, epoch); the dataset derives the random
augmentation of that sample from (seed, epoch, index), which keeps augmentations independent of the
number of DataLoader workers and identical after a resume.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Sampler

from utils.device import seed_sequence


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed for one sample's augmentation, a pure function of (seed, epoch, index)."""
    state = seed_sequence(seed, epoch, index).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Endless stream of training batches of (index, epoch) pairs, sharded over DDP ranks.

    Epoch e: permutation of range(n_samples) from torch.Generator seeded with hash(seed, e); rank r takes
    positions r, r + world_size, ... (the permutation is padded by wrapping so every rank gets the same
    number of samples). A last batch of a single sample is dropped, because BatchNorm on the image-pooling
    branch cannot train on one sample.

    Args:
        n_samples: dataset length. batch_size: per-rank batch size. start_iteration: global iteration
        (number of batches already consumed) at which the stream starts.
    """

    def __init__(self, n_samples: int, batch_size: int, seed: int = 0, start_iteration: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if n_samples < 1 or batch_size < 1:
            raise ValueError(f"need n_samples >= 1 and batch_size >= 1, got {n_samples}, {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.n_samples, self.batch_size, self.seed = n_samples, batch_size, seed
        self.start_iteration, self.rank, self.world_size = start_iteration, rank, world_size
        self.per_rank = math.ceil(n_samples / world_size)
        n_batches = math.ceil(self.per_rank / batch_size)
        if n_batches > 1 and self.per_rank % batch_size == 1:
            n_batches -= 1
        self.batches_per_epoch = n_batches

    def position(self, iteration: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of global iteration `iteration` (0-based)."""
        return divmod(iteration, self.batches_per_epoch)

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's sample indices of `epoch`, in order."""
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, -1 & 0xFFFFFFFF) % 2**63)
        order = torch.randperm(self.n_samples, generator=generator).tolist()
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / self.n_samples))[:total]
        return order[self.rank::self.world_size]

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        """The batch of global iteration `iteration`."""
        epoch, b = self.position(iteration)
        indices = self.epoch_indices(epoch)[b * self.batch_size:(b + 1) * self.batch_size]
        return [(i, epoch) for i in indices]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        iteration = self.start_iteration
        epoch, cached = -1, []
        while True:
            e, b = self.position(iteration)
            if e != epoch:
                epoch, cached = e, self.epoch_indices(e)
            yield [(i, epoch) for i in cached[b * self.batch_size:(b + 1) * self.batch_size]]
            iteration += 1

    def __len__(self) -> int:
        return self.batches_per_epoch
