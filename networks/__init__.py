"""Networks: CLIP and DenseCLIP (open_clip), dense ViT encoders (timm), DeepLabv3+ (networks.deeplab).

Every builder takes a `weights` value (local file, library tag where supported, or 'random') and the
config key it came from, and fails with one ConfigError naming both. Nothing downloads except an
explicit library tag (online use only).
"""
from .clip import CLIP_ARCHS, TINY_CLIP_CONFIGS, DenseCLIP, build_clip, clip_image_size, openai_checkpoint_name
from .encoder_registry import ENCODERS, EncoderSpec, encoder_names, get_encoder, register_encoder
from .encoders import DenseViT, build_encoder, interpolate_pos_embed

__all__ = [
    "CLIP_ARCHS",
    "TINY_CLIP_CONFIGS",
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
