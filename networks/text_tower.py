"""CLIP text towers run only as far as the longest prompt of the batch.

In a text tower with a causal attention mask that pools at the end-of-text token (OpenAI's and
open_clip's CLIPs), position i attends to positions <= i only, so the pooled output of a prompt depends
on nothing after its end-of-text token. Running the tower on the first L positions (L: the last
end-of-text position of the batch, plus one), with the position embedding and the mask cut to L, gives
the same embeddings as the full context for a fraction of the work (a prompt of ReCo's templates uses
about 13 of 77 positions). Towers that see the whole context (SigLIP's bidirectional tower, which pools
the last position; custom towers; the demo's colour models) keep the model's own `encode_text`.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch
from open_clip.model import CLIP, CustomTextCLIP
from open_clip.transformer import TextTransformer, text_global_pool
from torch import nn

# Pool types whose pooled position is a token of the prompt itself (the end-of-text token).
_END_OF_TEXT_POOLS = ("argmax", "eos")


class _CausalTextTower(NamedTuple):
    """The parts of a causal, end-of-text-pooled text tower that encode_text uses."""

    token_embedding: nn.Embedding
    positional_embedding: torch.Tensor  # (context_length, width)
    transformer: nn.Module
    attn_mask: torch.Tensor  # (context_length, context_length) additive causal mask
    ln_final: nn.Module
    text_projection: Optional[Union[nn.Linear, torch.Tensor]]
    pool_type: str
    eos_id: Optional[int]


def encode_text_truncated(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """model.encode_text(tokens), running a causal end-of-text-pooled tower on the used positions only.

    tokens (B, context_length) token ids -> (B, D) unnormalised text embeddings, equal to the model's own
    `encode_text` up to float rounding. Towers it does not recognise are run as they are.
    """
    tower = causal_text_tower(model)
    if tower is None or tokens.ndim != 2 or tokens.shape[1] != tower.positional_embedding.shape[0]:
        return model.encode_text(tokens)
    length = used_length(tokens, tower.pool_type, tower.eos_id)
    tokens = tokens[:, :length]
    cast_dtype = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(tokens).to(cast_dtype)  # (B, L, width)
    x = x + tower.positional_embedding[:length].to(cast_dtype)
    x = tower.transformer(x, attn_mask=tower.attn_mask[:length, :length])
    x = tower.ln_final(x)
    x = text_global_pool(x, tokens, tower.pool_type, eos_token_id=tower.eos_id)  # (B, width)
    if tower.text_projection is None:
        return x
    if isinstance(tower.text_projection, nn.Linear):
        return tower.text_projection(x)
    return x @ tower.text_projection


def used_length(tokens: torch.Tensor, pool_type: str, eos_id: Optional[int]) -> int:
    """One more than the last pooled (end-of-text) position over the batch: tokens (B, T) -> L <= T."""
    if pool_type == "argmax":  # OpenAI's end-of-text token has the highest id; argmax takes its first position
        positions = tokens.argmax(dim=-1)
    else:  # "eos": the first eos_id (position 0 when a prompt has none, as open_clip pools it)
        positions = (tokens == eos_id).int().argmax(dim=-1)
    return int(positions.max()) + 1


def causal_text_tower(model: nn.Module) -> Optional[_CausalTextTower]:
    """The text tower of an open_clip CLIP (or a CustomTextCLIP with open_clip's TextTransformer) when it
    is causal and pools at the end-of-text token; None for any other model."""
    if isinstance(model, CLIP):
        tower = _CausalTextTower(model.token_embedding, model.positional_embedding, model.transformer,
                                 model.attn_mask, model.ln_final, model.text_projection, model.text_pool_type,
                                 getattr(model, "text_eos_id", None))
    elif isinstance(model, CustomTextCLIP) and isinstance(model.text, TextTransformer):
        text = model.text
        if text.cls_emb is not None or text.use_pad_mask or text.output_tokens:
            return None
        tower = _CausalTextTower(text.token_embedding, text.positional_embedding, text.transformer,
                                 text.attn_mask, text.ln_final, text.text_projection, text.pool_type,
                                 getattr(text, "eos_id", None))
    else:
        return None
    if tower.pool_type not in _END_OF_TEXT_POOLS or (tower.pool_type == "eos" and tower.eos_id is None):
        return None
    if not isinstance(tower.attn_mask, torch.Tensor) or not _is_causal(tower.attn_mask):
        return None
    return tower


def _is_causal(mask: torch.Tensor) -> bool:
    """mask (T, T) is the additive causal mask: 0 on and below the diagonal, -inf above."""
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        return False
    above = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)
    return bool(torch.all(mask[above] == float("-inf"))) and bool(torch.all(mask[~above] == 0))
