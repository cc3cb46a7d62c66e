"""Sparse CSR products of the permutohedral CRF (utils/permutohedral.py), with fallbacks for devices or
builds that lack an operator.

spmm(matrix, x, out, accumulate): out (+)= matrix @ x, matrix CSR (M, N), x dense (N, C). Tried in order:
  "addmm_out": torch.addmm(..., out=out): no allocation (MKL on CPU, cuSPARSE on CUDA);
  "matmul":    matrix @ x into a fresh tensor, then copied or added into out;
  "gather":    each nonzero's row of x gathered, scaled and scatter-added with index_add_ (plain tensor
               operations that every device has), in column blocks that bound the temporary.
The first that works on a device type is remembered for it.

csr_product(matrices): sparse @ sparse, or None where the factors are better kept (multiplying out is
only an optimisation; callers then apply the factors one after the other). How, per PRODUCT_MODES:
  "scipy":     scipy.sparse on the host (a CUDA tensor's factors make a round trip);
  "sparse_mm": torch.sparse.mm (MKL on CPU, cuSPARSE on CUDA). On a CPU it leaks: memory held by
               every product is never returned (+1.8 GB over 100 products of a 20,000 x 20,000 CSR
               matrix with itself, gc.collect() or not), so it is never the default there;
  "none":      no product; the factors are kept.
The default is DEFAULT_PRODUCT by device type: "scipy" on CPU, "none" elsewhere (on CUDA nothing is
multiplied unless benchmarks/gpu_check.py has shown a product to keep device memory flat).
RECO_SPARSE_PRODUCT=<mode> in the environment (or set_product_mode) picks one for every device.

RECO_SPARSE_FALLBACK=matmul or =gather in the environment (or set_forced_fallback) forces that path and
turns csr_product off, so the fallbacks can be checked on any machine.
"""
from __future__ import annotations

import os
import warnings
from typing import Optional

import torch
from torch import Tensor

MODES = ("addmm_out", "matmul", "gather")
_GATHER_ELEMENTS = 1 << 25  # gathered values per column block of the "gather" path (128 MB of float32)
_working: dict[str, str] = {}  # device type -> first mode that worked there
_forced: Optional[str] = os.environ.get("RECO_SPARSE_FALLBACK") or None
PRODUCT_MODES = ("scipy", "sparse_mm", "none")
DEFAULT_PRODUCT = {"cpu": "scipy"}  # device type -> mode; any other device type: "none"
_product_mode: Optional[str] = os.environ.get("RECO_SPARSE_PRODUCT") or None


def set_forced_fallback(mode: Optional[str]) -> None:
    """Force "matmul" or "gather" for every spmm (and no csr_product); None restores the automatic choice."""
    global _forced
    if mode is not None and mode not in MODES[1:]:
        raise ValueError(f"forced sparse fallback must be one of {MODES[1:]} or None, got {mode!r}")
    _forced = mode


def forced_fallback() -> Optional[str]:
    if _forced is not None and _forced not in MODES[1:]:
        raise ValueError(f"RECO_SPARSE_FALLBACK must be one of {MODES[1:]}, got {_forced!r}")
    return _forced


def set_product_mode(mode: Optional[str]) -> None:
    """Multiply sparse factors with `mode` (one of PRODUCT_MODES) on every device; None restores the
    per-device default. Operators built before keep the factors they were built with."""
    global _product_mode
    if mode is not None and mode not in PRODUCT_MODES:
        raise ValueError(f"sparse product mode must be one of {PRODUCT_MODES} or None, got {mode!r}")
    _product_mode = mode


def product_mode(device: torch.device) -> str:
    """The mode csr_product uses for factors on `device`."""
    if _product_mode is not None and _product_mode not in PRODUCT_MODES:
        raise ValueError(f"RECO_SPARSE_PRODUCT must be one of {PRODUCT_MODES}, got {_product_mode!r}")
    return _product_mode or DEFAULT_PRODUCT.get(device.type, "none")


def csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A CSR tensor, with int32 indices when they fit: MKL (CPU) takes int32, so int64 would be
    converted on every product."""
    if max(size[0], size[1], col.numel()) < 2**31 - 1:
        crow, col = crow.to(torch.int32), col.to(torch.int32)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": nothing to act on
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


def csr_product(matrices: list[Tensor]) -> Optional[Tensor]:
    """CSR product matrices[-1] @ ... @ matrices[0], or None where the factors are to be kept: product
    mode "none", sparse @ sparse unsupported, or a fallback forced (multiplying out is only an
    optimisation)."""
    mode = product_mode(matrices[0].device)
    if forced_fallback() is not None or mode == "none":
        return None
    if mode == "scipy":
        return _scipy_product(matrices)
    return _torch_product(matrices)


def _torch_product(matrices: list[Tensor]) -> Optional[Tensor]:
    def wide(m: Tensor) -> Tensor:  # sparse @ sparse wants int64 indices on CPU
        return torch.sparse_csr_tensor(m.crow_indices().long(), m.col_indices().long(), m.values(), size=m.shape)

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
            product = wide(matrices[0])
            for m in matrices[1:]:
                product = torch.sparse.mm(wide(m), product)
    except (RuntimeError, NotImplementedError):
        return None
    return csr(product.crow_indices(), product.col_indices(), product.values(), tuple(product.shape))


def _scipy_product(matrices: list[Tensor]) -> Tensor:
    """The product by scipy.sparse on the host, as a CSR tensor on the factors' device. scipy drops
    entries that sum to exactly zero; the operator is the same."""
    import scipy.sparse

    def host(m: Tensor) -> "scipy.sparse.csr_matrix":
        return scipy.sparse.csr_matrix((m.values().cpu().numpy(), m.col_indices().cpu().numpy(),
                                        m.crow_indices().cpu().numpy()), shape=tuple(m.shape))

    product = host(matrices[0])
    for m in matrices[1:]:
        product = host(m) @ product
    product.sort_indices()  # a canonical CSR, as torch.sparse.mm gives
    device = matrices[0].device
    return csr(*(torch.from_numpy(a).to(device) for a in (product.indptr, product.indices, product.data)),
               tuple(product.shape))


def spmm(matrix: Tensor, x: Tensor, out: Tensor, accumulate: bool = False) -> Tensor:
    """out = matrix @ x, or out += matrix @ x when accumulate; matrix CSR (M, N), x (N, C), out (M, C)."""
    mode = forced_fallback() or _working.get(x.device.type, MODES[0])
    for candidate in MODES[MODES.index(mode):]:
        try:
            if candidate == "addmm_out":
                if not accumulate and out.is_cuda:  # a reused buffer may hold NaN bits, and 0 * NaN is NaN
                    out.zero_()  # unless beta = 0 is special-cased, which is not promised; a memset is cheap
                return torch.addmm(out, matrix, x, beta=1 if accumulate else 0, out=out)
            product = matrix @ x if candidate == "matmul" else _gather_spmm(matrix, x)
        except torch.OutOfMemoryError:
            raise  # not a missing operator: the fallbacks need more memory, not less
        except (RuntimeError, NotImplementedError) as error:
            if candidate == MODES[-1]:
                raise
            if forced_fallback() is None and _working.get(x.device.type) != MODES[MODES.index(candidate) + 1]:
                warnings.warn(f"sparse {candidate} is unavailable on {x.device.type} ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''}); using a slower fallback")
            _working[x.device.type] = MODES[MODES.index(candidate) + 1]
            continue
        if forced_fallback() is None:
            _working[x.device.type] = candidate
        return out.add_(product) if accumulate else out.copy_(product)
    raise AssertionError("unreachable")


def _gather_spmm(matrix: Tensor, x: Tensor) -> Tensor:
    """matrix @ x with dense ops only: (M, C) = sum over nonzeros of value * x[col] into row."""
    crow, col, values = matrix.crow_indices().long(), matrix.col_indices().long(), matrix.values()
    n_rows = matrix.shape[0]
    rows = torch.repeat_interleave(torch.arange(n_rows, device=x.device), crow[1:] - crow[:-1])
    out = x.new_zeros(n_rows, x.shape[1])
    width = max(1, _GATHER_ELEMENTS // max(col.numel(), 1))
    for start in range(0, x.shape[1], width):
        block = x[:, start: start + width]
        out[:, start: start + width] = torch.zeros(n_rows, block.shape[1], dtype=x.dtype, device=x.device) \
            .index_add_(0, rows, block[col] * values[:, None])
    return out
