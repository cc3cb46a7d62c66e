"""The fallbacks of utils/sparse_ops.py (for devices without sparse addmm(out=) or sparse @ sparse) give
the same CRF as the fast path, forced on the CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from utils import crf, sparse_ops
from utils.crf import dense_crf_batch

skdata = pytest.importorskip("skimage.data")
sktransform = pytest.importorskip("skimage.transform")


@pytest.fixture
def product(monkeypatch):
    """Set the sparse product mode, with the cached Gaussian kernels rebuilt under it (and again afterwards)."""

    def choose(mode):
        sparse_ops.set_product_mode(mode)
        crf._gaussian_operator.cache_clear()

    yield choose
    choose(None)


@pytest.fixture
def forced(monkeypatch):
    """Force a fallback, with the cached Gaussian kernels rebuilt under it (and again afterwards)."""
    monkeypatch.setattr(sparse_ops, "_working", {})

    def force(mode):
        sparse_ops.set_forced_fallback(mode)
        crf._gaussian_operator.cache_clear()

    yield force
    force(None)


def _inputs(size=(40, 56), n_classes=7):
    photos = [sktransform.resize(getattr(skdata, name)(), size, anti_aliasing=True, preserve_range=True)
              for name in ("astronaut", "coffee")]
    images = np.stack(photos).round().astype(np.uint8)
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(2, n_classes, 5, 7, generator=g)
    logits = torch.log_softmax(4 * torch.nn.functional.interpolate(coarse, size=size, mode="bilinear"), dim=1)
    return images, logits


@pytest.mark.parametrize("mode", ["matmul", "gather"])
def test_forced_fallback_gives_the_same_crf(forced, mode):
    images, logits = _inputs()
    forced(None)
    fast = dense_crf_batch(images, logits, backend="torch", chunk_size=2)
    forced(mode)
    calls = []
    original = sparse_ops._gather_spmm
    sparse_ops._gather_spmm = lambda m, x: calls.append(1) or original(m, x)
    try:
        slow = dense_crf_batch(images, logits, backend="torch", chunk_size=2)
    finally:
        sparse_ops._gather_spmm = original
    assert bool(calls) == (mode == "gather")
    torch.testing.assert_close(slow, fast, rtol=0, atol=1e-5)
    assert (slow.argmax(1) == fast.argmax(1)).float().mean() > 0.999


def test_no_sparse_product_when_forced(forced):
    eye = sparse_ops.csr(torch.arange(4), torch.arange(3), torch.ones(3), (3, 3))
    assert sparse_ops.csr_product([eye, eye]) is not None
    forced("gather")
    assert sparse_ops.csr_product([eye, eye]) is None


def test_missing_addmm_out_falls_back_and_is_remembered(forced, monkeypatch):
    """A device whose sparse addmm(out=) raises takes the next path, warns once and sticks to it."""
    real_addmm = torch.addmm

    def addmm(*args, **kwargs):
        if args[1].layout == torch.sparse_csr:
            raise NotImplementedError("addmm_out_sparse_csr not implemented for this device")
        return real_addmm(*args, **kwargs)

    monkeypatch.setattr(torch, "addmm", addmm)
    matrix = sparse_ops.csr(torch.tensor([0, 2, 3]), torch.tensor([0, 2, 1]), torch.tensor([1.0, 2.0, 3.0]), (2, 3))
    x = torch.arange(6, dtype=torch.float32).view(3, 2)
    out = torch.ones(2, 2)
    with pytest.warns(UserWarning, match="addmm_out is unavailable on cpu"):
        sparse_ops.spmm(matrix, x, out, accumulate=True)
    expected = torch.ones(2, 2) + matrix.to_dense() @ x
    torch.testing.assert_close(out, expected)
    assert sparse_ops._working["cpu"] == "matmul"
    torch.testing.assert_close(sparse_ops.spmm(matrix, x, torch.empty(2, 2)), matrix.to_dense() @ x)
    torch.testing.assert_close(sparse_ops._gather_spmm(matrix, x), matrix.to_dense() @ x)


def test_unknown_forced_mode_is_refused():
    with pytest.raises(ValueError, match="fallback"):
        sparse_ops.set_forced_fallback("dense")


@pytest.mark.cuda
@pytest.mark.parametrize("mode", [None, "matmul", "gather"])
def test_cuda_crf_equals_cpu_with_each_sparse_path(forced, mode):
    images, logits = _inputs()
    cpu = dense_crf_batch(images, logits, backend="torch", chunk_size=2)
    forced(mode)
    cuda = dense_crf_batch(torch.from_numpy(images).cuda(), logits.cuda(), backend="torch", chunk_size=2)
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=1e-5)


def _nan_buffer_case(device):
    matrix = sparse_ops.csr(torch.tensor([0, 2, 2, 3]), torch.tensor([0, 2, 1]), torch.tensor([1.0, 2.0, 3.0]),
                            (3, 3)).to(device)
    x = torch.arange(6, dtype=torch.float32, device=device).view(3, 2)
    return matrix, x, matrix.to_dense() @ x


@pytest.mark.parametrize("mode", [None, "matmul", "gather"])
def test_a_buffer_full_of_nan_is_overwritten(forced, mode):
    """Work buffers are reused without zeroing: with accumulate=False their old bits must not leak."""
    forced(mode)
    matrix, x, expected = _nan_buffer_case("cpu")
    out = sparse_ops.spmm(matrix, x, torch.full((3, 2), float("nan")))
    torch.testing.assert_close(out, expected)


@pytest.mark.cuda
@pytest.mark.parametrize("mode", [None, "matmul", "gather"])
def test_cuda_buffer_full_of_nan_is_overwritten(forced, mode):
    forced(mode)
    matrix, x, expected = _nan_buffer_case("cuda")
    out = sparse_ops.spmm(matrix, x, torch.full((3, 2), float("nan"), device="cuda"))
    torch.testing.assert_close(out, expected)
    accumulated = sparse_ops.spmm(matrix, x, torch.ones(3, 2, device="cuda"), accumulate=True)
    torch.testing.assert_close(accumulated, expected + 1)


def _random_csr(rows, cols, per_row, seed):
    g = torch.Generator().manual_seed(seed)
    col = torch.stack([torch.randperm(cols, generator=g)[:per_row].sort().values for _ in range(rows)]).flatten()
    return sparse_ops.csr(torch.arange(0, rows * per_row + 1, per_row), col, torch.rand(rows * per_row, generator=g),
                          (rows, cols))


def test_scipy_product_equals_the_dense_product(product):
    """csr_product is matrices[-1] @ ... @ matrices[0], in every mode that multiplies."""
    a, b, c = _random_csr(30, 20, 3, 0), _random_csr(40, 30, 4, 1), _random_csr(10, 40, 2, 2)
    expected = c.to_dense() @ b.to_dense() @ a.to_dense()
    for mode in ("scipy", "sparse_mm"):
        product(mode)
        result = sparse_ops.csr_product([a, b, c])
        assert result.layout == torch.sparse_csr and result.shape == (10, 20)
        torch.testing.assert_close(result.to_dense(), expected, rtol=1e-6, atol=1e-6)
    product("none")
    assert sparse_ops.csr_product([a, b, c]) is None


def test_product_defaults_by_device(product):
    product(None)
    assert sparse_ops.product_mode(torch.device("cpu")) == "scipy"  # torch.sparse.mm leaks on CPU
    assert sparse_ops.product_mode(torch.device("cuda")) == "none"  # see benchmarks/gpu_check.py crf_memory
    product("sparse_mm")
    assert sparse_ops.product_mode(torch.device("cpu")) == "sparse_mm"
    with pytest.raises(ValueError, match="product mode"):
        sparse_ops.set_product_mode("dense")


def test_every_product_mode_gives_the_same_crf(product):
    """Multiplying the lattice factors out is only an optimisation: the same CRF with scipy, torch.sparse.mm
    (what the port used before) and with the factors kept."""
    images, logits = _inputs()
    results = {}
    for mode in ("sparse_mm", "scipy", "none"):
        product(mode)
        results[mode] = dense_crf_batch(images, logits, backend="torch", chunk_size=2)
    for mode in ("scipy", "none"):
        torch.testing.assert_close(results[mode], results["sparse_mm"], rtol=0, atol=1e-5)
        assert (results[mode].argmax(1) == results["sparse_mm"].argmax(1)).float().mean() > 0.999


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["scipy", "sparse_mm", "none"])
def test_cuda_crf_equals_cpu_with_each_product_mode(product, mode):
    images, logits = _inputs()
    product(None)
    cpu = dense_crf_batch(images, logits, backend="torch", chunk_size=2)
    product(mode)
    cuda = dense_crf_batch(torch.from_numpy(images).cuda(), logits.cuda(), backend="torch", chunk_size=2)
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=1e-5)
