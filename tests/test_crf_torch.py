"""The PyTorch port of pydensecrf's permutohedral lattice (backend="torch", SPEC 17) against pydensecrf."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.crf import BI_W, POS_W, _bilateral_operator, _gaussian_operator, dense_crf, dense_crf_batch
from utils.permutohedral import build_lattice, lattice_operator

dcrf = pytest.importorskip("pydensecrf.densecrf")
eigen = pytest.importorskip("pydensecrf.eigen")
skdata = pytest.importorskip("skimage.data")
sktransform = pytest.importorskip("skimage.transform")

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- helpers

def photo(name: str, size=(320, 320)) -> np.ndarray:
    """A real RGB photo bundled with scikit-image, resized to `size`, uint8."""
    img = getattr(skdata, name)()
    return sktransform.resize(img, size, anti_aliasing=True, preserve_range=True).round().astype(np.uint8)


def reco_like_logits(n_classes: int, size, seed: int, sharpness: float = 1.0) -> torch.Tensor:
    """log_softmax of [0, 1] scores from a smooth random field (ReCo's sigmoid scores are like this)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    coarse = torch.rand(1, n_classes, max(h // 16, 2), max(w // 16, 2), generator=g)
    scores = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)[0]
    return torch.log_softmax(scores * sharpness, dim=0)


def pydensecrf_operator(bgr: np.ndarray, kind: str) -> np.ndarray:
    """pydensecrf's normalised kernel matrix K[p, q] (compat 1), read out by one mean-field step on Q = I."""
    h, w, _ = bgr.shape
    n = h * w
    crf = dcrf.DenseCRF2D(w, h, n)
    crf.setUnaryEnergy(np.zeros((n, n), np.float32))
    if kind == "gaussian":
        crf.addPairwiseGaussian(sxy=1, compat=1)
    else:
        crf.addPairwiseBilateral(sxy=67, srgb=3, rgbim=bgr, compat=1)
    q = eigen.matrixXf(np.eye(n, dtype=np.float32))
    tmp1 = eigen.matrixXf(np.zeros((n, n), np.float32))
    tmp2 = eigen.matrixXf(np.zeros((n, n), np.float32))
    crf.stepInference(q, tmp1, tmp2)  # tmp2 = -compat * (K Q) with labels as rows
    return -np.array(tmp2).T


def torch_operator(bgr: np.ndarray, kind: str) -> np.ndarray:
    h, w, _ = bgr.shape
    eye = torch.eye(h * w)
    if kind == "gaussian":
        return (_gaussian_operator(h, w, CPU).apply(eye) / POS_W).numpy()
    return (_bilateral_operator(torch.from_numpy(bgr)[None]).apply(eye) / BI_W).numpy()


def assert_agree(q_ref: torch.Tensor, q: torch.Tensor, min_equal=0.999, max_diff=1e-4, case: str = ""):
    equal = (q_ref.argmax(0) == q.argmax(0)).float().mean().item()
    diff = (q_ref - q).abs().max().item()
    assert equal >= min_equal and diff <= max_diff, f"{case}: labels equal {equal:.5f}, max |dQ| {diff:.2e}"


def size_id(size) -> str:
    return f"{size[0]}x{size[1]}"


# ----------------------------------------------------------------------------- operator level

@pytest.mark.parametrize("size", [(1, 1), (3, 3), (5, 7), (2, 3), (4, 6), (9, 11)], ids=size_id)
@pytest.mark.parametrize("kind", ["gaussian", "bilateral"])
@pytest.mark.parametrize("brightness", [256, 12], ids=["bright", "dark"])
def test_operator_matches_pydensecrf(size, kind, brightness):
    """Dark images put pixels next to the feature origin, where the SSE block padding adds vertices."""
    rng = np.random.default_rng(size[0] * 100 + size[1] + brightness)
    bgr = rng.integers(1, brightness, (*size, 3), dtype=np.uint8)
    np.testing.assert_allclose(torch_operator(bgr, kind), pydensecrf_operator(bgr, kind), atol=2e-6, rtol=0)


def test_block_padding_vertices_matter():
    """Without the zero-feature padding vertices the operator is off on odd pixel counts (SPEC 17)."""
    x = torch.arange(3, dtype=torch.float32).repeat(2) / 67
    y = torch.arange(2, dtype=torch.float32).repeat_interleave(3) / 67

    def normalised(feats, pad):
        lattice = build_lattice(feats, pad_block=pad)
        norm = lattice_operator(lattice).apply(torch.ones(6, 1))[:, 0]
        s = (1.0 / torch.sqrt(norm.double() + 1e-20)).float()
        return lattice_operator(lattice, s, s).apply(torch.eye(6)).numpy()

    worst_without_padding = 0.0
    for seed in range(8):
        bgr = np.random.default_rng(seed).integers(1, 8, (2, 3, 3), dtype=np.uint8)
        ref = pydensecrf_operator(bgr, "bilateral")
        colour = torch.from_numpy(bgr.reshape(-1, 3).astype(np.float32)) / 3
        feats = torch.cat([torch.stack([x, y], 1), colour], 1)
        assert np.abs(normalised(feats, True) - ref).max() < 2e-6
        worst_without_padding = max(worst_without_padding, np.abs(normalised(feats, False) - ref).max())
    assert worst_without_padding > 1e-3


def test_batched_lattice_keeps_images_apart():
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    images[1] = images[0]  # identical images must not share vertices either
    op = _bilateral_operator(torch.from_numpy(images))
    x = torch.rand(5 * 7 * 3, 2)
    out = op.apply(x).view(35, 3, 2)
    for b in range(3):
        single = _bilateral_operator(torch.from_numpy(images[b : b + 1])).apply(x.view(35, 3, 2)[:, b].contiguous())
        torch.testing.assert_close(out[:, b], single, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- whole CRF

@pytest.mark.parametrize("key, expected", [("log_probs", "Q"), ("log_probs_sharp", "Q_sharp")],
                         ids=["uniform", "sharp"])
def test_fixture(request, key, expected):
    from utils.crf import denormalise_image

    data = np.load(request.path.parent / "fixtures" / "dense_crf.npz")
    image = denormalise_image(torch.from_numpy(data["img_normalised"]))
    q = dense_crf(image, torch.from_numpy(data[key]), backend="torch")
    assert q.dtype == torch.float32 and q.shape == (4, 24, 32)
    assert_agree(torch.from_numpy(data[expected]), q, case=key)


@pytest.mark.parametrize("name,n_classes,sharpness", [
    ("astronaut", 27, 1.0), ("coffee", 27, 1.0), ("chelsea", 27, 1.0), ("rocket", 27, 20.0),
    ("coffee", 171, 1.0),
], ids=["astronaut-27", "coffee-27", "chelsea-27", "rocket-27-sharp", "coffee-171"])
def test_agrees_with_pydensecrf_on_photos(name, n_classes, sharpness):
    image = photo(name)
    logits = reco_like_logits(n_classes, (320, 320), seed=n_classes, sharpness=sharpness)
    assert_agree(dense_crf(image, logits, backend="pydensecrf"), dense_crf(image, logits, backend="torch"))


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (5, 1), (3, 5)], ids=size_id)
def test_tiny_images(size):
    rng = np.random.default_rng(size[0] * 10 + size[1])
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    logits = torch.log_softmax(torch.from_numpy(rng.normal(size=(3, *size)).astype(np.float32)), dim=0)
    q = dense_crf(image, logits, backend="torch")
    assert q.shape == (3, *size)
    assert_agree(dense_crf(image, logits, backend="pydensecrf"), q, min_equal=1.0)


@pytest.mark.parametrize("size", [(48, 64), (37, 53)], ids=size_id)
def test_batched_equals_one_by_one(size):
    images = np.stack([photo(n, size) for n in ("astronaut", "coffee", "chelsea")])
    logits = torch.stack([reco_like_logits(5, size, seed=i, sharpness=4.0) for i in range(3)])
    batched = dense_crf_batch(images, logits, backend="torch", chunk_size=3)
    single = dense_crf_batch(images, logits, backend="torch", chunk_size=1)
    assert batched.shape == (3, 5, *size) and batched.dtype == torch.float32
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-6)
    reference = dense_crf_batch(images, logits, backend="pydensecrf", n_workers=1)
    for i, name in enumerate(("astronaut", "coffee", "chelsea")):
        assert_agree(reference[i], batched[i], case=name)


@pytest.mark.cuda
def test_cuda_batched_matches_pydensecrf():
    images = np.stack([photo(n, (96, 128)) for n in ("astronaut", "coffee")])
    logits = torch.stack([reco_like_logits(27, (96, 128), seed=i) for i in range(2)])
    q = dense_crf_batch(images, logits.cuda(), backend="auto")
    assert q.device.type == "cuda" and q.shape == (2, 27, 96, 128)
    reference = dense_crf_batch(images, logits, backend="pydensecrf", n_workers=1)
    for i, name in enumerate(("astronaut", "coffee")):
        assert_agree(reference[i], q[i].cpu(), case=name)
    single = dense_crf(torch.from_numpy(images[0]).cuda(), logits[0].cuda(), backend="torch")
    assert single.device.type == "cuda"
    torch.testing.assert_close(single.cpu(), q[0].cpu(), rtol=0, atol=1e-5)
