"""Networks: CLIP and DenseCLIP (open_clip), dense ViT encoders (timm), DeepLabv3+ (networks.deeplab).

Every builder takes a `weights` value (local file, library tag where supported, or 'random') and the
config key it came from, and fails with one ConfigError naming both. Nothing downloads except an
explicit library tag (online use only).
"""
from .clip import (DenseCLIP, build_clip, clip_image_size, clip_input_adapter, clip_normalisation,
                   openai_checkpoint_name)
from .clip_registry import CLIPS, ClipSpec, clip_names, get_clip, register_clip
from .encoder_registry import ENCODERS, EncoderSpec, encoder_names, get_encoder, register_encoder
from .encoders import DenseViT, build_encoder, interpolate_pos_embed

__all__ = [
    "CLIPS",
    "ClipSpec",
    "clip_input_adapter",
    "clip_names",
    "clip_normalisation",
    "get_clip",
    "register_clip",
    "DenseCLIP",
    "build_clip",
    "clip_image_size",
    "openai_checkpoint_name",
    "ENCODERS",
    "EncoderSpec",
    "encoder_names",
    "get_encoder",
    "register_encoder",
    "DenseViT",
    "build_encoder",
    "interpolate_pos_embed",
]
