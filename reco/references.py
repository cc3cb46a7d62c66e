"""Reference embeddings of a list of categories: contexts first, then categories (SPEC 7.1, 7.4).

Models and data come in as callables, so this module neither loads files nor builds networks:
`retrieve_images(name)` gives the k retrieved images of a category, `text_embedding(name)` its
DenseCLIP text embedding, and an optional cache stores one reference per (category, contexts used).
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable, Mapping, Optional, Protocol, Sequence

import torch
import torch.nn.functional as F

from reco.cosegmentation import cosegmentation_weights, reference_embedding, similarity_maps, text_attention
from utils.contexts import PAPER_REFERENCE_ALIASES

# The original hard-coded this alias (vegetation -> tree); the config's `reference_aliases` replaces it.
DEFAULT_ALIASES: Mapping[str, str] = PAPER_REFERENCE_ALIASES


class ReferenceCache(Protocol):
    """Stores a reference embedding per category and the tuple of context categories it eliminated."""

    def get(self, name: str, contexts: tuple[str, ...]) -> Optional[torch.Tensor]: ...

    def put(self, name: str, contexts: tuple[str, ...], reference: torch.Tensor) -> None: ...


@torch.no_grad()
def cosegment(
    images: torch.Tensor,
    encoder: Callable[[torch.Tensor], torch.Tensor],
    dense_clip: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    text_embedding: Optional[torch.Tensor] = None,
    context_references: Optional[torch.Tensor] = None,
    reproduce_slice_bug: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference embedding of one category from its retrieved images (SPEC 7.2-7.3).

    images (k, 3, H, W) ImageNet-normalised; text_embedding (D,) with `dense_clip` enables text
    attention; context_references (K, C) enable context elimination.
    Returns the reference (C,) and the cosine-similarity maps (k, h, w) of the images to it.
    """
    features = encoder(images).float()  # (k, C, h, w)
    attention = None
    if dense_clip is not None:
        if text_embedding is None:
            raise ValueError("text attention needs the category's text embedding")
        attention = text_attention(dense_clip(images), text_embedding, output_size=tuple(features.shape[-2:]))
    weights = cosegmentation_weights(features, attention, context_references)
    reference = reference_embedding(features, weights, reproduce_slice_bug=reproduce_slice_bug)
    return reference, similarity_maps(features, reference)


def compute_reference_embeddings(
    categories: Sequence[str],
    retrieve_images: Callable[[str], torch.Tensor],
    encoder: Callable[[torch.Tensor], torch.Tensor],
    dense_clip: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    text_embedding: Optional[Callable[[str], torch.Tensor]] = None,
    context_categories: Sequence[str] = (),
    aliases: Mapping[str, str] = DEFAULT_ALIASES,
    reproduce_slice_bug: bool = False,
    cache: Optional[ReferenceCache] = None,
    on_reference: Optional[Callable[[str, torch.Tensor, torch.Tensor], None]] = None,
    progress: Callable[[Iterable, str], Iterable] = lambda items, desc: items,
) -> dict[str, torch.Tensor]:
    """Reference embedding (C,) of every category, in category order.

    Context categories are co-segmented first, in order, each eliminating the contexts before it;
    every category then eliminates all contexts. A category that is a context, or whose alias is one,
    reuses the context's reference. `dense_clip` None disables text attention; an empty
    `context_categories` disables context elimination. `on_reference(name, images, similarity)` is
    called for every reference actually computed (for visualisation).
    """
    if len(set(categories)) != len(categories):
        duplicates = sorted(c for c, n in Counter(categories).items() if n > 1)
        raise ValueError(f"duplicate category names: {duplicates}")

    def compute(name: str, contexts: dict[str, torch.Tensor]) -> torch.Tensor:
        used = tuple(contexts)
        if cache is not None and (cached := cache.get(name, used)) is not None:
            return cached
        images = retrieve_images(name)
        reference, similarity = cosegment(
            images,
            encoder,
            dense_clip,
            text_embedding(name) if dense_clip is not None and text_embedding is not None else None,
            torch.stack(list(contexts.values())) if contexts else None,
            reproduce_slice_bug,
        )
        if cache is not None:
            cache.put(name, used, reference)
        if on_reference is not None:
            on_reference(name, images, similarity)
        return reference

    contexts: dict[str, torch.Tensor] = {}
    for name in progress(list(context_categories), "context categories"):
        contexts[name] = compute(name, dict(contexts))

    references: dict[str, torch.Tensor] = {}
    for name in progress(list(categories), "categories"):
        if name in contexts:
            references[name] = contexts[name]
        elif aliases.get(name) in contexts:
            references[name] = contexts[aliases[name]]
        else:
            references[name] = compute(name, contexts)
    return references


def reference_problem(reference: torch.Tensor, dim: Optional[int] = None) -> Optional[str]:
    """What is wrong with one reference embedding, None if nothing: it must be one vector (of `dim` values
    when given), finite, and not all zeros (a zero vector has no direction to compare with)."""
    if reference.dim() != 1 or (dim is not None and reference.numel() != dim):
        expected = f"({dim},)" if dim is not None else "one vector"
        return f"has shape {tuple(reference.shape)}, expected {expected}"
    if not bool(torch.isfinite(reference).all()):
        return f"holds {int((~torch.isfinite(reference)).sum())} NaN or infinite values"
    if not bool(reference.any()):
        return "is all zeros"
    return None


def stack_references(references: Mapping[str, torch.Tensor], categories: Sequence[str]) -> torch.Tensor:
    """(N, C) unit-norm matrix in `categories` order; a missing or bad (reference_problem) reference is a
    clear error."""
    missing = [c for c in categories if c not in references]
    if missing:
        raise ValueError(f"no reference embedding for categories {missing}")
    dim = references[categories[0]].numel() if categories else None
    for c in categories:
        problem = reference_problem(references[c], dim)
        if problem:
            raise ValueError(f"the reference embedding of '{c}' {problem}")
    return F.normalize(torch.stack([references[c].float() for c in categories]), dim=1)
