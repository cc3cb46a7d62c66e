"""The CPU bf16 pre-filter of retrieval (reco.retrieval, method "bf16"): candidates with a rigorous bound.

A bf16 pass (3-4x the float32 GEMM rate on CPUs with native bf16 dot products) keeps every row whose
approximate score can still be in the top k, using a rigorous bound on the bf16 rounding error
(_Bf16Bound); those candidates (a few hundred per query) are re-scored in float32 (rescore_float32) or,
for an index with float32 originals, exactly (reco.retrieval).
"""
from __future__ import annotations

import warnings
from typing import Optional, Union

import numpy as np
import torch

Embeddings = Union[np.ndarray, torch.Tensor]

_BF16_UNIT_ROUNDOFF = 2.0 ** -8
FP32_UNIT_ROUNDOFF = 2.0 ** -24
_CONVERT_ROWS = 8192  # rows per float32 staging block of the bf16 conversion (24 MB at D = 768)


def rows_view(embeddings: Embeddings, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) as a tensor without copying (a view of the memmap for numpy input)."""
    if isinstance(embeddings, torch.Tensor):
        return embeddings[start:stop]
    with warnings.catch_warnings():  # read-only memmap: we never write through the view
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(embeddings[start:stop]))


class _Bf16Bound:
    """Rigorous bound on |exact - bf16| scores for the pre-filter.

    With q~ = bf16(q), e~ = bf16(e) (round to nearest), float32 accumulation over D terms and a bf16
    result s^ (any rounding to nearest or towards zero):
        |q.e - s^| <= E + u'|s^|,   E = ||q - q~|| R + (u + gamma_D (1 + u)) ||q~|| R,   u' = 2u / (1 - 2u)
    for every row with ||e|| <= R (u = 2^-8, gamma_D = D 2^-24 / (1 - D 2^-24)). If a is the k-th best
    s^, the k-th best exact score is >= f(a) - E with f(x) = x - u'|x|, and a row can only reach it if
    g(s^) + E >= f(a) - E with g(x) = x + u'|x| (f and g increasing): `threshold` inverts g.
    `extra` (N,) is added to E: the distance of the rows scored here from the rows that count (the
    float16 rounding of float32 originals, reco.retrieval.ExactRows).
    """

    def __init__(self, q: torch.Tensor, q_bf16: torch.Tensor, extra: Optional[torch.Tensor] = None) -> None:
        u = _BF16_UNIT_ROUNDOFF
        dim = q.shape[1]
        gamma = dim * FP32_UNIT_ROUNDOFF / (1 - dim * FP32_UNIT_ROUNDOFF)
        q64, qb64 = q.double(), q_bf16.double()
        # per query, times R: 5% slack for the float32 arithmetic of this bound itself
        self.per_norm = (1.05 * ((q64 - qb64).norm(dim=1) + (u + gamma * (1 + u)) * qb64.norm(dim=1))).float()
        self.rel = 2 * u / (1 - 2 * u)
        self.extra = torch.zeros_like(self.per_norm) if extra is None else extra.float()

    def threshold(self, a_k: torch.Tensor, max_norm: float) -> torch.Tensor:
        """(N,) lowest bf16 score that may still belong to the top k, given a_k (N,) and R."""
        e = self.per_norm * max_norm * (1 + 1e-4) + 1e-7 + self.extra  # 1e-4: float32 rounding of the norms in R
        y = a_k - self.rel * a_k.abs() - 2 * e
        return torch.where(y >= 0, y / (1 + self.rel), y / (1 - self.rel))


def bf16_candidates(q: torch.Tensor, embeddings: Embeddings, k: int, chunk_rows: int,
                    extra: Optional[torch.Tensor] = None,
                    warm_rows: int = 262144) -> tuple[torch.Tensor, torch.Tensor]:
    """(query, row) pairs that may belong to the exact top k of q (N, D) float32 over the rows: a bf16
    pass with a provable error margin (_Bf16Bound, widened by extra (N,)). At least k per query.

    The running k-th best bf16 score a_k only grows as chunks are read, so a row below the threshold
    at any time can be dropped for good. The scores of the first `warm_rows` rows are kept until a_k
    covers all of them, so that the threshold is high from the start.
    """
    n_rows, dim = embeddings.shape
    n_queries = q.shape[0]
    q_bf16 = q.bfloat16()
    bound = _Bf16Bound(q, q_bf16, extra)
    buffer16 = torch.empty(min(chunk_rows, n_rows), dim, dtype=torch.bfloat16)
    staging = torch.empty(min(_CONVERT_ROWS, n_rows), dim)  # float32, small enough to stay in cache
    top_v = torch.full((n_queries, k), -float("inf"))  # running bf16 top-k values (as float32), descending
    max_norm = 0.0
    candidates: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    warm: list[tuple[int, torch.Tensor]] = []
    for start in range(0, n_rows, chunk_rows):
        stop = min(start + chunk_rows, n_rows)
        rows16 = buffer16[: stop - start]
        max_norm = max(max_norm, _to_bf16(rows_view(embeddings, start, stop), rows16, staging))
        scores = q_bf16 @ rows16.T  # (N, chunk) bf16
        if start < warm_rows:  # warm-up: dense top k; candidates taken once a_k covers all warm-up rows
            v = scores.topk(min(k, stop - start), dim=1).values.float()
            top_v = torch.cat([top_v, v], dim=1).topk(k, dim=1).values
            warm.append((start, scores))
            if stop < min(warm_rows, n_rows):
                continue
            threshold = bound.threshold(top_v[:, k - 1], max_norm)
            candidates += [_above(w, threshold, offset) for offset, w in warm]
            warm.clear()
            continue
        qi, row, v = _above(scores, bound.threshold(top_v[:, k - 1], max_norm), start)
        candidates.append((qi, row, v))
        if len(v):  # every value that can enter the top k is above the threshold, hence a candidate
            top_v = _dense_top_k(qi, v, n_queries, k, top_v)[0]
    qi, row, v = (torch.cat(c) for c in zip(*candidates))
    keep = v >= bound.threshold(top_v[:, k - 1], max_norm)[qi]
    qi, row = qi[keep], row[keep]
    if int(torch.bincount(qi, minlength=n_queries).min()) < k:  # the k bf16-best always pass the threshold
        raise RuntimeError("internal error: fewer candidates than k in bf16 retrieval")
    return qi, row


def _to_bf16(rows: torch.Tensor, out: torch.Tensor, staging: torch.Tensor) -> float:
    """Copy rows (n, D) into out (n, D) bf16; returns the largest row norm (float32, an upper bound
    on the rows' norms up to float32 rounding). Goes through a float32 staging block that stays in
    cache: fp16 -> fp32 -> bf16 is faster than fp16 -> bf16 directly, and memory traffic stays low."""
    largest = 0.0
    for s in range(0, len(rows), len(staging)):
        block = staging[: min(len(staging), len(rows) - s)]
        block.copy_(rows[s: s + len(block)])
        largest = max(largest, float(torch.linalg.vector_norm(block, dim=1).max()))
        out[s: s + len(block)].copy_(block)
    return largest


def _above(scores: torch.Tensor, threshold: torch.Tensor, offset: int,
           block: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(query, row + offset, value) of the entries of scores (N, rows) bf16 that are >= threshold (N,).

    Positive bf16 numbers order like their bit patterns read as int16 (negative ones all below), so
    with positive thresholds the maxima of blocks of `block` consecutive rows are taken on the int16
    view (several times faster than bf16 reductions on CPU) and only blocks reaching the threshold
    are looked at entry by entry.
    """
    n_queries, n = scores.shape
    lowered = (threshold - threshold.abs() * 2.0 ** -7 - 1e-30).bfloat16()  # <= threshold: a superset
    full = n - n % block
    if not bool((lowered > 0).all()) or full == 0:
        qi, row = (scores.float() >= threshold[:, None]).nonzero(as_tuple=True)
        return qi, row + offset, scores[qi, row].float()
    bits = scores[:, :full].view(torch.int16).view(n_queries, full // block, block)
    qi, b = (bits.amax(dim=2) >= lowered.view(torch.int16)[:, None]).nonzero(as_tuple=True)
    values = scores[:, :full].view(n_queries, full // block, block)[qi, b].float()  # (flagged, block)
    f, j = (values >= threshold[qi, None]).nonzero(as_tuple=True)
    qi, row, v = qi[f], b[f] * block + j, values[f, j]
    if full < n:
        tq, tr = (scores[:, full:].float() >= threshold[:, None]).nonzero(as_tuple=True)
        qi, row = torch.cat([qi, tq]), torch.cat([row, tr + full])
        v = torch.cat([v, scores[tq, tr + full].float()])
    return qi, row + offset, v


def _dense_top_k(qi: torch.Tensor, v: torch.Tensor, n_queries: int, k: int,
                 top_v: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top k of scattered (query, value) pairs per query, optionally merged with a dense (N, k') top:
    (values (N, k), positions into the pairs (N, k), -1 for entries that came from top_v)."""
    counts = torch.bincount(qi, minlength=n_queries)
    order = torch.argsort(qi, stable=True)
    slot = torch.arange(len(qi)) - (torch.cumsum(counts, 0) - counts)[qi[order]]
    width = max(int(counts.max()) if len(qi) else 0, 1)
    dense = torch.full((n_queries, width), -float("inf"))
    where = torch.full((n_queries, width), -1, dtype=torch.long)
    dense[qi[order], slot] = v[order]
    where[qi[order], slot] = order
    if top_v is not None:
        dense = torch.cat([top_v, dense], dim=1)
        where = torch.cat([torch.full(top_v.shape, -1, dtype=torch.long), where], dim=1)
    values, pos = dense.topk(k, dim=1)
    return values, where.gather(1, pos)


def gather_rows(embeddings: Embeddings, rows: torch.Tensor) -> torch.Tensor:
    """embeddings[rows] as a float32 CPU tensor; rows (U,) sorted, so a memmap is read in file order."""
    if isinstance(embeddings, torch.Tensor):
        return embeddings[rows.to(embeddings.device)].float().cpu()
    return torch.from_numpy(np.asarray(embeddings[rows.numpy()], dtype=np.float32))


def rescore_float32(q: torch.Tensor, embeddings: Embeddings, qi: torch.Tensor, row: torch.Tensor,
                    k: int) -> torch.Tensor:
    """Float32 top k of each query among its candidate (query, row) pairs -> (N, k) row indices."""
    unique, inverse = torch.unique(row, return_inverse=True)  # each row read once, in file order
    vectors = gather_rows(embeddings, unique)
    exact = torch.empty(len(qi))
    for s in range(0, len(qi), 65536):  # q . e per pair, in blocks to bound the temporary
        exact[s: s + 65536] = torch.einsum("pd,pd->p", vectors[inverse[s: s + 65536]], q[qi[s: s + 65536]])
    _, pos = _dense_top_k(qi, exact, q.shape[0], k)
    return row[pos]
