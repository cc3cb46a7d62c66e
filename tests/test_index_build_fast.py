"""The fast index build: uint8 pixels from the workers normalised on the device give exactly the
original's preprocessing (SPEC 2); the CLIP ViT uses fused attention; the build's worker count."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from datasets.imagenet import IndexBuildDataset, clip_normalise, clip_preprocess
from utils.normalisation import CLIP_MEAN, CLIP_STD


def _original(size: int) -> T.Compose:
    """SPEC 2 as the original composes it (PIL resize and crop, RGB conversion after the geometry)."""
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                      lambda image: image.convert("RGB"), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])


def _write_images(directory) -> list:
    rng = np.random.default_rng(0)
    smooth = lambda h, w, c: np.asarray(Image.fromarray(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, c),  # noqa: E731
                                                                     dtype=np.uint8).squeeze()).resize((w, h)))
    paths = []
    for name, (h, w), mode, fmt in [("rgb", (75, 100), "RGB", "JPEG"), ("tall", (130, 41), "RGB", "JPEG"),
                                    ("grey", (60, 90), "L", "JPEG"), ("cmyk", (64, 48), "CMYK", "JPEG"),
                                    ("rgba", (50, 70), "RGBA", "PNG"), ("palette", (40, 40), "P", "PNG"),
                                    ("small", (9, 13), "RGB", "JPEG")]:
        channels = {"L": 1, "P": 1, "RGB": 3, "CMYK": 4, "RGBA": 4}[mode]
        image = Image.fromarray(smooth(h, w, channels), mode if mode != "P" else "L")
        if mode == "P":
            image = image.convert("P")
        path = directory / f"{name}.{'jpg' if fmt == 'JPEG' else 'png'}"
        image.save(path, format=fmt)
        paths.append(path)
    return paths


@pytest.mark.parametrize("size", [32, 48])
def test_uint8_path_equals_the_original_preprocessing_bit_for_bit(tmp_path, size):
    paths = _write_images(tmp_path)
    original = _original(size)
    pixels = IndexBuildDataset(paths, size, normalise=False)
    floats = IndexBuildDataset(paths, size)
    batch = []
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            expected = original(image)
        _, uint8, ok = pixels[i]
        assert ok and uint8.dtype == torch.uint8 and uint8.shape == (3, size, size)
        assert torch.equal(clip_normalise(uint8), expected), path.name
        assert torch.equal(floats[i][1], expected), path.name
        with Image.open(path) as image:
            assert torch.equal(clip_preprocess(image, size), expected)
        batch.append(uint8)
    normalised = clip_normalise(torch.stack(batch))  # batched, as on the device
    assert normalised.dtype == torch.float32
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            assert torch.equal(normalised[i], original(image))


def test_unreadable_image_and_bad_input(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    _, image, ok = IndexBuildDataset([bad], 16, normalise=False)[0]
    assert not ok and image.dtype == torch.uint8 and not image.any()
    with pytest.raises(ValueError, match="uint8"):
        clip_normalise(torch.zeros(3, 4, 4))


def test_clip_vit_uses_fused_attention():
    """open_clip's ViT blocks (nn.MultiheadAttention, need_weights=False) reach
    scaled_dot_product_attention at inference, with or without autocast."""
    from torch.profiler import ProfilerActivity, profile

    from networks import build_clip

    model, _ = build_clip("tiny-vit-clip", "random")
    images = torch.randn(2, 3, 32, 32)
    for autocast in (False, True):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                model.encode_image(images)
        names = {event.name for event in prof.events()}
        assert "aten::scaled_dot_product_attention" in names, sorted(n for n in names if "att" in n)


def test_index_workers(monkeypatch):
    from entry.reco_index import index_workers
    from utils.config import RecoConfig

    config = RecoConfig(dir_ckpt="/tmp/x", n_workers=3)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert index_workers(config, torch.device("cpu")) == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert index_workers(config, torch.device("cpu")) == 1  # on a CPU: the cores less one at most
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert index_workers(config, torch.device("cuda")) == 3
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert index_workers(config, torch.device("cuda")) == 15
    assert index_workers(RecoConfig(dir_ckpt="/tmp/x", index_workers=5), torch.device("cuda")) == 5


@pytest.mark.cuda
def test_cuda_normalisation_is_bit_identical(tmp_path):
    paths = _write_images(tmp_path)
    batch = torch.stack([IndexBuildDataset(paths, 40, normalise=False)[i][1] for i in range(len(paths))])
    on_gpu = clip_normalise(batch.pin_memory().cuda(non_blocking=True))
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), clip_normalise(batch))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_build_matches_the_cpu_build(tmp_path, dtype):
    import torch.nn.functional as F

    from image_index.build import build_index
    from image_index.storage import load_index
    from networks import build_clip

    paths = _write_images(tmp_path)
    torch.manual_seed(0)
    model, _ = build_clip("tiny-vit-clip", "random")
    indexes = {}
    for device in ("cpu", "cuda"):
        model = model.to(device)

        def embed(images, device=device):
            return F.normalize(model.encode_image(clip_normalise(images.to(device))).float(), dim=-1)

        out = build_index(paths, embed, tmp_path / device, {"clip_arch": "tiny-vit-clip", "split": "train"},
                          make_dataset=lambda p: IndexBuildDataset(p, 32, normalise=False), batch_size=4,
                          num_workers=2, shard_size=4, device=device, progress=False, autocast_dtype=dtype)
        indexes[device] = np.asarray(load_index(out).embeddings, dtype=np.float32)
    cosine = (indexes["cpu"] * indexes["cuda"]).sum(axis=1)
    assert cosine.min() > 0.99, cosine
