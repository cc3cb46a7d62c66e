"""torchrun-aware helpers for multi-process jobs (no project imports).

Under `torchrun --nproc_per_node=N script.py` every process gets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT in its environment; a plain `python script.py` has none of them and runs as
rank 0 of 1 without initialising torch.distributed at all.

    rank, world_size, local_rank = init_distributed()
    ...
    barrier()
    if is_main():
        ...
    cleanup()
"""
from __future__ import annotations

import datetime
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def env_world_size() -> int:
    """WORLD_SIZE from the environment (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """RANK from the environment (0 when not launched by torchrun); valid before init_distributed."""
    return int(os.environ.get("RANK", "0"))


def env_local_world_size() -> int:
    """LOCAL_WORLD_SIZE from the environment (1 when not launched by torchrun): processes on this node."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def env_local_rank() -> int:
    """LOCAL_RANK from the environment (0 when not launched by torchrun): this process's GPU on its node."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(backend: str | None = None, timeout_minutes: float = 120.0) -> tuple[int, int, int]:
    """Join the torchrun process group if launched by torchrun; returns (rank, world_size, local_rank).

    backend: None -> "nccl" when CUDA is available, else "gloo" (CPU). On CUDA the process is pinned
    to GPU `local_rank` first, so NCCL collectives and `resolve_device('auto')` agree on the device.
    The long default timeout lets ranks wait at a barrier while a slower rank finishes its last shard
    (torchrun kills the other ranks anyway when one of them dies).
    """
    world_size = env_world_size()
    if world_size <= 1 or "RANK" not in os.environ:
        return 0, 1, 0
    rank, local_rank = env_rank(), env_local_rank()
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local_rank
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(minutes=timeout_minutes))
    return rank, world_size, local_rank


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that writes shared outputs and logs."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank; a no-op outside a multi-process group."""
    if not is_distributed():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (safe to call when none was initialised)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    """True once this process has joined a process group (of any size)."""
    return dist.is_available() and dist.is_initialized()


def shard_range(n_items: int, rank: int, world_size: int) -> range:
    """The contiguous block of range(n_items) that `rank` of `world_size` takes: blocks in rank order,
    sizes differing by at most one, so concatenating the ranks' results in rank order gives one
    process's order."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of world size {world_size}")
    return range(rank * n_items // world_size, (rank + 1) * n_items // world_size)


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sum_(array: np.ndarray) -> np.ndarray:
    """Sum `array` over the ranks, in place (float64 sums of counts are exact); a no-op in one process."""
    if not is_distributed():
        return array
    summed = torch.from_numpy(np.ascontiguousarray(array)).to(_collective_device())
    dist.all_reduce(summed, op=dist.ReduceOp.SUM)
    array[...] = summed.cpu().numpy()
    return array


def gather_lists(items: list) -> list:
    """Every rank's `items` concatenated in rank order, on every rank; `items` itself in one process."""
    if not is_distributed():
        return items
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s picklable `obj` on every rank (the others wait for it); `obj` itself in one process."""
    if not is_distributed():
        return obj
    holder = [obj if get_rank() == src else None]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]
