"""Category text embeddings by prompt ensembling (SPEC 3)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn

from reco.prompt_templates import PROMPT_TEMPLATES

# encode(clip_model, tokens (B, T)) -> (B, D) unnormalised prompt embeddings.
TextEncoder = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def _model_encode_text(clip_model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return clip_model.encode_text(tokens)


@torch.no_grad()
def text_embeddings(
    clip_model: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    categories: Sequence[str],
    templates: Sequence[str] = PROMPT_TEMPLATES,
    batch_size: int = 512,
    encode: TextEncoder = _model_encode_text,
    progress: Optional[Callable[[int, int], None]] = None,
) -> torch.Tensor:
    """Unit-norm mean of the unit-norm embeddings of every prompt of each category.

    categories: N names, used verbatim -> (N, D) float32 on the model's device. The text tower runs in
    the model's own dtype (fp16 on GPU mirrors the original); the result is cast to float32 last.
    encode: how a batch of tokens is embedded (default: the model's own `encode_text`; the callers pass
    one that runs a causal tower on the used positions only). progress(prompts done, prompts in all) is
    called before the first batch and after each one.
    """
    if len(categories) == 0:
        raise ValueError("no categories given")
    device = next(clip_model.parameters()).device
    prompts = [template.format(name) for name in categories for template in templates]
    encoded = []
    if progress is not None:
        progress(0, len(prompts))
    for start in range(0, len(prompts), batch_size):
        tokens = tokenizer(prompts[start:start + batch_size]).to(device)
        embedding = encode(clip_model, tokens)
        encoded.append(embedding / embedding.norm(dim=-1, keepdim=True))
        if progress is not None:
            progress(min(start + batch_size, len(prompts)), len(prompts))
    per_prompt = torch.cat(encoded).view(len(categories), len(templates), -1)
    mean = per_prompt.mean(dim=1)
    return (mean / mean.norm(dim=-1, keepdim=True)).float()
