"""networks/: build_clip, DenseCLIP (SPEC 6), build_encoder (SPEC 5). Offline, CPU, random weights."""
from __future__ import annotations

import warnings

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import convert_weights_to_lp
from open_clip.transformer import QuickGELU
from torch import nn

import networks
from networks import DenseCLIP, build_clip, build_encoder, clip_image_size, interpolate_pos_embed
from utils.config import ConfigError


def _randomise_batchnorm(module: nn.Module, seed: int = 0) -> None:
    """open_clip zero-initialises the last BN of every bottleneck; make all BNs non-trivial."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean.data = torch.randn(n, generator=g) * 0.1
            m.running_var.data = torch.rand(n, generator=g) + 0.5


def _fp16_representable(model: nn.Module) -> nn.Module:
    """Reading an OpenAI archive goes through fp16 weights (open_clip); make that lossless."""
    convert_weights_to_lp(model, dtype=torch.float16)
    return model.float()


def _save_openai_archive(model: nn.Module, path) -> None:
    """A TorchScript archive whose state dict has the OpenAI layout (like RN50x16.pt, ViT-L-14-336px.pt)."""
    state = dict(model.state_dict())
    state.pop("attn_mask", None)  # non-persistent in open_clip; not a state-dict entry in OpenAI's model
    size = clip_image_size(model)
    state.update(input_resolution=torch.tensor(size), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    root = nn.Module()
    for name, value in state.items():
        *parents, leaf = name.split(".")
        module = root
        for parent in parents:
            if not hasattr(module, parent):
                module.add_module(parent, nn.Module())
            module = getattr(module, parent)
        module.register_buffer(leaf, value.detach().clone())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(root).save(str(path))


def _assert_same_clip(a: nn.Module, b: nn.Module, tokenizer) -> None:
    size = clip_image_size(a)
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    tokens = tokenizer(["a photo of a cat.", "sky"])
    with torch.no_grad():
        assert torch.allclose(a.encode_image(images), b.encode_image(images), atol=1e-6, rtol=0)
        assert torch.allclose(a.encode_text(tokens), b.encode_text(tokens), atol=1e-6, rtol=0)


def _assert_frozen(model: nn.Module) -> None:
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------------------- CLIP


@pytest.mark.parametrize("arch", ["tiny-vit-clip", "tiny-rn-clip"])
def test_tiny_clip_random(arch):
    torch.manual_seed(0)
    model, tokenizer = build_clip(arch, "random")
    _assert_frozen(model)
    assert any(isinstance(m, QuickGELU) for m in model.modules())
    size = clip_image_size(model)
    assert size == {"tiny-vit-clip": 32, "tiny-rn-clip": 64}[arch]
    tokens = tokenizer(["a photo of a parking lot.", "traffic light"])
    assert tokens.shape == (2, 77) and tokens[0, 0] == 49406 and 49407 in tokens[0]
    with torch.no_grad():
        image = model.encode_image(torch.randn(3, 3, size, size))
        text = model.encode_text(tokens)
    assert image.shape == (3, 32) and text.shape == (2, 32)
    assert torch.isfinite(image).all() and torch.isfinite(text).all()
    # seeded by torch's seed (see the test below)
    torch.manual_seed(0)
    again, _ = build_clip(arch, "random")
    assert all(torch.equal(x, y) for x, y in zip(model.state_dict().values(), again.state_dict().values()))


def test_real_rn50_random_and_dense():
    torch.manual_seed(0)
    model, _ = build_clip("RN50", "random")
    _assert_frozen(model)
    assert clip_image_size(model) == 224 and model.text_projection.shape == (512, 1024)
    dense = DenseCLIP(model)
    assert dense.embed_dim == 1024
    with torch.no_grad():
        assert dense(torch.randn(1, 3, 224, 224)).shape == (1, 1024, 7, 7)


def test_arch_names():
    assert networks.get_clip("ViT-L/14@336px").open_clip_name == "ViT-L-14-336"
    assert networks.get_clip("ViT-L-14-336") is networks.get_clip("ViT-L/14@336px")  # open_clip spelling too
    assert networks.openai_checkpoint_name("ViT-L/14@336px") == "ViT-L-14-336px.pt"
    assert networks.openai_checkpoint_name("RN50x16") == "RN50x16.pt"
    with pytest.raises(ValueError, match="unknown CLIP architecture"):
        build_clip("ViT-H/99", "random")


@pytest.mark.parametrize("arch", ["tiny-rn-clip", "tiny-vit-clip"])
def test_clip_from_openai_torchscript_archive(tmp_path, arch):
    torch.manual_seed(0)
    source, tokenizer = build_clip(arch, "random")
    _fp16_representable(source)
    if arch == "tiny-rn-clip":
        _randomise_batchnorm(source)
    path = tmp_path / "archive.pt"
    _save_openai_archive(source, path)
    assert networks.weights.is_torchscript_archive(path)
    loaded, _ = build_clip(arch, str(path))
    _assert_frozen(loaded)
    assert any(isinstance(m, QuickGELU) for m in loaded.modules())
    _assert_same_clip(source, loaded, tokenizer)
    # an archive of another architecture is refused
    other = "tiny-vit-clip" if arch == "tiny-rn-clip" else "tiny-rn-clip"
    with pytest.raises(ConfigError, match=r"weights\.dense_clip: .*archive\.pt holds a CLIP that is not"):
        build_clip(other, str(path), key="weights.dense_clip")


def test_clip_from_state_dict_file(tmp_path):
    torch.manual_seed(0)
    source, tokenizer = build_clip("tiny-rn-clip", "random")
    _randomise_batchnorm(source)
    bare, nested = tmp_path / "bare.pt", tmp_path / "nested.pt"
    torch.save(source.state_dict(), bare)
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, nested)
    assert not networks.weights.is_torchscript_archive(bare)
    for path in (bare, nested):
        loaded, _ = build_clip("tiny-rn-clip", path)
        _assert_frozen(loaded)
        _assert_same_clip(source, loaded, tokenizer)

    broken = dict(source.state_dict())
    del broken["visual.layer2.0.conv1.weight"]
    broken["visual.extra"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(ConfigError, match=r"weights\.clip: .*missing keys: visual\.layer2\.0\.conv1\.weight.*"
                                          r"unexpected keys: visual\.extra"):
        build_clip("tiny-rn-clip", tmp_path / "broken.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"weights\.clip: cannot read .*garbage\.pt"):
        build_clip("tiny-rn-clip", tmp_path / "garbage.pt")


def test_clip_weight_errors(tmp_path):
    missing = tmp_path / "ViT-L-14-336px.pt"
    with pytest.raises(ConfigError, match=r"weights\.clip: file not found: .*ViT-L-14-336px\.pt"):
        build_clip("ViT-L/14@336px", str(missing))
    with pytest.raises(ConfigError, match=r"weights\.dense_clip: not set.*RN50x16\.pt"):
        build_clip("RN50x16", None, key="weights.dense_clip")
    # tiny architectures: 'random' must be spelled out, and library tags are not theirs
    for weights in (None, "", "openai"):
        with pytest.raises(ConfigError, match=r"weights\.clip: .*'random'"):
            build_clip("tiny-vit-clip", weights)


def test_clip_tag_download_failure_is_one_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no route to host")
    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(ConfigError, match=r"weights\.clip: .*download failed.*ViT-L-14-336px\.pt"):
        build_clip("ViT-L/14@336px", "openai")


# --------------------------------------------------------------------------------------- DenseCLIP


@pytest.fixture(scope="module")
def tiny_rn():
    torch.manual_seed(0)
    model, _ = build_clip("tiny-rn-clip", "random")
    _randomise_batchnorm(model)
    return model


def test_denseclip_is_spec6_exactly(tiny_rn):
    dense = DenseCLIP(tiny_rn)
    _assert_frozen(dense)
    dense.train()
    assert not dense.training and not dense.visual.training
    v = tiny_rn.visual
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = dense(x)
        y = v.act1(v.bn1(v.conv1(x)))
        y = v.act2(v.bn2(v.conv2(y)))
        y = v.act3(v.bn3(v.conv3(y)))
        y = v.layer4(v.layer3(v.layer2(v.layer1(v.avgpool(y)))))
        y = F.conv2d(y, v.attnpool.v_proj.weight[:, :, None, None], v.attnpool.v_proj.bias)
        y = F.conv2d(y, v.attnpool.c_proj.weight[:, :, None, None], v.attnpool.c_proj.bias)
    assert out.shape == (2, 32, 3, 4) and out.dtype == torch.float32
    assert torch.equal(out, y)


def test_denseclip_sizes(tiny_rn):
    dense = DenseCLIP(tiny_rn)
    with torch.no_grad():
        for (h, w), expected in {(224, 224): (7, 7), (320, 320): (10, 10), (375, 1242): (11, 38)}.items():
            assert dense(torch.randn(1, 3, h, w)).shape == (1, 32, *expected)


def test_denseclip_matches_attention_free_attnpool(tiny_rn):
    """With q/k projections and positions zeroed, the attention pool averages its values uniformly, so
    open_clip's pooled embedding equals the spatial mean of the dense output (everything after layer4
    is affine)."""
    import copy

    model = copy.deepcopy(tiny_rn)
    pool = model.visual.attnpool
    for tensor in (pool.q_proj.weight, pool.q_proj.bias, pool.k_proj.weight, pool.k_proj.bias, pool.positional_embedding):
        tensor.data.zero_()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        pooled = model.visual(x)
        dense = DenseCLIP(model)(x)
    assert dense.shape == (3, 32, 2, 2)
    assert torch.allclose(dense.mean(dim=(2, 3)), pooled, atol=1e-5, rtol=1e-5)


def test_denseclip_fp32_copy_and_errors(tiny_rn):
    import copy

    half = copy.deepcopy(tiny_rn).half()
    dense = DenseCLIP(half)
    assert half.visual.conv1.weight.dtype == torch.float16  # the CLIP model is left as it was
    assert dense.visual.conv1.weight.dtype == torch.float32
    assert DenseCLIP(tiny_rn).visual is tiny_rn.visual  # fp32: shared, not copied
    with torch.no_grad():
        expected = DenseCLIP(tiny_rn)(torch.ones(1, 3, 64, 64))
        assert torch.allclose(dense(torch.ones(1, 3, 64, 64)), expected, atol=0.05, rtol=0.05)
    vit, _ = build_clip("tiny-vit-clip", "random")
    with pytest.raises(ValueError, match="ModifiedResNet"):
        DenseCLIP(vit)


# ---------------------------------------------------------------------------------------- encoders


@pytest.fixture(scope="module")
def deit():
    torch.manual_seed(0)
    return build_encoder("DeiT-S/16-SIN", "random")


def test_deit_architecture_and_spec5_shapes(deit):
    _assert_frozen(deit)
    assert deit.patch_size == 16 and deit.embed_dim == 384 and deit.num_prefix_tokens == 2
    assert sum(p.numel() for p in deit.vit.parameters()) == 22_436_432
    assert deit.vit.pos_embed.shape == (1, 198, 384)
    with torch.no_grad():
        for (h, w), expected in {(224, 224): (14, 14), (320, 320): (20, 20), (375, 1242): (23, 77)}.items():
            out = deit(torch.randn(1, 3, h, w))
            assert out.shape == (1, 384, *expected) and torch.isfinite(out).all()


def test_deit_forward_matches_timm_at_224_and_manual_elsewhere(deit):
    vit = deit.vit
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = vit.forward_features(x)[:, 2:]  # timm's own path, no resizing at 224
        assert torch.equal(deit(x), tokens.transpose(1, 2).reshape(2, 384, 14, 14))

        x = torch.randn(1, 3, 320, 336, generator=torch.Generator().manual_seed(1))
        patches = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
        grid = vit.pos_embed[:, 2:].reshape(1, 14, 14, 384).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(20, 21), mode="bicubic", align_corners=False)
        pos = torch.cat([vit.pos_embed[:, :2], grid.flatten(2).transpose(1, 2)], dim=1)
        seq = torch.cat([vit.cls_token, vit.dist_token, patches], dim=1) + pos
        manual = vit.norm(vit.blocks(seq))[:, 2:].transpose(1, 2).reshape(1, 384, 20, 21)
        assert torch.allclose(deit(x), manual, atol=1e-5, rtol=0)


def test_pos_embed_interpolation():
    pos = torch.randn(1, 2 + 196, 8)
    grid = pos[:, 2:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    out = interpolate_pos_embed(pos, 2, (23, 77))
    expected = F.interpolate(grid, size=(23, 77), mode="bicubic", align_corners=False)
    assert out.shape == (1, 2 + 23 * 77, 8)
    assert torch.equal(out[:, :2], pos[:, :2])
    assert torch.equal(out[:, 2:], expected.flatten(2).transpose(1, 2))
    assert interpolate_pos_embed(pos, 2, (14, 14)) is pos
    # the original keys the resize on the token count (SPEC 15.14): a 7x28 grid is not resized ...
    assert interpolate_pos_embed(pos, 2, (7, 28)) is pos
    # ... unless asked to compare the grid shape
    assert interpolate_pos_embed(pos, 2, (7, 28), by_token_count=False).shape == (1, 2 + 196, 8)
    assert not torch.equal(interpolate_pos_embed(pos, 2, (7, 28), by_token_count=False), pos)


def test_tiny_vit_shapes_and_cropping():
    torch.manual_seed(0)
    encoder = build_encoder("tiny-vit", "random")
    _assert_frozen(encoder)
    encoder.train()
    assert not encoder.training
    assert encoder.patch_size == 16 and encoder.embed_dim == 32
    x = torch.randn(2, 3, 230, 250)
    with torch.no_grad():
        out = encoder(x)
        assert out.shape == (2, 32, 14, 15)
        assert torch.equal(out, encoder(x[:, :, :224, :240]))  # trailing pixels are dropped
        assert encoder(torch.randn(1, 3, 375, 1242)).shape == (1, 32, 23, 77)
    with pytest.raises(ValueError, match="smaller than one"):
        encoder(torch.randn(1, 3, 8, 64))


def test_deit_checkpoint_strict_loading(tmp_path, deit):
    source = deit.vit
    _ = torch.manual_seed(5)
    for p in source.parameters():  # distinguish from a fresh random init
        p.data.add_(torch.randn_like(p) * 0.01)
    path = tmp_path / "deit_s_sin_dist.pth"
    torch.save({"model": source.state_dict()}, path)
    loaded = build_encoder("DeiT-S/16-SIN", str(path))
    _assert_frozen(loaded)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.vit.state_dict().values()))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(loaded(x), deit(x))

    # a bare state dict is accepted too (tiny arch to keep it quick)
    tiny = build_encoder("tiny-vit", "random")
    torch.save(tiny.vit.state_dict(), tmp_path / "tiny.pth")
    assert torch.equal(build_encoder("tiny-vit", tmp_path / "tiny.pth").vit.pos_embed, tiny.vit.pos_embed)

    broken = dict(source.state_dict())
    del broken["blocks.3.attn.qkv.weight"]
    broken["head_extra.weight"] = torch.zeros(1)
    broken["pos_embed"] = torch.zeros(1, 197, 384)
    torch.save({"model": broken}, tmp_path / "broken.pth")
    with pytest.raises(ConfigError) as info:
        build_encoder("DeiT-S/16-SIN", str(tmp_path / "broken.pth"))
    message = str(info.value)
    assert message.startswith("weights.encoder: ") and "broken.pth" in message
    assert "blocks.3.attn.qkv.weight" in message and "head_extra.weight" in message
    assert "pos_embed: file (1, 197, 384) vs model (1, 198, 384)" in message


def test_encoder_weight_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"weights\.encoder: file not found: .*deit_s_sin_dist\.pth"):
        build_encoder("DeiT-S/16-SIN", str(tmp_path / "deit_s_sin_dist.pth"))
    with pytest.raises(ConfigError, match=r"my\.key: not set"):
        build_encoder("DeiT-S/16-SIN", None, key="my.key")
    with pytest.raises(ConfigError, match=r"weights\.encoder: .*'random'"):
        build_encoder("tiny-vit", "imagenet")
    with pytest.raises(ValueError, match="unknown encoder architecture"):
        build_encoder("DINO-S/16", "random")


def test_random_weights_do_not_depend_on_the_rng_state_and_leave_it_alone():
    """Models are built lazily (DenseCLIP only when a reference is computed), so 'random' must mean one
    model per seed and architecture, whatever was drawn before: else a run that computes references and a
    run that reads them back would use two different random models."""
    def parameters(model):
        return torch.cat([p.detach().flatten().float() for p in model.parameters()])

    torch.manual_seed(0)
    clip_a, encoder_a = build_clip("tiny-rn-clip", "random")[0], build_encoder("tiny-vit", "random")
    state = torch.get_rng_state()
    torch.randn(1000)
    after = torch.get_rng_state()
    clip_b, encoder_b = build_clip("tiny-rn-clip", "random")[0], build_encoder("tiny-vit", "random")
    assert torch.equal(parameters(clip_a), parameters(clip_b))
    assert torch.equal(parameters(encoder_a), parameters(encoder_b))
    assert torch.equal(torch.get_rng_state(), after) and not torch.equal(state, after)
    torch.manual_seed(1)  # another seed: another model
    assert not torch.equal(parameters(build_encoder("tiny-vit", "random")), parameters(encoder_a))
