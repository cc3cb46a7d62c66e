"""Causal CLIP text towers run only as far as the longest prompt: the same embeddings as open_clip's own
encode_text for every registered CLIP; towers that are not causal and end-of-text pooled are untouched."""
from __future__ import annotations


import pytest
import torch
from open_clip.model import CLIP, CustomTextCLIP

from colour_models import ColourCLIP, ColourTokenizer
from networks import build_clip
from networks.clip_registry import CLIPS, ClipSpec, clip_config
from networks.text_tower import causal_text_tower, encode_text_truncated, used_length
from reco.prompt_templates import PROMPT_TEMPLATES
from reco.text import text_embeddings

TINY_VISION = dict(image_size=32, layers=1, width=64, patch_size=16)
VOCAB = 1000  # the registered vocabularies (up to 256,000 rows) are cut: the tokens below are synthetic


def _text_only_clip(spec: ClipSpec) -> torch.nn.Module:
    """The registered CLIP's text tower (width, heads, context, mask, pooling, projection as declared; two
    layers and a small vocabulary) with a tiny image tower, at random weights."""
    config = clip_config(spec)
    config.pop("quick_gelu", None)
    custom = config.pop("custom_text", False)
    config["vision_cfg"] = TINY_VISION
    text_cfg = dict(config["text_cfg"])
    text_cfg.update(layers=2, vocab_size=VOCAB)
    text_cfg.pop("hf_tokenizer_name", None)
    text_cfg.pop("tokenizer_kwargs", None)
    config["text_cfg"] = text_cfg
    torch.manual_seed(0)
    model = (CustomTextCLIP if custom else CLIP)(**config, quick_gelu=spec.quick_gelu)
    return model.eval()


def _prompt_tokens(context: int, lengths: list[int], end_of_text: int) -> torch.Tensor:
    """(B, context) synthetic token ids: random words, end-of-text (the highest id) at position length-1,
    zeros after it."""
    generator = torch.Generator().manual_seed(1)
    tokens = torch.zeros(len(lengths), context, dtype=torch.long)
    for row, length in enumerate(lengths):
        tokens[row, :length - 1] = torch.randint(1, end_of_text - 1, (length - 1,), generator=generator)
        tokens[row, length - 1] = end_of_text
    return tokens


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


OPEN_CLIP_SPECS = [name for name, spec in CLIPS.items() if clip_config(spec) is not None]


@pytest.mark.parametrize("name", OPEN_CLIP_SPECS)
def test_every_registered_clip_embeds_text_as_open_clip_does(name):
    spec = CLIPS[name]
    model = _text_only_clip(spec)
    context = model.context_length if isinstance(model, CLIP) else model.text.context_length
    tokens = _prompt_tokens(context, [5, 13, 9, 2], end_of_text=VOCAB - 1)
    with torch.no_grad():
        expected = model.encode_text(tokens)
        got = encode_text_truncated(model, tokens)
    causal = causal_text_tower(model) is not None
    # OpenAI-style CLIPs (and the tiny ones) are causal and end-of-text pooled; SigLIP's tower is not
    assert causal == (not spec.hf_tokenizer), name
    if causal:
        assert _relative_error(got, expected) < 1e-5, name
    else:
        assert torch.equal(got, expected), name


def test_only_the_used_positions_run():
    """The tower sees L = the last end-of-text position + 1 positions, never the full context."""
    model = _text_only_clip(CLIPS["tiny-vit-clip"])
    seen = []
    model.transformer.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    tokens = _prompt_tokens(77, [4, 11, 7], end_of_text=VOCAB - 1)
    with torch.no_grad():
        encode_text_truncated(model, tokens)
    assert seen == [11]
    assert used_length(tokens, "argmax", None) == 11
    assert used_length(tokens, "eos", VOCAB - 1) == 11


def test_a_prompt_filling_the_context_runs_the_full_context():
    model = _text_only_clip(CLIPS["tiny-rn-clip"])
    tokens = _prompt_tokens(77, [77, 3], end_of_text=VOCAB - 1)
    with torch.no_grad():
        assert _relative_error(encode_text_truncated(model, tokens), model.encode_text(tokens)) < 1e-5


def test_non_causal_and_unknown_towers_keep_their_own_encode_text():
    spec = CLIPS["ViT-B/16-SigLIP"]
    siglip = _text_only_clip(spec)
    assert causal_text_tower(siglip) is None  # bidirectional, pooled at the last position
    calls = []
    colour = ColourCLIP([(0, 0, 255), (128, 128, 128)])
    original = colour.encode_text
    colour.encode_text = lambda tokens: calls.append(tuple(tokens.shape)) or original(tokens)
    tokens = ColourTokenizer({"sky": 0, "road": 1}, 2)(["a photo of a sky.", "a photo of a road."])
    assert torch.equal(encode_text_truncated(colour, tokens), original(tokens))
    assert calls == [tuple(tokens.shape)]
    with torch.no_grad():
        siglip_tokens = _prompt_tokens(siglip.text.context_length, [3, 6], end_of_text=VOCAB - 1)
        assert torch.equal(encode_text_truncated(siglip, siglip_tokens), siglip.encode_text(siglip_tokens))


def test_a_non_causal_mask_is_not_truncated():
    """A CLIP whose mask is not the causal one (here: no mask at all) runs its full context."""
    model = _text_only_clip(CLIPS["tiny-vit-clip"])
    model.attn_mask = torch.zeros(77, 77)
    assert causal_text_tower(model) is None


def test_text_embeddings_with_the_truncated_tower_and_the_real_tokenizer():
    """ReCo's prompt ensemble of real prompts (OpenAI BPE) is unchanged by the truncation, and progress
    counts the prompts."""
    model, tokenizer = build_clip("tiny-rn-clip", "random")
    names = ["cat", "traffic light", "a very long class name with many words in it"]
    reported = []
    templates = PROMPT_TEMPLATES[:10]
    full = text_embeddings(model, tokenizer, names, templates, batch_size=12)
    cut = text_embeddings(model, tokenizer, names, templates, batch_size=12, encode=encode_text_truncated,
                          progress=lambda done, total: reported.append((done, total)))
    assert _relative_error(cut, full) < 1e-5
    assert reported == [(0, 30), (12, 30), (24, 30), (30, 30)]


def test_half_precision_tower_keeps_its_dtype():
    model, tokenizer = build_clip("tiny-vit-clip", "random", precision="bf16")
    tokens = tokenizer(["a photo of a cat."])
    with torch.no_grad():
        got, expected = encode_text_truncated(model, tokens), model.encode_text(tokens)
    assert got.dtype == expected.dtype
    assert _relative_error(got.float(), expected.float()) < 2e-2
