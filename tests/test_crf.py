"""utils.crf: SPEC 9.2 parity on the fixture, the public API, input checks and the worker pool."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as VF

from utils.crf import CrfSettings, crf_refine, dense_crf, dense_crf_batch, denormalise_image, resolve_crf_backend
from utils.normalisation import IMAGENET_MEAN, IMAGENET_STD

FIXTURE = Path(__file__).parent / "fixtures" / "dense_crf.npz"


@pytest.fixture(scope="module")
def fixture():
    data = np.load(FIXTURE)
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def fixture_image(fixture):
    return denormalise_image(torch.from_numpy(fixture["img_normalised"]))


def _original_denormalise(x: torch.Tensor) -> np.ndarray:
    """What the original did: un-normalise channel by channel, then torchvision's to_pil_image."""
    x = x.clone()
    for t, m, s in zip(x, IMAGENET_MEAN, IMAGENET_STD):
        t.mul_(s).add_(m)
    return np.array(VF.to_pil_image(x))


def test_denormalise_matches_to_pil_image(fixture):
    x = torch.from_numpy(fixture["img_normalised"])
    out = denormalise_image(x)
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    np.testing.assert_array_equal(out, _original_denormalise(x))
    # Truncation, not rounding: values just below an integer stay below it.
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.integers(0, 256, (3, 5, 6)).astype(np.float32) / 255 - 0.3 / 255)
    img = img.clamp(0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    norm = (img - mean) / std
    np.testing.assert_array_equal(denormalise_image(norm), _original_denormalise(norm))


def test_denormalise_batched(fixture):
    x = torch.from_numpy(fixture["img_normalised"])
    batch = torch.stack([x, x.flip(-1)])
    out = denormalise_image(batch)
    assert out.shape == (2, 24, 32, 3)
    np.testing.assert_array_equal(out[1], _original_denormalise(x.flip(-1)))
    with pytest.raises(ValueError):
        denormalise_image(torch.zeros(4, 8, 8))
    with pytest.raises(ValueError):
        denormalise_image(torch.zeros(3, 8, 8, dtype=torch.uint8))


@pytest.mark.parametrize("key,expected", [("log_probs", "Q"), ("log_probs_sharp", "Q_sharp")], ids=["uniform", "sharp"])
def test_pydensecrf_reproduces_fixture(fixture, fixture_image, key, expected):
    q = dense_crf(fixture_image, torch.from_numpy(fixture[key]), backend="pydensecrf")
    assert q.dtype == torch.float32 and q.shape == (4, 24, 32)
    np.testing.assert_allclose(q.numpy(), fixture[expected], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(q.argmax(0).numpy(), fixture[expected].argmax(0))


@pytest.mark.parametrize("backend", ["pydensecrf", "torch"])
def test_channel_order_matters(fixture, fixture_image, backend):
    """Callers pass RGB; feeding the image in the other order (so pydensecrf sees RGB) differs."""
    logits = torch.from_numpy(fixture["log_probs"])
    swapped = dense_crf(np.ascontiguousarray(fixture_image[:, :, ::-1]), logits, backend=backend)
    assert np.abs(swapped.numpy() - fixture["Q"]).max() > 0.1


def test_image_as_tensor_and_auto_backend(fixture, fixture_image):
    logits = torch.from_numpy(fixture["log_probs"])
    q = dense_crf(torch.from_numpy(fixture_image), logits, backend="auto")  # CPU -> the torch port
    np.testing.assert_allclose(q.numpy(), fixture["Q"], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(q.numpy().argmax(0), fixture["Q"].argmax(0))


def test_logits_are_resized_bilinearly(fixture_image):
    g = torch.Generator().manual_seed(0)
    low = torch.log_softmax(torch.rand(3, 6, 8, generator=g) * 5, dim=0)
    q = dense_crf(fixture_image, low, backend="pydensecrf")
    up = torch.nn.functional.interpolate(low[None], size=(24, 32), mode="bilinear", align_corners=False)[0]
    np.testing.assert_array_equal(q.numpy(), dense_crf(fixture_image, up, backend="pydensecrf").numpy())
    q_torch = dense_crf(fixture_image, low, backend="torch")
    assert (q_torch - q).abs().max() < 1e-4


def test_resolve_backend():
    assert resolve_crf_backend("auto", "cpu") == "torch"  # faster than the pydensecrf pool, same labels
    assert resolve_crf_backend("auto", torch.device("cuda:0")) == "torch"
    assert resolve_crf_backend("auto", "cuda") == "torch"
    assert resolve_crf_backend("torch", "cpu") == "torch"
    assert resolve_crf_backend("pydensecrf", "cuda") == "pydensecrf"
    with pytest.raises(ValueError, match="unknown CRF backend"):
        resolve_crf_backend("cuda", "cpu")


BAD_CALLS = {  # (image (H, W, 3) uint8, logits (4, H, W)) -> a call that must raise ValueError
    "float_image": lambda image, logits: dense_crf(image.astype(np.float32), logits),
    "two_channel_image": lambda image, logits: dense_crf(image[:, :, :2], logits),
    "batched_image_to_dense_crf": lambda image, logits: dense_crf(image[None], logits),
    "batched_logits_to_dense_crf": lambda image, logits: dense_crf(image, logits[None]),
    "integer_logits": lambda image, logits: dense_crf(image, logits.long()),
    "no_classes": lambda image, logits: dense_crf(image, torch.zeros(0, 24, 32)),
    "image_as_list": lambda image, logits: dense_crf(image.tolist(), logits),
    "unknown_backend": lambda image, logits: dense_crf(image, logits, backend="gpu"),
    "batch_sizes_differ": lambda image, logits: dense_crf_batch(image[None].repeat(2, 0), logits[None]),
    "unbatched_to_dense_crf_batch": lambda image, logits: dense_crf_batch(image, logits),
    "chunk_size_zero": lambda image, logits: dense_crf_batch(image[None], logits[None], chunk_size=0),
}


@pytest.mark.parametrize("call", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_inputs_raise_value_error(fixture_image, call):
    with pytest.raises(ValueError):
        call(fixture_image, torch.zeros(4, 24, 32))


def test_pydensecrf_pool_equals_one_by_one(fixture, fixture_image):
    images = np.stack([fixture_image, fixture_image[::-1].copy(), fixture_image[:, ::-1].copy()])
    logits = torch.stack([torch.from_numpy(fixture[k]) for k in ("log_probs", "log_probs_sharp", "log_probs")])
    pooled = dense_crf_batch(images, logits, backend="pydensecrf", n_workers=2)
    serial = dense_crf_batch(images, logits, backend="pydensecrf", n_workers=1)
    assert pooled.shape == (3, 4, 24, 32) and pooled.dtype == torch.float32
    torch.testing.assert_close(pooled, serial, rtol=0, atol=0)
    for i in range(3):
        torch.testing.assert_close(pooled[i], dense_crf(images[i], logits[i]), rtol=0, atol=0)
    np.testing.assert_allclose(pooled[0].numpy(), fixture["Q"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["pydensecrf", "torch"])
def test_crf_refine_is_denormalise_log_softmax_dense_crf(fixture_image, backend):
    """The one CRF call of evaluation, own images and ReCo+: normalised images and raw scores in."""
    rgb = torch.from_numpy(fixture_image).permute(2, 0, 1).float() / 255
    normalised = ((rgb - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None])[None]
    scores = torch.rand(1, 4, 12, 16, generator=torch.Generator().manual_seed(0)).half()  # e.g. AMP logits
    expected = dense_crf_batch(denormalise_image(normalised), torch.log_softmax(scores.float(), dim=1), backend=backend)
    refined = crf_refine(normalised, scores, backend=backend, n_workers=1)
    assert refined.shape == (1, 4, 24, 32) and refined.dtype == torch.float32
    torch.testing.assert_close(refined, expected, rtol=0, atol=0)
    torch.testing.assert_close(CrfSettings(backend, 1).refine(normalised, scores), expected, rtol=0, atol=0)


def test_crf_settings_resolve_the_config_keys():
    from utils.config import RecoConfig, effective

    unset, zero = RecoConfig(dir_ckpt="x", n_workers=3), RecoConfig(dir_ckpt="x", n_workers=3, crf_workers=0)
    assert effective(unset, "crf_workers") == 3 and effective(zero, "crf_workers") == 0  # the declared fallback
    assert CrfSettings.resolve("auto", "cpu", effective(unset, "crf_workers")) == CrfSettings("torch", 3)
    assert CrfSettings.resolve("pydensecrf", "cpu", effective(zero, "crf_workers")) == CrfSettings("pydensecrf", 0)
    with pytest.raises(ValueError):
        CrfSettings.resolve("gpu", "cpu", 1)


def test_crf_backend_entries_declare_their_worker_pool():
    from utils.crf import crf_backend_spec

    assert crf_backend_spec("pydensecrf").worker_pool and not crf_backend_spec("torch").worker_pool
    assert crf_backend_spec("auto", "cuda") is crf_backend_spec("torch")
