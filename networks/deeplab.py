"""DeepLabv3+ for ReCo+ (SPEC 12.1) on torchvision backbones, with our own head code.

The module layout reproduces the original's state_dict key-for-key (678 entries for ResNet-101), so the
authors' published `reco_plus_dlp_rn101_*.pt` files load with `strict=True`:

    backbone.{conv1,bn1,layer1..layer4}.*          torchvision ResNet names (avgpool/fc dropped)
    classifier.project.{0,1}                       1x1 conv 256->48 + BN on the low-level features
    classifier.aspp.convs.{0..4}, .aspp.project    ASPP (1x1, three atrous 3x3, image pooling) + 1x1 fuse
    classifier.classifier.{0,1,3}                  3x3 conv 304->256 + BN + ReLU + 1x1 conv -> classes

With `separable=True` every head conv with a kernel > 1 is a depthwise conv followed by a pointwise conv,
stored as `<name>.body.0` / `<name>.body.1`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from utils.io import describe_exception
from utils.registry import Registry

from .weights import refuse_torchscript_archive, weights_source

_TORCHVISION_ENUMS = {"resnet101": "ResNet101_Weights", "resnet50": "ResNet50_Weights",
                      "mobilenet": "MobileNet_V2_Weights"}
WEIGHTS_KEY = "weights.backbone"


class SeparableConv2d(nn.Module):
    """Depthwise (groups=in) conv with the given geometry followed by a pointwise 1x1 conv (no norm between)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 dilation: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, dilation=dilation,
                      groups=in_channels, bias=bias),
            nn.Conv2d(in_channels, out_channels, 1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _conv(in_channels: int, out_channels: int, kernel_size: int, padding: int, dilation: int,
          separable: bool) -> nn.Module:
    if separable and kernel_size > 1:
        return SeparableConv2d(in_channels, out_channels, kernel_size, padding, dilation)
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False)


class ASPPPooling(nn.Sequential):
    """Image-level branch: global average pool -> 1x1 conv + BN + ReLU -> upsample to the input size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return F.interpolate(super().forward(x), size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """(B, in, h, w) -> (B, out, h, w): five parallel branches, concatenated, fused by a 1x1 conv."""

    def __init__(self, in_channels: int, rates: Sequence[int], out_channels: int = 256,
                 separable: bool = True) -> None:
        super().__init__()
        branches: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                                   nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))]
        for rate in rates:
            branches.append(nn.Sequential(_conv(in_channels, out_channels, 3, rate, rate, separable),
                                          nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)))
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
                                     nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabHeadV3Plus(nn.Module):
    """Decoder: features {"low_level": (B, low, H/4, W/4), "out": (B, in, H/8, W/8)} -> (B, classes, H/4, W/4)."""

    def __init__(self, in_channels: int, low_level_channels: int, num_classes: int,
                 aspp_dilate: Sequence[int] = (12, 24, 36), separable: bool = True,
                 aspp_channels: int = 256, project_channels: int = 48) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(low_level_channels, project_channels, 1, bias=False),
                                     nn.BatchNorm2d(project_channels), nn.ReLU(inplace=True))
        self.aspp = ASPP(in_channels, aspp_dilate, aspp_channels, separable)
        self.classifier = nn.Sequential(
            _conv(project_channels + aspp_channels, aspp_channels, 3, 1, 1, separable),
            nn.BatchNorm2d(aspp_channels), nn.ReLU(inplace=True),
            nn.Conv2d(aspp_channels, num_classes, 1),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        low = self.project(features["low_level"])
        out = self.aspp(features["out"])
        out = F.interpolate(out, size=low.shape[2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low, out], dim=1))


class DeepLabV3Plus(nn.Module):
    """images (B, 3, H, W) ImageNet-normalised -> logits (B, num_classes, H, W)."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        logits = self.classifier(self.backbone(x))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class ResNetFeatures(nn.Module):
    """torchvision ResNet without avgpool/fc; returns layer1 (stride 4) and layer4 outputs."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            self.add_module(name, getattr(resnet, name))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low_level = self.layer1(x)
        out = self.layer4(self.layer3(self.layer2(low_level)))
        return {"low_level": low_level, "out": out}


class MobileNetFeatures(nn.Module):
    """torchvision MobileNetV2 features split as the original: [0:4] low level (24 ch), [4:-1] high (320 ch)."""

    def __init__(self, mobilenet: nn.Module, output_stride: int = 8) -> None:
        super().__init__()
        features = mobilenet.features
        _dilate_mobilenet(features, output_stride)
        # Slicing a Sequential keeps the original indices as keys (high_level_features.4, ...).
        self.low_level_features = features[0:4]
        self.high_level_features = features[4:-1]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low_level = self.low_level_features(x)
        return {"low_level": low_level, "out": self.high_level_features(low_level)}


def _dilate_mobilenet(features: nn.Sequential, output_stride: int) -> None:
    """Trade the strides after `output_stride` for dilation, as the original MobileNetV2 does.

    Stages (t, c, n, s) of MobileNetV2: the first block of a stage that would exceed the output stride
    gets stride 1 and the previous dilation; its other blocks get the accumulated dilation.
    """
    stages = [(1, 1), (2, 2), (3, 2), (4, 2), (3, 1), (3, 2), (1, 1)]  # (blocks, stride)
    current_stride, dilation, index = 2, 1, 1
    for n_blocks, stride in stages:
        previous = dilation
        if current_stride == output_stride:
            dilation *= stride
            stride_used = 1
        else:
            stride_used = stride
            current_stride *= stride
        for i in range(n_blocks):
            block = features[index]
            d = previous if i == 0 else dilation
            depthwise = [m for m in block.conv.modules() if isinstance(m, nn.Conv2d) and m.groups > 1][0]
            depthwise.stride = (stride_used, stride_used) if i == 0 else (1, 1)
            depthwise.dilation, depthwise.padding = (d, d), (d, d)
            index += 1


class TinyBackbone(nn.Module):
    """A few convs for tests: low level (16 ch, stride 4) and out (32 ch, stride 8)."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int, dilation: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.stem = nn.Sequential(block(3, 8, 2), block(8, 16, 2))
        self.layer = nn.Sequential(block(16, 32, 2), block(32, 32, 1, 2))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low_level = self.stem(x)
        return {"low_level": low_level, "out": self.layer(low_level)}


def _set_bn_momentum(module: nn.Module, momentum: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum


def _load_backbone_weights(model: nn.Module, backbone: str, weights: str) -> None:
    """Load ImageNet weights into a torchvision model from a local checkpoint or a torchvision tag."""
    source, path = weights_source(weights)  # the one 'file or tag' reading of a weights value
    if source in ("file", "folder", "missing_file"):
        if source != "file":
            raise ValueError(f"{WEIGHTS_KEY}: file not found: {path} (a torchvision {backbone} ImageNet "
                             "checkpoint, e.g. resnet101-63fe2227.pth)")
        refuse_torchscript_archive(path, WEIGHTS_KEY, f"a torchvision {backbone} ImageNet state-dict file")
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch.load raises many types on a file that is not a checkpoint
            raise ValueError(f"{WEIGHTS_KEY}: cannot read {path} as a PyTorch checkpoint "
                             f"({describe_exception(e)})") from None
        if isinstance(state_dict, dict) and "state_dict" in state_dict:
            state_dict = state_dict["state_dict"]
        source = str(path)
    else:
        enum_name = _TORCHVISION_ENUMS.get(backbone)
        if enum_name is None:
            raise ValueError(f"{WEIGHTS_KEY}: no torchvision weights for backbone {backbone!r}")
        try:
            tag = torchvision.models.get_weight(f"{enum_name}.{weights}")
        except (ValueError, KeyError, AttributeError):
            raise ValueError(f"{WEIGHTS_KEY}: {weights!r} is neither an existing file nor a torchvision "
                             f"{enum_name} tag (e.g. IMAGENET1K_V1)") from None
        try:
            state_dict = tag.get_state_dict(progress=True)
        except Exception as e:  # noqa: BLE001 - any download failure gets the same actionable message
            raise ValueError(f"{WEIGHTS_KEY}: could not download torchvision weights {enum_name}.{weights} "
                             f"({type(e).__name__}: {e}); offline, download {tag.url} and set "
                             f"{WEIGHTS_KEY} to the local file") from None
        source = f"{enum_name}.{weights}"
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{WEIGHTS_KEY}: {source} does not fit a torchvision {backbone}: {e}") from None


def deeplabv3plus(backbone: str = "resnet101", num_classes: int = 27, separable: bool = True,
                  pretrained_backbone: Optional[str] = None, output_stride: int = 8) -> DeepLabV3Plus:
    """DeepLabv3+ of SPEC 12.1. backbone: resnet101 | resnet50 | mobilenet | tiny.

    pretrained_backbone: a local torchvision checkpoint, a torchvision weights tag (online only, e.g.
    'IMAGENET1K_V1'), or None / 'random' for random initialisation.
    """
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    weights = None if pretrained_backbone in (None, "random") else pretrained_backbone
    rates = (12, 24, 36) if output_stride == 8 else (6, 12, 18)
    if backbone in ("resnet101", "resnet50"):
        dilation = [False, True, True] if output_stride == 8 else [False, False, True]
        net = getattr(torchvision.models, backbone)(weights=None, replace_stride_with_dilation=dilation)
        if weights is not None:
            _load_backbone_weights(net, backbone, weights)
        features: nn.Module = ResNetFeatures(net)
        head = DeepLabHeadV3Plus(2048, 256, num_classes, rates, separable)
    elif backbone == "mobilenet":
        net = torchvision.models.mobilenet_v2(weights=None)
        if weights is not None:
            _load_backbone_weights(net, backbone, weights)
        features = MobileNetFeatures(net, output_stride)
        head = DeepLabHeadV3Plus(320, 24, num_classes, rates, separable)
    elif backbone == "tiny":
        if weights is not None:
            raise ValueError(f"{WEIGHTS_KEY}: the tiny backbone has no pretrained weights (use 'random')")
        features = TinyBackbone()
        head = DeepLabHeadV3Plus(32, 16, num_classes, (1, 2, 3), separable, aspp_channels=32, project_channels=8)
    else:
        raise ValueError(f"unknown backbone {backbone!r}; known: resnet101, resnet50, mobilenet, tiny")
    _set_bn_momentum(features, 0.01)
    return DeepLabV3Plus(features, head)


@dataclass(frozen=True)
class SegmentorSpec:
    """One ReCo+ segmentor (config key `segmentor_name`).

    build: (num_classes, backbone weights: a local file, a library tag or None / 'random') -> the model.
    """

    name: str
    build: Callable[[int, Optional[str]], nn.Module]


SEGMENTORS: Registry[SegmentorSpec] = Registry("segmentor", "segmentor_name")


def register_segmentor(spec: SegmentorSpec, replace: bool = False) -> SegmentorSpec:
    """Add `spec` under `spec.name` (a second spec of the same name needs `replace`)."""
    return SEGMENTORS.register(spec.name, spec, replace)


def segmentor_names() -> tuple[str, ...]:
    return SEGMENTORS.names()


def build_segmentor(name: str, num_classes: int, backbone_weights: Optional[str] = None) -> nn.Module:
    """Segmentor by config name (`segmentor_name`), e.g. 'deeplabv3plus_resnet101'; a ValueError naming
    the key and the known names for any other."""
    return SEGMENTORS.lookup(name).build(num_classes, backbone_weights)


def _separable_deeplab(backbone: str, num_classes: int, backbone_weights: Optional[str]) -> DeepLabV3Plus:
    return deeplabv3plus(backbone, num_classes, separable=True, pretrained_backbone=backbone_weights)


for _backbone in ("resnet101", "resnet50", "mobilenet", "tiny"):
    register_segmentor(SegmentorSpec(f"deeplabv3plus_{_backbone}", partial(_separable_deeplab, _backbone)))
