"""networks/deeplab.py: DeepLabv3+ of SPEC 12.1, key-for-key with the original's state_dict."""
from __future__ import annotations

import io
import json

import pytest
import torch
import torch.nn as nn
import torchvision

from networks.deeplab import build_segmentor, deeplabv3plus, segmentor_names


@pytest.fixture(scope="module")
def meta_models() -> dict[int, nn.Module]:
    # On the meta device nothing is allocated or initialised: shapes and dtypes only, in milliseconds.
    with torch.device("meta"):
        return {c: deeplabv3plus("resnet101", c) for c in (27, 19)}


@pytest.mark.parametrize("n_classes", [27, 19])
def test_state_dict_matches_original_key_for_key(meta_models, fixtures_dir, n_classes):
    expected = json.loads((fixtures_dir / f"deeplabv3plus_resnet101_state_dict_keys_c{n_classes}.json").read_text())
    model = meta_models[n_classes]
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    want = [(e["key"], e["shape"], e["dtype"]) for e in expected["entries"]]
    assert len(got) == expected["n_keys"] == 678
    for g, w in zip(got, want):
        assert g == w
    assert sum(p.numel() for p in model.parameters()) == expected["n_params"]


def test_build_segmentor_name_gives_the_same_layout(meta_models):
    with torch.device("meta"):
        model = build_segmentor("deeplabv3plus_resnet101", 27, None)
    assert list(model.state_dict()) == list(meta_models[27].state_dict())


def test_saved_state_dict_loads_strictly():
    """A state_dict saved by one model (as the authors' .pt files) loads with strict=True into a fresh one."""
    torch.manual_seed(0)
    source = deeplabv3plus("resnet101", 19)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    del source
    buffer.seek(0)
    state = torch.load(buffer, map_location="cpu", weights_only=True)
    with torch.device("meta"):
        target = deeplabv3plus("resnet101", 19)
    target.load_state_dict(state, strict=True, assign=True)
    key = "classifier.classifier.3.weight"
    assert torch.equal(target.state_dict()[key], state[key])
    with pytest.raises(RuntimeError):  # another class count must not load silently
        with torch.device("meta"):
            deeplabv3plus("resnet101", 27).load_state_dict(state, strict=True, assign=True)


def test_resnet101_geometry_output_stride_8(meta_models):
    model = meta_models[27]
    x = torch.empty(2, 3, 320, 320, device="meta")
    features = model.backbone(x)
    assert tuple(features["low_level"].shape) == (2, 256, 80, 80)
    assert tuple(features["out"].shape) == (2, 2048, 40, 40)
    assert tuple(model(x).shape) == (2, 27, 320, 320)
    layer3, layer4 = model.backbone.layer3, model.backbone.layer4
    assert layer3[0].conv2.stride == (1, 1) and layer3[0].conv2.dilation == (1, 1)
    assert all(block.conv2.dilation == (2, 2) for block in list(layer3)[1:])
    assert layer4[0].conv2.dilation == (2, 2) and all(b.conv2.dilation == (4, 4) for b in list(layer4)[1:])
    assert not hasattr(model.backbone, "fc") and not hasattr(model.backbone, "avgpool")


def test_head_structure_bn_momentum_and_separable_convs(meta_models):
    model = meta_models[27]
    backbone_bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    head_bns = [m for m in model.classifier.modules() if isinstance(m, nn.BatchNorm2d)]
    assert backbone_bns and all(m.momentum == 0.01 for m in backbone_bns)
    assert head_bns and all(m.momentum == 0.1 for m in head_bns)
    head = model.classifier
    for i, rate in zip((1, 2, 3), (12, 24, 36)):
        depthwise, pointwise = head.aspp.convs[i][0].body
        assert depthwise.groups == 2048 and depthwise.dilation == (rate, rate) and depthwise.padding == (rate, rate)
        assert pointwise.kernel_size == (1, 1) and depthwise.bias is None and pointwise.bias is None
    assert head.classifier[0].body[0].groups == 304
    assert head.classifier[3].bias is not None
    assert isinstance(head.aspp.project[3], nn.Dropout) and head.aspp.project[3].p == 0.1
    with torch.device("meta"):
        plain = deeplabv3plus("resnet101", 27, separable=False)
    assert "classifier.aspp.convs.1.0.weight" in plain.state_dict()


def test_mobilenet_and_tiny_run_and_keep_the_geometry():
    torch.manual_seed(0)
    for backbone, low, high in (("mobilenet", 24, 320), ("tiny", 16, 32)):
        model = deeplabv3plus(backbone, 5).eval()
        with torch.no_grad():
            x = torch.randn(1, 3, 32, 48)
            features = model.backbone(x)
            assert tuple(features["low_level"].shape) == (1, low, 8, 12)
            assert tuple(features["out"].shape) == (1, high, 4, 6)
            assert tuple(model(x).shape) == (1, 5, 32, 48)
    keys = list(deeplabv3plus("mobilenet", 5).state_dict())
    assert keys[0] == "backbone.low_level_features.0.0.weight"
    assert any(k.startswith("backbone.high_level_features.17.") for k in keys)


def test_backbone_weights_from_a_local_torchvision_checkpoint(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.mobilenet_v2(weights=None)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(reference.state_dict(), path)
    model = build_segmentor("deeplabv3plus_mobilenet", 19, str(path))
    got = model.state_dict()["backbone.high_level_features.4.conv.0.0.weight"]
    assert torch.equal(got, reference.state_dict()["features.4.conv.0.0.weight"])


def test_backbone_weight_errors_name_the_config_key(tmp_path):
    with pytest.raises(ValueError, match="weights.backbone.*not found"):
        build_segmentor("deeplabv3plus_resnet50", 27, str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="weights.backbone.*IMAGENET9K"):
        build_segmentor("deeplabv3plus_resnet50", 27, "IMAGENET9K")
    with pytest.raises(ValueError, match="weights.backbone.*could not download"):
        build_segmentor("deeplabv3plus_mobilenet", 27, "IMAGENET1K_V1")  # offline in tests
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="weights.backbone.*does not fit"):
        build_segmentor("deeplabv3plus_mobilenet", 27, str(wrong))
    with pytest.raises(ValueError, match="segmentor_name"):
        build_segmentor("deeplabv3plus_vgg", 27, None)
    assert "deeplabv3plus_tiny" in segmentor_names()
