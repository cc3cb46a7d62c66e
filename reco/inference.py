"""ReCo inference: dense similarity to the reference embeddings, times DenseCLIP text attention (SPEC 9.1)."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from reco.cosegmentation import text_attention


def score_maps(features: torch.Tensor, references: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
    """Sigmoid of the cosine between dense features and unit reference embeddings, upsampled.

    features (B, C, h, w); references (N, C) unit-norm -> (B, N, H, W) bilinear (align_corners=False).
    """
    if features.shape[1] != references.shape[1]:
        raise ValueError(
            f"reference embeddings have {references.shape[1]} channels but the encoder gives "
            f"{features.shape[1]}: they were computed with another encoder"
        )
    features = features.float()
    features = features / features.norm(dim=1, keepdim=True)
    scores = torch.sigmoid(torch.einsum("bchw,nc->bnhw", features, references.to(features)))
    return F.interpolate(scores, size=tuple(output_size), mode="bilinear", align_corners=False)


@torch.no_grad()
def predict(
    images: torch.Tensor,
    encoder: Callable[[torch.Tensor], torch.Tensor],
    references: torch.Tensor,
    dense_clip: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    text_embeddings: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """ReCo scores of every category at every pixel.

    images (B, 3, H, W) ImageNet-normalised; references (N, C); text_embeddings (N, D) of the DenseCLIP
    text tower, needed with `dense_clip` -> (B, N, H, W) in [0, 1]; argmax over N is the prediction.
    """
    size = tuple(images.shape[-2:])
    scores = score_maps(encoder(images), references, size)
    if dense_clip is not None:
        if text_embeddings is None:
            raise ValueError("DenseCLIP inference needs the categories' text embeddings")
        scores = scores * text_attention(dense_clip(images), text_embeddings, output_size=size)
    return scores
