"""Top-k retrieval of index images for many queries at once (SPEC 4), from a memory-mapped fp16 matrix.

The index (M, D) is read in row chunks; each chunk is multiplied with all queries at once and merged into
a running top-k with torch.topk. Results are exact w.r.t. float32 cosine scores of the stored rows:

* "fp32": every chunk is converted to float32 (into one reused buffer) and scored in float32 (the GPU
  path always does this; 336 GFLOP for 171 x 1.28M x 768, milliseconds on a GPU).
* "bf16" (CPU with native bf16 dot products, e.g. AVX512-BF16): a bf16 pass with a provable error bound
  selects candidates that are re-scored in float32 (reco.retrieval_bf16). Same answer as "fp32" up to
  float32 rounding ties, about 2x faster end to end on CPU: 1.8 s vs 3.7 s for 171 x 1,281,167 x 768 on
  2 Zen 4 cores, of which the bf16 GEMM (336 GFLOP at ~300 GFLOP/s) is 1.1 s.

An index converted from float32 embeddings that float16 cannot hold exactly (ExactRows: the float32
rows kept beside it) is searched the same way for candidates, with the margin widened by a proven bound
on the float16 rounding; the candidates are then re-scored from the float32 rows, so near-ties that
float16 reorders (score differences of ~1e-5) come out in the float32 order.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional, Union

import numpy as np
import torch

from reco.retrieval_bf16 import (FP32_UNIT_ROUNDOFF, Embeddings, bf16_candidates, gather_rows,
                                 rescore_float32, rows_view)

_BF16_MIN_ROWS = 65536  # below this the fp32 path is fast anyway
_EXTRA_CANDIDATES = 256  # first guess of the candidates beyond k taken from the float16 scores


@dataclass(frozen=True)
class ExactRows:
    """The float32 rows a float16 index was rounded from, for exact re-scoring of candidates.

    rows (M, D) float32 (numpy memmap or tensor); max_residual: an upper bound on ||rows_j - fp16_j||_2
    over all rows j; max_norm: an upper bound on ||fp16_j||_2. Both are recorded at conversion.
    """

    rows: Embeddings
    max_residual: float
    max_norm: float


def retrieve_top_k(queries: torch.Tensor, embeddings: Embeddings, k: int,
                   device: Optional[Union[str, torch.device]] = None, chunk_rows: int = 131072,
                   method: str = "auto", exact_rows: Optional[ExactRows] = None,
                   fast_bf16: bool = False) -> torch.Tensor:
    """Indices of the k highest-scoring index rows for each query, in rank order.

    queries (N, D) tensor (unit rows for cosine similarity, SPEC 3); embeddings (M, D) numpy array or
    memmap (e.g. ImageNetIndex.embeddings, float16) or tensor. Scores are dot products q . e in float32.
    device: where to compute; None -> the embeddings' device if a tensor, else CPU.
    method: "auto" (GPU: fp32; CPU: bf16 pre-filter + fp32 re-scoring when `fast_bf16` says the CPU has
    native bf16 dot products, utils.device.cpu_has_fast_bf16(); else fp32), "fp32" or "bf16". Returns LongTensor (N, k) on the CPU. Ties are broken arbitrarily.
    exact_rows: the float32 originals of `embeddings` (ExactRows). Then the result is exactly the top k
    of the float32 rows: ranked by q . e32 evaluated in float64 (each product exact; the sums to ~1e-13),
    equal scores in row order (a stable argsort), whatever the method and device.
    """
    if queries.ndim != 2:
        raise ValueError(f"queries must be (N, D), got shape {tuple(queries.shape)}")
    if embeddings.ndim != 2 or embeddings.shape[1] != queries.shape[1]:
        raise ValueError(f"embeddings must be (M, {queries.shape[1]}) to match the queries, "
                         f"got shape {tuple(embeddings.shape)}")
    if exact_rows is not None and tuple(exact_rows.rows.shape) != tuple(embeddings.shape):
        raise ValueError(f"exact_rows.rows has shape {tuple(exact_rows.rows.shape)}, the embeddings "
                         f"{tuple(embeddings.shape)}: they must be the same rows")
    n_rows = int(embeddings.shape[0])
    if not 1 <= k <= n_rows:
        raise ValueError(f"k must be in [1, {n_rows}] (index rows), got {k}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    if device is None:
        device = embeddings.device if isinstance(embeddings, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    if method not in ("auto", "fp32", "bf16"):
        raise ValueError(f"method must be 'auto', 'fp32' or 'bf16', got {method!r}")
    if method == "auto":
        method = "bf16" if device.type == "cpu" and fast_bf16 and n_rows >= _BF16_MIN_ROWS else "fp32"
    if method == "bf16" and device.type != "cpu":
        raise ValueError("method='bf16' is the CPU path; use 'fp32' (or 'auto') on a GPU")
    if queries.shape[0] == 0:
        return torch.zeros(0, k, dtype=torch.long)
    if not bool(torch.isfinite(queries).all()):
        raise ValueError("queries contain NaN or infinite values")
    with torch.inference_mode(), _full_float32_matmul():
        q = queries.detach().float()
        if method == "bf16":
            q = q.cpu()
            extra = None if exact_rows is None else q.double().norm(dim=1) * exact_rows.max_residual * (1 + 1e-4)
            qi, row = bf16_candidates(q, embeddings, k, chunk_rows, extra=extra)
            if exact_rows is None:
                return rescore_float32(q, embeddings, qi, row, k)
            return _exact_top_k(q, exact_rows.rows, qi, row, k)
        q = q.to(device)
        if exact_rows is None:
            return _top_k_fp32(q, embeddings, k, chunk_rows, device)[1].cpu()
        qi, row = _fp32_candidates(q, embeddings, k, chunk_rows, device, exact_rows)
        return _exact_top_k(q.cpu(), exact_rows.rows, qi, row, k)


@contextlib.contextmanager
def _full_float32_matmul() -> Iterator[None]:
    """float32 GEMMs in full float32 (no TF32 / bf16 internal precision), which the error bounds assume."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _merge(best_v: Optional[torch.Tensor], best_i: Optional[torch.Tensor], v: torch.Tensor, i: torch.Tensor,
           k: int) -> tuple[torch.Tensor, torch.Tensor]:
    if best_v is None:
        return v, i
    v, pos = torch.cat([best_v, v], dim=1).topk(min(k, best_v.shape[1] + v.shape[1]), dim=1)
    return v, torch.cat([best_i, i], dim=1).gather(1, pos)


def _top_k_fp32(q: torch.Tensor, embeddings: Embeddings, k: int, chunk_rows: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) (N, k) on `device`, values descending: float32 scores of the stored rows."""
    n_rows, dim = embeddings.shape
    buffer = torch.empty(min(chunk_rows, n_rows), dim, dtype=torch.float32, device=device)
    best_v = best_i = None
    for start in range(0, n_rows, chunk_rows):
        stop = min(start + chunk_rows, n_rows)
        rows = buffer[: stop - start]
        rows.copy_(rows_view(embeddings, start, stop))  # fp16 -> fp32 (and host -> device) into one buffer
        scores = q @ rows.T  # (N, chunk)
        v, i = scores.topk(min(k, stop - start), dim=1)
        best_v, best_i = _merge(best_v, best_i, v, i + start, k)
    return best_v, best_i


def _fp32_candidates(q: torch.Tensor, embeddings: Embeddings, k: int, chunk_rows: int, device: torch.device,
                     exact: ExactRows) -> tuple[torch.Tensor, torch.Tensor]:
    """(query, row) CPU pairs holding every row of the exact float32 top k of each query (at least k each).

    s^ = fl32(q . e16) errs from the exact t = q . e32 by at most B = ||q|| (r + gamma_D R): r bounds
    ||e32 - e16|| (Cauchy-Schwarz) and the float32 GEMM, in any summation order, errs by at most
    gamma_D sum |q_i e_i| <= gamma_D ||q|| R with R >= ||e16|| (fp16 -> fp32 is exact). With a the k-th
    best s^, the k-th best t is >= a - B, and a row can reach it only if s^ >= a - 2B. The widest
    candidate list needed is not known in advance: the top k + m are taken, m growing until the last
    of them lies below a - 2B, so that no row outside can qualify.
    """
    n_rows, dim = embeddings.shape
    gamma = dim * FP32_UNIT_ROUNDOFF / (1 - dim * FP32_UNIT_ROUNDOFF)
    bound = q.double().norm(dim=1) * (exact.max_residual + gamma * exact.max_norm)
    margin = 2 * bound * (1 + 1e-6) + 1e-12  # slack for the float64 arithmetic of the bound itself
    width = min(n_rows, k + _EXTRA_CANDIDATES)
    while True:
        values, rows = _top_k_fp32(q, embeddings, width, chunk_rows, device)
        values = values.double()
        threshold = values[:, k - 1] - margin
        if width == n_rows or bool((values[:, -1] < threshold).all()):
            break
        width = min(n_rows, 4 * width)
    qi, pos = (values >= threshold[:, None]).nonzero(as_tuple=True)
    return qi.cpu(), rows[qi, pos].cpu()


def _exact_top_k(q: torch.Tensor, rows32: Embeddings, qi: torch.Tensor, row: torch.Tensor, k: int) -> torch.Tensor:
    """Top k per query among candidate (query, row) pairs by q . e32 in float64, equal scores in row order.

    q (N, D) float32 CPU; rows32 (M, D) float32; qi, row (P,) CPU with at least k pairs per query.
    Returns (N, k) row indices.
    """
    unique, inverse = torch.unique(row, return_inverse=True)  # each row read once, in file order
    vectors = gather_rows(rows32, unique).double()
    q64 = q.double()
    scores = torch.empty(len(qi), dtype=torch.float64)
    for s in range(0, len(qi), 65536):  # in blocks to bound the temporary
        scores[s: s + 65536] = (vectors[inverse[s: s + 65536]] * q64[qi[s: s + 65536]]).sum(dim=1)
    qi_np, row_np = qi.numpy(), row.numpy()
    if int(np.bincount(qi_np, minlength=q.shape[0]).min()) < k:  # the k best candidates always pass
        raise RuntimeError("internal error: fewer candidates than k in exact retrieval")
    order = np.lexsort((row_np, -scores.numpy(), qi_np))  # by query, then score descending, then row
    first = np.searchsorted(qi_np[order], np.arange(q.shape[0]))
    return torch.from_numpy(row_np[order][first[:, None] + np.arange(k)])
