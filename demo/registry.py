"""The demo's colour-coded models as registry entries, so the pipeline builds them like any other model.

`colour_model_entries(vocabulary, colours)` registers, for the duration of a `with` block:
  demo-colour-clip     (clip_arch)        ColourCLIP + ColourTokenizer
  demo-colour-rn-clip  (dense_clip_arch)  the same CLIP, carrying ColourDenseCLIP as its dense form
  demo-colour-encoder  (encoder_arch)     ColourEncoder
Their factories close over the world's vocabulary and colours, which exist only once the demo has drawn
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
    """The three registry entries of the colour-coded models of one world."""
    width = len(colours) + 1  # one feature per colour + the constant slot

    def clip(dense: bool):
        def build():
            model = ColourCLIP(colours, image_size=CLIP_IMAGE_SIZE)
            if dense:  # DenseCLIP(model) returns this module (networks.clip.DenseCLIP.__new__)
                model.dense_clip = ColourDenseCLIP(colours)
            return model, ColourTokenizer(vocabulary, len(colours))
        return build

    def encoder():
        return ColourEncoder(colours, patch_size=ENCODER_PATCH_SIZE)

    return (
        ClipSpec(name=CLIP_ARCH, open_clip_name=CLIP_ARCH, image_size=CLIP_IMAGE_SIZE, embed_dim=width,
                 factory=clip(dense=False)),
        ClipSpec(name=DENSE_CLIP_ARCH, open_clip_name=DENSE_CLIP_ARCH, image_size=CLIP_IMAGE_SIZE, embed_dim=width,
                 dense=True, factory=clip(dense=True)),
        EncoderSpec(name=ENCODER_ARCH, architecture=encoder, patch_size=ENCODER_PATCH_SIZE,
                    embed_dim=width, num_prefix_tokens=0, test_only=True,
                    weights=f"'random' for the demo architecture '{ENCODER_ARCH}'",
                    factory=encoder),
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
