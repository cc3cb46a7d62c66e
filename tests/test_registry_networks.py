"""Network registries: every entry builds (random init, or on the meta device when big) and gives
features of its declared shape at two input sizes; adding an encoder is one entry."""
from __future__ import annotations

import json

import pytest
import torch

import main_reco
import networks
from colour_models import ColourDenseCLIP, ColourCLIP, ColourTokenizer, ColourViT
from networks.encoder_registry import ENCODERS, EncoderSpec, get_encoder, register_encoder, unregister_encoder
from networks.encoders import DenseViT, build_encoder
from test_end_to_end import colour_world, reco_config, write_imagenet_of
from tests.synthetic import write_cityscapes

SMALL_WIDTH = 384  # entries up to this width are built for real at random init; wider ones on the meta device
SIZES = ((56, 84), (96, 64))  # (H, W) of the two test inputs; multiples of 14 and 16 are not needed


def _encoder(spec: EncoderSpec) -> DenseViT:
    if spec.embed_dim <= SMALL_WIDTH:
        return build_encoder(spec.name, "random")
    with torch.device("meta"):  # the real architecture and forward, without allocating or computing
        return DenseViT(spec.build(spec), spec)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_every_encoder_entry_gives_its_declared_shape_at_two_sizes(name):
    spec = get_encoder(name)
    encoder = _encoder(spec)
    assert (encoder.patch_size, encoder.embed_dim) == (spec.patch_size, spec.embed_dim)
    device = "meta" if spec.embed_dim > SMALL_WIDTH else "cpu"
    for h, w in SIZES:
        with torch.no_grad():
            out = encoder(torch.randn(2, 3, h, w, device=device))
        assert tuple(out.shape) == (2, spec.embed_dim, h // spec.patch_size, w // spec.patch_size), (name, h, w)
        if device == "cpu":
            assert torch.isfinite(out).all()


def test_spec_declarations_are_checked_against_the_built_model():
    spec = get_encoder("tiny-vit")
    wrong = EncoderSpec(name="tiny-wrong", build=spec.build, patch_size=16, embed_dim=32,
                        num_prefix_tokens=5, num_registers=4, weights="random", test_only=True)
    with pytest.raises(ValueError, match="registry entry declares"):
        DenseViT(wrong.build(wrong), wrong)
    with pytest.raises(ValueError, match="pos_embed must be one of"):
        EncoderSpec(name="x", timm_name="y", patch_size=1, embed_dim=1, num_prefix_tokens=1, weights="",
                    pos_embed="nearest")


def test_encoder_renormalises_to_its_own_statistics():
    """An encoder declared with other mean/std sees exactly the image re-normalised to those statistics."""
    base = get_encoder("tiny-vit")
    other = EncoderSpec(name="tiny-other-norm", build=base.build, patch_size=16, embed_dim=32,
                        num_prefix_tokens=2, pos_embed="bicubic_token_count", weights="random", test_only=True,
                        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    vit = base.build(base)
    plain, renormalising = DenseViT(vit, base), DenseViT(vit, other)
    mean = torch.tensor(base.mean).view(1, 3, 1, 1)
    std = torch.tensor(base.std).view(1, 3, 1, 1)
    x = torch.randn(1, 3, 32, 48)
    rgb = x * std + mean
    with torch.no_grad():
        torch.testing.assert_close(renormalising(x), plain((rgb - 0.5) / 0.25), atol=1e-5, rtol=1e-5)
    assert not plain.renormalise and renormalising.renormalise


def test_dinov2_release_layout_is_converted_on_load(tmp_path):
    """Meta's DINOv2 file layout (register_tokens, mask_token, class position inside pos_embed) loads into
    the registered timm architecture and gives the same features as the model it was made from."""
    torch.manual_seed(0)
    reference = build_encoder("DINOv2-S/14-reg", "random")
    timm_sd = reference.vit.state_dict()
    cls_position = torch.randn(1, 1, 384)
    meta_sd = {k: v for k, v in timm_sd.items() if k not in ("reg_token", "cls_token", "pos_embed")}
    meta_sd.update({"register_tokens": timm_sd["reg_token"], "mask_token": torch.zeros(1, 384),
                    "cls_token": timm_sd["cls_token"] - cls_position,
                    "pos_embed": torch.cat([cls_position, timm_sd["pos_embed"]], dim=1)})
    torch.save(meta_sd, tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    loaded = build_encoder("DINOv2-S/14-reg", str(tmp_path / "dinov2_vits14_reg4_pretrain.pth"))
    x = torch.randn(1, 3, 56, 70)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), reference(x))


def test_safetensors_weights_load(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    reference = build_encoder("tiny-vit", "random")
    save_file(reference.vit.state_dict(), str(tmp_path / "tiny.safetensors"))
    loaded = build_encoder("tiny-vit", str(tmp_path / "tiny.safetensors"))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), reference(x))


def test_a_new_encoder_is_one_registry_entry_and_segments_the_colour_world(tmp_path, monkeypatch):
    """Registered by one EncoderSpec (registers, its own normalisation, the library forward), a colour-coded
    ViT goes through the real build_encoder and DenseViT of main_reco.py and segments the scenes."""
    from datasets import metadata

    categories = metadata.categories("cityscapes")
    vocabulary, colours = colour_world(categories + ["tree", "person"])
    monkeypatch.setattr(networks, "build_clip", lambda arch, weights, device="cpu", precision="fp32", key="":
                        (ColourCLIP(colours).to(device), ColourTokenizer(vocabulary, len(colours))))
    import reco_api.models as common

    monkeypatch.setattr(common, "DenseCLIP", lambda clip_model: ColourDenseCLIP(colours))
    # Statistics far from ImageNet's, so that a missing re-normalisation would mistake the colours.
    mean, std = (0.2, 0.7, 0.4), (0.5, 0.1, 0.3)
    spec = EncoderSpec(
        name="colour-vit/8-reg2", patch_size=8, embed_dim=len(colours) + 1, num_prefix_tokens=3, num_registers=2,
        build=lambda spec: ColourViT(colours, mean=mean, std=std), mean=mean, std=std, pos_embed="library",
        weights="'random'", test_only=True,
    )
    register_encoder(spec)
    try:
        write_imagenet_of(tmp_path / "ImageNet2012", colours)
        write_cityscapes(tmp_path / "cityscapes", "val", n_images=2)
        config = reco_config(tmp_path, encoder_arch="colour-vit/8-reg2")
        assert main_reco.main(["--config", str(config)]) == 0
        from entry.run_dirs import run_dir_of
        from utils.config import load_reco_config

        out = run_dir_of(load_reco_config(config), "val")  # not the paper's setting: the name has a setting hash
    finally:
        unregister_encoder("colour-vit/8-reg2")
    assert out.parent.name.startswith("colour_vit_8_reg2_in_train_ce_ta_") and out.parent.name.endswith("_dc")
    results = json.loads((out / "results.json").read_text())
    assert results["Mean IoU"] >= 0.9, results


# ----------------------------------------------------------------------------------------------- CLIPs
from networks.clip import DenseCLIP, clip_image_size, clip_input_adapter  # noqa: E402
from networks.clip_registry import CLIPS, get_clip  # noqa: E402


@pytest.mark.parametrize("name", list(CLIPS))
def test_every_clip_entry_gives_its_declared_shapes(name):
    """Tiny entries at random init on the CPU; real ones on the meta device (the real architecture and
    forward without the cost): image and text embeddings of the declared width at the declared size,
    and for DenseCLIP entries dense maps at two input sizes."""
    spec = get_clip(name)
    real = spec.test_only
    device = "cpu" if real else "meta"
    with torch.device(device), torch.no_grad():
        model = spec.build(spec, "fp32", device)
        size = clip_image_size(model)
        assert size == spec.image_size
        assert tuple(model.encode_image(torch.randn(2, 3, size, size)).shape) == (2, spec.embed_dim)
        tokens = torch.zeros(2, model.context_length, dtype=torch.long)
        assert tuple(model.encode_text(tokens).shape) == (2, spec.embed_dim)
        if spec.dense:
            dense = DenseCLIP(model)
            for h, w in ((224, 320), (96, 64)):
                assert tuple(dense(torch.randn(1, 3, h, w)).shape) == (1, dense.embed_dim, h // 32, w // 32)


def test_siglip_index_input_is_renormalised_and_openai_input_untouched():
    from utils.normalisation import CLIP_MEAN, CLIP_STD

    x = torch.randn(1, 3, 4, 4)
    assert clip_input_adapter("ViT-L/14@336px")(x) is x
    rgb = x * torch.tensor(CLIP_STD).view(1, 3, 1, 1) + torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    torch.testing.assert_close(clip_input_adapter("ViT-B/16-SigLIP")(x), (rgb - 0.5) / 0.5)


def test_siglip_weights_must_be_a_file_folder_or_tag(tmp_path):
    from utils.config import ConfigError

    with pytest.raises(ConfigError, match=r"weights\.clip: file not found: .*open_clip_config\.json.*'webli'"):
        networks.build_clip("ViT-B/16-SigLIP", str(tmp_path / "siglip.bin"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no open_clip_config.json"):
        networks.build_clip("ViT-B/16-SigLIP", str(tmp_path / "empty"))


def test_index_preprocessing_follows_the_clip_spec(tmp_path):
    """OpenAI CLIPs: shorter side + centre crop (SPEC 2); SigLIP: the whole image squashed to the square."""
    import numpy as np
    import torchvision.transforms.functional as TF
    from PIL import Image
    from torchvision.transforms import InterpolationMode

    from datasets.imagenet import IndexBuildDataset

    assert get_clip("ViT-L/14@336px").index_resize == "crop" and get_clip("ViT-B/16-SigLIP").index_resize == "squash"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 60, 3), dtype=np.uint8))
    image.save(tmp_path / "wide.png")
    crop = IndexBuildDataset([tmp_path / "wide.png"], 16, normalise=False, resize="crop")[0][1]
    squash = IndexBuildDataset([tmp_path / "wide.png"], 16, normalise=False, resize="squash")[0][1]
    expected = TF.pil_to_tensor(TF.resize(image, [16, 16], interpolation=InterpolationMode.BICUBIC))
    assert torch.equal(squash, expected) and not torch.equal(crop, squash)
    with pytest.raises(ValueError, match="resize must be"):
        IndexBuildDataset([tmp_path / "wide.png"], 16, resize="pad")
