"""From query scores to class scores and labels on the open-vocabulary benchmarks, with background (pure functions).

A class is queried by one or more names (the peers' lists: "person", "person in shirt", ...); its score
is the maximum of its names' scores. A benchmark's background class is scored in one of three ways:
    synonyms     the background is queried by a list of names (sky, wall, tree, ...) like any class;
    threshold    the background is not queried: a pixel is background when no class scores above the
                 threshold (a constant background score; a class scoring exactly the threshold
                 ties with it, and the argmax takes the first: the background in all three benchmarks);
    probability  the peers' rule: the background is queried by its names as with synonyms, the scores of
                 all names go through softmax(logit_scale * scores), a class takes the max of its names'
                 probabilities, and a pixel whose best class probability is below `prob_thd` is
                 background (optionally after dropping classes of small predicted area, `area_thd`).

Labels are computed as the peers compute them: every query's scores are resized to the label's size
first, then a class takes the max of its names, then the argmax (`ovss_labels`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

BACKGROUND_MODES = ("none", "threshold", "synonyms", "probability")


@dataclass(frozen=True)
class ProbabilityBackground:
    """The peers' background rule: softmax(logit_scale * scores) over all names, background below prob_thd.

    area_thd: before the argmax, a non-background class predicted on at most this fraction of the
    image's non-background predicted pixels has its scores zeroed; None: no area rule.
    """

    logit_scale: float
    prob_thd: float
    area_thd: Optional[float] = None

    def __post_init__(self) -> None:
        if not self.logit_scale > 0:
            raise ValueError(f"logit_scale must be > 0, got {self.logit_scale}")
        if not 0.0 <= self.prob_thd <= 1.0:
            raise ValueError(f"prob_thd must be in [0, 1] (a probability), got {self.prob_thd}")
        if self.area_thd is not None and not 0.0 <= self.area_thd <= 1.0:
            raise ValueError(f"area_thd must be in [0, 1] (a fraction of pixels), got {self.area_thd}")


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


def drop_small_classes(scores: torch.Tensor, background_index: int, area_thd: float) -> torch.Tensor:
    """scores (B, C, H, W) -> the same with every non-background class whose argmax area is not above
    `area_thd` of the image's non-background argmax pixels zeroed (per image; the background is kept).

    Areas are pixel counts compared in float32, as the peers compare them.
    """
    batch, n_classes = scores.shape[:2]
    predicted = scores.argmax(dim=1).flatten(1)  # (B, H*W)
    areas = torch.zeros((batch, n_classes), dtype=torch.float32, device=scores.device)
    areas.scatter_add_(1, predicted, torch.ones_like(predicted, dtype=torch.float32))
    areas[:, background_index] = 0
    keep = areas > area_thd * areas.sum(dim=1, keepdim=True)
    keep[:, background_index] = True
    return scores * keep[:, :, None, None].to(scores.dtype)


def probability_class_scores(query_scores: torch.Tensor, members: Sequence[Sequence[int]], background_index: int,
                             rule: ProbabilityBackground) -> torch.Tensor:
    """query_scores (B, Q, H, W) -> class scores (B, C, H, W) whose argmax is the peers' label.

    softmax(logit_scale * scores) over all Q names, the max per class, the area rule (if any); then
    where no class reaches `prob_thd` the background's score is raised to `prob_thd`, above every other
    class there. A pixel whose best probability equals `prob_thd` keeps its class (the peers test `<`).
    """
    if not 0 <= background_index < len(members):
        raise ValueError(f"background index {background_index} outside 0..{len(members) - 1}")
    probabilities = torch.softmax(rule.logit_scale * query_scores.float(), dim=1)
    scores = class_scores(probabilities, members)
    if rule.area_thd is not None:
        scores = drop_small_classes(scores, background_index, rule.area_thd)
    below = scores.amax(dim=1) < rule.prob_thd  # (B, H, W)
    background = scores[:, background_index].masked_fill(below, rule.prob_thd)
    return torch.cat([scores[:, :background_index], background[:, None], scores[:, background_index + 1:]], dim=1)


def benchmark_queries(
    class_queries: Sequence[Sequence[str]],
    background_index: Optional[int],
    mode: str,
    synonyms: Optional[Sequence[str]] = None,
) -> list[Sequence[str]]:
    """The query names of each class under a background mode; the background gets [] with 'threshold'.

    `synonyms` replace the background's names of the class list in 'synonyms' and 'probability' modes.
    """
    if mode not in BACKGROUND_MODES:
        raise ValueError(f"background mode must be one of {BACKGROUND_MODES}, got {mode!r}")
    if (background_index is None) != (mode == "none"):
        raise ValueError("a benchmark with a background class needs background mode 'threshold' or 'synonyms' "
                         f"(or 'probability'), one without needs 'none' (got {mode!r})")
    queries = [list(q) for q in class_queries]
    if mode == "threshold":
        queries[background_index] = []
    elif mode in ("synonyms", "probability") and synonyms is not None:
        queries[background_index] = list(synonyms)
    return queries


def ovss_class_scores(
    query_scores: torch.Tensor,
    class_members: Sequence[Sequence[int]],
    background_index: Optional[int] = None,
    threshold: Optional[float] = None,
    probability: Optional[ProbabilityBackground] = None,
) -> torch.Tensor:
    """Class scores (B, C, H, W) of a benchmark at the query scores' resolution.

    `threshold` given: the background (no members) is added; `probability` given: the peers' rule.
    """
    if threshold is not None and probability is not None:
        raise ValueError("give a threshold or a probability rule for the background, not both")
    if probability is not None:
        if background_index is None:
            raise ValueError("the probability background rule needs the background class's index")
        return probability_class_scores(query_scores, class_members, background_index, probability)
    if threshold is None:
        return class_scores(query_scores, class_members)
    if background_index is None or class_members[background_index]:
        raise ValueError("threshold background needs the background class's index and no query names for it")
    others = [m for i, m in enumerate(class_members) if i != background_index]
    return with_threshold_background(class_scores(query_scores, others), threshold, background_index)


def resize_scores(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, N, h, w) -> (B, N, H, W) float32, bilinear, align_corners False (the peers' final resize)."""
    return F.interpolate(scores.float(), size=tuple(size), mode="bilinear", align_corners=False)


def upsampled_argmax(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) class scores or probabilities -> (B, H, W) int64 argmax of their bilinear resize."""
    return resize_scores(scores, size).argmax(dim=1)


def ovss_labels(
    query_scores: torch.Tensor,
    class_members: Sequence[Sequence[int]],
    size: tuple[int, int],
    background_index: Optional[int] = None,
    threshold: Optional[float] = None,
    probability: Optional[ProbabilityBackground] = None,
) -> torch.Tensor:
    """query_scores (B, Q, h, w) at inference resolution -> labels (B, H, W) int64 at the label's size.

    The peers' order: every query's scores are resized to `size` first, then a class takes the max of
    its names (and the background rule), then the argmax. Resizing the max instead is never below the
    max of the resized names, so a class with several names would gain pixels between the samples.
    """
    scores = ovss_class_scores(resize_scores(query_scores, size), class_members, background_index, threshold,
                               probability)
    return scores.argmax(dim=1)
