"""Co-segmentation of k retrieved images into one reference embedding (SPEC 7).

Pure tensor functions. Shapes: k retrieved images, C encoder channels, (h, w) encoder feature grid,
D CLIP embedding size, K context categories.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

# Rows of the (P, P) affinity matrix computed at once; bounds memory at ROW_CHUNK * P floats.
ROW_CHUNK = 2048


def text_attention(
    dense_features: torch.Tensor,
    text_embeddings: torch.Tensor,
    output_size: Optional[tuple[int, int]] = None,
    temperature: float = 10.0,
) -> torch.Tensor:
    """Sigmoid of the scaled cosine between DenseCLIP features and text embeddings.

    dense_features (B, D, h', w') raw DenseCLIP output; text_embeddings (D,) -> (B, h, w) or
    (K, D) -> (B, K, h, w). Text embeddings are used as given (already unit-norm, SPEC 3).
    The map is bilinearly resized (align_corners=False) to `output_size` when given.
    """
    if dense_features.ndim != 4:
        raise ValueError(f"dense_features must be (B, D, h, w), got {tuple(dense_features.shape)}")
    single = text_embeddings.ndim == 1
    text = text_embeddings[None] if single else text_embeddings
    if text.ndim != 2 or text.shape[1] != dense_features.shape[1]:
        raise ValueError(
            f"text embeddings {tuple(text_embeddings.shape)} do not match DenseCLIP features of "
            f"dimension {dense_features.shape[1]}"
        )
    features = dense_features.float()
    features = features / features.norm(dim=1, keepdim=True)
    similarity = torch.einsum("bdhw,kd->bkhw", features, text.to(features))
    attention = torch.sigmoid(temperature * similarity)
    if output_size is not None and tuple(attention.shape[-2:]) != tuple(output_size):
        attention = F.interpolate(attention, size=tuple(output_size), mode="bilinear", align_corners=False)
    return attention[:, 0] if single else attention


def context_weights(features: torch.Tensor, context_references: torch.Tensor) -> torch.Tensor:
    """Sigmoid of the cosine between every pixel feature and every context reference.

    features (k, C, h, w); context_references (K, C) -> (k, K, h, w), values in [0.269, 0.731].
    """
    features = features / features.norm(dim=1, keepdim=True)
    references = context_references / context_references.norm(dim=1, keepdim=True)
    return torch.sigmoid(torch.einsum("kchw,nc->knhw", features, references.to(features)))


def cosegmentation_weights(
    features: torch.Tensor,
    attention: Optional[torch.Tensor] = None,
    context_references: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Per-pixel weights of SPEC 7.2: text attention times (1 - context similarity) per context.

    features (k, C, h, w); attention (k, h, w) or None; context_references (K, C) or None -> (k, h, w).
    """
    k, _, h, w = features.shape
    weights = torch.ones(k, h, w, dtype=features.dtype, device=features.device)
    if attention is not None:
        weights = weights * attention
    if context_references is not None and len(context_references) > 0:
        similarity = context_weights(features, context_references)
        for j in range(similarity.shape[1]):  # sequential product, in context order, as the original
            weights = weights * (1 - similarity[:, j])
    return weights


def select_seeds(
    features: torch.Tensor,
    weights: Optional[torch.Tensor] = None,
    reproduce_slice_bug: bool = False,
) -> torch.Tensor:
    """Index of the seed pixel of every image (SPEC 7.3 steps 1-6).

    features (k, C, h, w); weights (k, h, w) or None -> (k,) flat index into each image's h*w grid.
    A pixel's score is the mean over images m of its best weighted cosine to a pixel of image m;
    each image's seed is its best-scoring pixel. `reproduce_slice_bug` takes image m's maximum over
    images m..2m instead, as the original code did.
    """
    k, c, h, w = features.shape
    hw = h * w
    flat = features.permute(0, 2, 3, 1).reshape(k * hw, c)
    flat = flat / flat.norm(dim=1, keepdim=True)
    column_weights = None if weights is None else weights.reshape(1, k * hw).to(flat)
    scores = torch.empty(k * hw, dtype=flat.dtype, device=flat.device)
    for start in range(0, k * hw, ROW_CHUNK):
        affinity = flat[start:start + ROW_CHUNK] @ flat.T  # (R, P): cosine to every candidate pixel
        if column_weights is not None:
            affinity = affinity * column_weights
        if reproduce_slice_bug:
            per_image = torch.stack(
                [affinity[:, m * hw:min((2 * m + 1) * hw, k * hw)].amax(dim=1) for m in range(k)], dim=1
            )
        else:
            per_image = affinity.view(-1, k, hw).amax(dim=2)  # (R, k)
        scores[start:start + ROW_CHUNK] = per_image.mean(dim=1)
    return scores.view(k, hw).argmax(dim=1)


def reference_embedding(
    features: torch.Tensor,
    weights: Optional[torch.Tensor] = None,
    reproduce_slice_bug: bool = False,
) -> torch.Tensor:
    """Unit-norm mean of the (un-normalised) seed features of the k images (SPEC 7.3).

    features (k, C, h, w) un-normalised; weights (k, h, w) in [0, 1] or None -> (C,) float32.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (k, C, h, w), got {tuple(features.shape)}")
    if weights is not None and tuple(weights.shape) != (features.shape[0], *features.shape[2:]):
        raise ValueError(f"weights {tuple(weights.shape)} do not match features {tuple(features.shape)}")
    seeds = seed_features(features, select_seeds(features, weights, reproduce_slice_bug))
    reference = seeds.mean(dim=0)
    return (reference / reference.norm()).float()


def seed_features(features: torch.Tensor, seed_index: torch.Tensor) -> torch.Tensor:
    """features (k, C, h, w), seed_index (k,) flat indices -> (k, C) features at the seeds."""
    k, c = features.shape[:2]
    flat = features.reshape(k, c, -1)
    return flat[torch.arange(k, device=features.device), :, seed_index]


def similarity_maps(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Cosine between every pixel feature and a reference: (k, C, h, w), (C,) -> (k, h, w)."""
    features = features / features.norm(dim=1, keepdim=True)
    return torch.einsum("kchw,c->khw", features, (reference / reference.norm()).to(features))
