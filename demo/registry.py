"""The demo's colour-coded models as registry entries, so the pipeline builds them like any other model.

`colour_model_entries(vocabulary, colours)` registers, for the duration of a `with` block:
  demo-colour-clip     (clip_arch)        ColourCLIP + ColourTokenizer
  demo-colour-rn-clip  (dense_clip_arch)  the same CLIP, carrying ColourDenseCLIP as its dense form
  demo-colour-encoder  (encoder_arch)     ColourEncoder
Their builders close over the world's vocabulary and colours, which exist only once the demo has drawn
its world; so they are registered only while the demo runs (and the names do not show up in the
"unknown ...; known: ..." lists of ordinary runs).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from networks.clip_registry import ClipSpec, register_clip, unregister_clip
from networks.encoder_registry import EncoderSpec, register_encoder, unregister_encoder

from .colour_models import ColourCLIP, ColourDenseCLIP, ColourEncoder, ColourTokenizer

CLIP_ARCH = "demo-colour-clip"
DENSE_CLIP_ARCH = "demo-colour-rn-clip"
ENCODER_ARCH = "demo-colour-encoder"
CLIP_IMAGE_SIZE = 64
ENCODER_PATCH_SIZE = 8


def colour_model_specs(vocabulary: dict[str, int], colours: Sequence[tuple[int, int, int]]) -> tuple[ClipSpec, ClipSpec, EncoderSpec]:
    """The three registry entries of the colour-coded models of one world, each data plus one builder
    (the same `build` hook as every other entry; `fixed_weights`: the builder makes the finished model)."""
    width = len(colours) + 1  # one feature per colour + the constant slot

    def clip(spec: ClipSpec, precision: str, device: object) -> ColourCLIP:
        model = ColourCLIP(colours, image_size=CLIP_IMAGE_SIZE)
        model.tokenizer = ColourTokenizer(vocabulary, len(colours))  # networks.clip uses a model's own tokenizer
        if spec.dense:  # DenseCLIP(model) returns this module (networks.clip.DenseCLIP.__new__)
            model.dense_clip = ColourDenseCLIP(colours)
        return model

    def encoder(spec: EncoderSpec) -> ColourEncoder:
        return ColourEncoder(colours, patch_size=spec.patch_size)

    return (
        ClipSpec(name=CLIP_ARCH, open_clip_name=CLIP_ARCH, image_size=CLIP_IMAGE_SIZE, embed_dim=width,
                 build=clip, test_only=True, fixed_weights=True),
        ClipSpec(name=DENSE_CLIP_ARCH, open_clip_name=DENSE_CLIP_ARCH, image_size=CLIP_IMAGE_SIZE, embed_dim=width,
                 dense=True, build=clip, test_only=True, fixed_weights=True),
        EncoderSpec(name=ENCODER_ARCH, build=encoder, patch_size=ENCODER_PATCH_SIZE,
                    embed_dim=width, num_prefix_tokens=0, test_only=True, fixed_weights=True,
                    weights=f"'random' for the demo architecture '{ENCODER_ARCH}'"),
    )


@contextlib.contextmanager
def colour_model_entries(vocabulary: dict[str, int], colours: Sequence[tuple[int, int, int]]) -> Iterator[None]:
    """Within the block, the three colour-coded architectures are registered (removed again after it)."""
    clip, dense_clip, encoder = colour_model_specs(vocabulary, colours)
    register_clip(clip)
    register_clip(dense_clip)
    register_encoder(encoder)
    try:
        yield
    finally:
        unregister_clip(CLIP_ARCH)
        unregister_clip(DENSE_CLIP_ARCH)
        unregister_encoder(ENCODER_ARCH)
