"""From query scores to class scores on the open-vocabulary benchmarks, with background (pure functions).

A class is queried by one or more names (the peers' lists: "person", "person in shirt", ...); its score
is the maximum of its names' scores. A benchmark's background class is scored in one of two ways:
    synonyms   the background is queried by a list of names (sky, wall, tree, ...) like any class;
    threshold  the background is not queried: a pixel is background when no class scores above the
               threshold (a constant background score; a class scoring exactly the threshold
               ties with it, and the argmax takes the first: the background in all three benchmarks).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

BACKGROUND_MODES = ("none", "threshold", "synonyms")


def query_list(class_queries: Sequence[Sequence[str]]) -> tuple[list[str], list[list[int]]]:
    """Every query name once (in class order) and, per class, the indices of its names in that list.

    A name shared by two classes is queried once and scores both (they tie; argmax takes the first).
    A class without names (the background in 'threshold' mode) gets no indices.
    """
    names: dict[str, int] = {}
    members = []
    for queries in class_queries:
        members.append([names.setdefault(q, len(names)) for q in queries])
    return list(names), members


def class_scores(query_scores: torch.Tensor, members: Sequence[Sequence[int]]) -> torch.Tensor:
    """query_scores (B, Q, H, W); members[c] = query indices of class c -> (B, C, H, W), max per class."""
    if any(len(m) == 0 for m in members):
        raise ValueError("every scored class needs at least one query name")
    if all(len(m) == 1 for m in members):
        return query_scores[:, [m[0] for m in members]]
    return torch.stack([query_scores[:, list(m)].amax(dim=1) for m in members], dim=1)


def with_threshold_background(scores: torch.Tensor, threshold: float, background_index: int) -> torch.Tensor:
    """Insert a constant background score: scores (B, C - 1, H, W) of the other classes -> (B, C, H, W).

    The argmax is then the background exactly where no class scores above `threshold`.
    """
    if not 0 <= background_index <= scores.shape[1]:
        raise ValueError(f"background index {background_index} outside 0..{scores.shape[1]}")
    background = torch.full_like(scores[:, :1], float(threshold))
    return torch.cat([scores[:, :background_index], background, scores[:, background_index:]], dim=1)


def benchmark_queries(
    class_queries: Sequence[Sequence[str]],
    background_index: Optional[int],
    mode: str,
    synonyms: Optional[Sequence[str]] = None,
) -> list[Sequence[str]]:
    """The query names of each class under a background mode; the background gets [] with 'threshold'.

    `synonyms` replace the background's names of the class list in 'synonyms' mode.
    """
    if mode not in BACKGROUND_MODES:
        raise ValueError(f"background mode must be one of {BACKGROUND_MODES}, got {mode!r}")
    if (background_index is None) != (mode == "none"):
        raise ValueError("a benchmark with a background class needs background mode 'threshold' or 'synonyms', "
                         f"one without needs 'none' (got {mode!r})")
    queries = [list(q) for q in class_queries]
    if mode == "threshold":
        queries[background_index] = []
    elif mode == "synonyms" and synonyms is not None:
        queries[background_index] = list(synonyms)
    return queries


def ovss_class_scores(
    query_scores: torch.Tensor,
    class_members: Sequence[Sequence[int]],
    background_index: Optional[int] = None,
    threshold: Optional[float] = None,
) -> torch.Tensor:
    """Class scores (B, C, H, W) of a benchmark; `threshold` given: the background (no members) is added."""
    if threshold is None:
        return class_scores(query_scores, class_members)
    if background_index is None or class_members[background_index]:
        raise ValueError("threshold background needs the background class's index and no query names for it")
    others = [m for i, m in enumerate(class_members) if i != background_index]
    return with_threshold_background(class_scores(query_scores, others), threshold, background_index)
