"""TorchScript weights are read without running their code (networks/torchscript_reader.py).

torch.jit.load appears here only to produce expected values (and to show a fixture is really dangerous).
"""
from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch
from open_clip.model import convert_weights_to_lp
from torch import nn

import networks
from networks.clip_registry import get_clip
from networks.deeplab import deeplabv3plus
from image_index.storage import index_dir
from networks.torchscript_reader import TorchScriptArchiveError, read_torchscript_state_dict
from utils.config import ConfigError

OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def _jit_load(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


def traced_openai_clip(arch: str, path: Path) -> None:
    """A traced CLIP with OpenAI's archive layout: random float16-exact weights, conv/linear/attention
    weights stored as fp16 (the rest fp32), BatchNorm statistics, the extra keys input_resolution,
    context_length, vocab_size, and the attention mask a traced constant (not a state-dict entry)."""
    spec = get_clip(arch)
    torch.manual_seed(0)
    model = spec.build(spec, "fp32", "cpu").eval()  # the tiny entry's CLIP (QuickGELU), fp32
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.num_batches_tracked.fill_(7)
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    convert_weights_to_lp(model, dtype=torch.float16)
    mask = model.attn_mask
    del model._buffers["attn_mask"]
    model.attn_mask = mask
    for name, value in zip(OPENAI_EXTRA_KEYS, (spec.image_size, 77, 49408)):
        model.__dict__.pop(name, None)  # open_clip keeps two of them as plain ints; OpenAI's archives as tensors
        model.register_buffer(name, torch.tensor(value))
    images = torch.zeros(1, 3, spec.image_size, spec.image_size, dtype=torch.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, (images, torch.zeros(1, 77, dtype=torch.long)), check_trace=False).save(str(path))


@pytest.mark.parametrize("arch", ["tiny-vit-clip", "tiny-rn-clip"])
def test_traced_openai_clip_loads_with_the_archives_exact_weights(tmp_path, arch):
    path = tmp_path / "archive.pt"
    traced_openai_clip(arch, path)
    expected = _jit_load(path).state_dict()

    ours = read_torchscript_state_dict(path)
    assert list(ours) == list(expected)
    for name, tensor in expected.items():
        assert ours[name].dtype == tensor.dtype and torch.equal(ours[name], tensor), name
    assert set(OPENAI_EXTRA_KEYS) <= set(ours) and int(ours["input_resolution"]) == get_clip(arch).image_size
    assert ours["visual.conv1.weight"].dtype == torch.float16 and ours["ln_final.weight"].dtype == torch.float32
    if arch == "tiny-rn-clip":
        assert int(ours["visual.bn1.num_batches_tracked"]) == 7 and ours["visual.bn1.running_var"].min() >= 0.5

    weights = {name: tensor for name, tensor in expected.items() if name not in OPENAI_EXTRA_KEYS}
    for precision in ("fp32", "fp16"):
        model, _ = networks.build_clip(arch, path, precision=precision)
        built = model.state_dict()
        assert set(built) == set(weights)
        for name, tensor in weights.items():
            assert torch.equal(built[name].float(), tensor.float()), name
            if precision == "fp32":
                assert built[name].dtype == (torch.float32 if tensor.is_floating_point() else tensor.dtype)
            else:
                assert built[name].dtype == tensor.dtype, name


# ------------------------------------------------------------------------------ refused archives


class MarkerOnLoad(nn.Module):
    """A scripted module whose __setstate__ (run by torch.jit.load) creates the file `marker`."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))
        self.marker = marker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, str, bool]:
        return (self.weight, self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, str, bool]) -> None:
        self.marker = state[1]
        self.training = state[2]
        self.weight = state[0] + torch.from_file(self.marker, shared=True, size=2) * 0


class OpenOnUnpickle:
    """A pickle payload: unpickling it (torch.load without weights_only) creates the file `marker`."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    marker = root / "MARKER"
    scripted = root / "setstate.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(MarkerOnLoad(str(marker))).save(str(scripted))
    _jit_load(scripted)  # the fixture is dangerous: torch.jit.load runs its __setstate__
    assert marker.exists()
    marker.unlink()
    dressed = root / "dressed.pt"
    torch.save({"weight": torch.ones(2), "payload": OpenOnUnpickle(str(marker))}, dressed)
    with zipfile.ZipFile(dressed, "a") as archive:  # now it looks like TorchScript
        prefix = next(n for n in archive.namelist() if n.endswith("data.pkl"))[: -len("data.pkl")]
        archive.writestr(prefix + "code/__torch__.py", "class M(Module):\n  __parameters__ = []\n")
    assert networks.weights.is_torchscript_archive(dressed)
    return {"marker": marker, "setstate": scripted, "dressed": dressed}


def _one_line(error: BaseException, key: str, path: Path) -> str:
    message = str(error)
    assert "\n" not in message and message.startswith(f"{key}: ") and str(path) in message, message
    return message


@pytest.mark.parametrize("force_no_weights_only", [False, True])
@pytest.mark.parametrize("kind", ["setstate", "dressed"])
def test_hostile_archives_are_refused_in_one_line_and_run_nothing(hostile, monkeypatch, kind, force_no_weights_only):
    if force_no_weights_only:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path, marker = hostile[kind], hostile["marker"]
    reason = "defines __setstate__" if kind == "setstate" else "global 'io.open' is not allowed"
    with pytest.raises(TorchScriptArchiveError, match=reason):
        read_torchscript_state_dict(path)
    for key, arch in (("weights.clip", "tiny-vit-clip"), ("weights.dense_clip", "tiny-rn-clip")):
        with pytest.raises(ConfigError) as caught:
            networks.build_clip(arch, path, key=key)
        assert reason in _one_line(caught.value, key, path)
    with pytest.raises(ConfigError) as caught:
        networks.build_encoder("tiny-vit", str(path), key="weights.encoder")
    assert "TorchScript archive" in _one_line(caught.value, "weights.encoder", path)
    with pytest.raises(ValueError) as caught:
        deeplabv3plus(backbone="resnet50", num_classes=3, pretrained_backbone=str(path))
    assert "TorchScript archive" in _one_line(caught.value, "weights.backbone", path)
    assert not marker.exists()


def test_hostile_archives_through_the_python_api_and_the_command_line(hostile, tmp_path, monkeypatch, capsys):
    import main_reco
    from reco_api import ReCo
    from test_cli_errors import error_lines, reco_yaml

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    write_index(index_dir(tmp_path / "ImageNet2012", "tiny-vit-clip", "train"), ["n01_1.JPEG", "n01_2.JPEG"])
    for kind in ("setstate", "dressed"):
        path = hostile[kind]
        cfg = reco_yaml(tmp_path, categories=["cat"])
        with pytest.raises(ConfigError) as caught:
            ReCo.from_config(cfg, weights={"dense_clip": str(path)}).dense.dense_clip
        _one_line(caught.value, "weights.dense_clip", path)
        with pytest.raises(ConfigError) as caught:
            ReCo.from_config(cfg, weights={"clip": str(path)}, text_attention=False,
                             dense_clip_inference=False).references(["cat"])
        _one_line(caught.value, "weights.clip", path)

        (tmp_path / "unindexed" / "train" / "n01").mkdir(parents=True, exist_ok=True)
        cfg = reco_yaml(tmp_path, dir_imagenet=str(tmp_path / "unindexed"),
                        weights={"clip": str(path), "dense_clip": "random", "encoder": "random"})
        assert main_reco.main(["--config", str(cfg), "--stage", "index"]) == 2
        (line,) = error_lines(capsys)
        assert "weights.clip: " in line and str(path) in line
    assert not hostile["marker"].exists()


def write_index(directory: Path, filenames: list[str], dim: int = 32) -> None:
    """A built index (image_index/storage.py layout) of random unit rows."""
    directory.mkdir(parents=True)
    rows = np.random.default_rng(0).standard_normal((len(filenames), dim))
    np.save(directory / "embeddings.npy", (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float16))
    (directory / "filenames.txt").write_text("".join(f"{name}\n" for name in filenames))
    (directory / "meta.json").write_text(json.dumps({"clip_arch": "tiny-vit-clip", "split": "train", "dim": dim,
                                                     "count": len(filenames), "image_size": 32}))


def test_truncated_or_inconsistent_archives_are_refused(tmp_path):
    path = tmp_path / "archive.pt"
    traced_openai_clip("tiny-vit-clip", path)
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(broken, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info, data[:-2] if info.filename.endswith("/data/0") else data)
    with pytest.raises(TorchScriptArchiveError, match=r"data/0 holds \d+ bytes"):
        read_torchscript_state_dict(broken)
    (tmp_path / "junk.pt").write_bytes(np.arange(100, dtype=np.uint8).tobytes())
    with pytest.raises(TorchScriptArchiveError, match="zip"):
        read_torchscript_state_dict(tmp_path / "junk.pt")
