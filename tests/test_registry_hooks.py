"""One construction hook per registry entry: a new CLIP or segmentor is one entry, and it is usable."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import networks
from networks.clip_registry import ClipSpec, register_clip, tiny_clip, unregister_clip
from networks.deeplab import SegmentorSpec, build_segmentor, register_segmentor, segmentor_names
from networks.deeplab import SEGMENTORS
from reco_api.config_checks import reco_config, reco_plus_config
from utils.config import ConfigError

TINY_TEXT = dict(context_length=77, vocab_size=49408, width=64, heads=1, layers=1)


@pytest.fixture
def new_clip():
    """A CLIP registered by one entry: a small ViT tower of width 64 and embedding 24 (not a shipped one)."""
    config = dict(embed_dim=24, vision_cfg=dict(image_size=16, layers=1, width=64, patch_size=8), text_cfg=TINY_TEXT)
    spec = register_clip(ClipSpec(name="test-new-clip", open_clip_name="test-new-clip", image_size=16, embed_dim=24,
                                  build=tiny_clip(config), test_only=True))
    yield spec
    unregister_clip(spec.name)


def test_a_clip_registered_by_one_entry_builds_embeds_and_passes_the_config_check(new_clip, tmp_path):
    torch.manual_seed(0)
    model, tokenizer = networks.build_clip("test-new-clip", "random")
    with torch.no_grad():
        text = model.encode_text(tokenizer(["a photo of a cat", "grass"]))
        image = model.encode_image(torch.randn(1, 3, 16, 16))
    assert tuple(text.shape) == (2, 24) and tuple(image.shape) == (1, 24)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)  # a state-dict file of the entry's architecture loads into its build
    reloaded, _ = networks.build_clip("test-new-clip", str(path))
    with torch.no_grad():
        torch.testing.assert_close(reloaded.encode_image(torch.ones(1, 3, 16, 16)),
                                   model.encode_image(torch.ones(1, 3, 16, 16)))
    assert reco_config({"dir_ckpt": "x", "clip_arch": "test-new-clip"}).clip_arch == "test-new-clip"
    with pytest.raises(ConfigError, match="dense_clip_arch: unknown value 'test-new-clip'"):
        reco_config({"dir_ckpt": "x", "dense_clip_arch": "test-new-clip"})  # not a ModifiedResNet entry


def test_a_clip_with_its_own_model_and_tokenizer_takes_only_random_weights(tmp_path):
    class Fixed(nn.Module):
        context_length = 1

        def __init__(self) -> None:
            super().__init__()
            self.visual = nn.Identity()
            self.visual.image_size = 8

    def build(spec, precision, device):
        model = Fixed()
        model.tokenizer = lambda texts: torch.tensor([[len(t)] for t in texts])
        return model

    register_clip(ClipSpec(name="test-fixed-clip", open_clip_name="test-fixed-clip", image_size=8, embed_dim=1,
                           build=build, test_only=True, fixed_weights=True))
    try:
        model, tokenizer = networks.build_clip("test-fixed-clip", "random")
        assert isinstance(model, Fixed) and tokenizer(["ab", "c"]).tolist() == [[2], [1]]
        (tmp_path / "w.pt").write_bytes(b"")
        with pytest.raises(ConfigError, match="takes no weights"):
            networks.build_clip("test-fixed-clip", str(tmp_path / "w.pt"))
    finally:
        unregister_clip("test-fixed-clip")


class OneConvSegmentor(nn.Module):
    """A 1x1 conv per class: the smallest model with the segmentor contract (B, 3, H, W) -> (B, C, H, W)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def test_a_segmentor_registered_by_one_entry_is_built_by_name_and_accepted_by_the_config():
    seen = []

    def build(num_classes, backbone_weights):
        seen.append(backbone_weights)
        return OneConvSegmentor(num_classes)

    register_segmentor(SegmentorSpec("test_one_conv", build))
    try:
        assert "test_one_conv" in segmentor_names()
        model = build_segmentor("test_one_conv", 5, "random")
        assert tuple(model(torch.zeros(2, 3, 8, 8)).shape) == (2, 5, 8, 8) and seen == ["random"]
        config = reco_plus_config({"dir_ckpt": "c", "dir_dataset": "d", "dataset_name": "cityscapes",
                                   "segmentor_name": "test_one_conv"})
        assert config.segmentor_name == "test_one_conv"
        with pytest.raises(ValueError, match="already registered"):
            register_segmentor(SegmentorSpec("test_one_conv", build))
    finally:
        SEGMENTORS.unregister("test_one_conv")
    with pytest.raises(ValueError, match="unknown segmentor_name 'test_one_conv'; known: deeplabv3plus_resnet101"):
        build_segmentor("test_one_conv", 5)


def test_shipped_segmentors_keep_their_names():
    assert segmentor_names() == ("deeplabv3plus_resnet101", "deeplabv3plus_resnet50", "deeplabv3plus_mobilenet",
                                 "deeplabv3plus_tiny")
