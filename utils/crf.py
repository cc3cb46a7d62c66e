"""Dense CRF post-processing (SPEC 9.2), with two interchangeable backends.

backend="pydensecrf": the original library, one process or a pool of worker processes (utils/crf_pydensecrf.py).
backend="torch": a PyTorch port of pydensecrf's permutohedral lattice (utils/permutohedral.py,
SPEC 17) that runs batched on the logits' device (CPU or CUDA) and agrees with pydensecrf to ~1e-5.

Callers pass RGB images; the reversal to BGR (the byte order the original fed to pydensecrf, which
changes the result) happens in the pydensecrf backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .normalisation import denormalise_image  # noqa: F401  (re-exported: the CRF's callers denormalise with it)
from .crf_pydensecrf import (BI_RGB_STD, BI_W, BI_XY_STD, MAX_ITER, POS_W, POS_XY_STD,  # noqa: F401
                             UNARY_CLIP, _crf_pydensecrf, shutdown_crf_pools)
from .permutohedral import LatticeOperator, MatrixOperator, build_lattice, lattice_operator
from .registry import Registry


ArrayLike = Union[np.ndarray, Tensor]
# A backend: (images uint8 (B, H, W, 3) RGB as given, probabilities (B, C, H, W) softmaxed at image size,
# n_workers, chunk_size) -> Q (B, C, H, W) float32 on the probabilities' device.
CrfBackend = Callable[[ArrayLike, Tensor, Optional[int], Optional[int]], Tensor]



@dataclass(frozen=True)
class CrfBackendSpec:
    """One CRF backend: the function that runs it and what its callers must know about it.

    run: the backend (see CrfBackend).
    worker_pool: it runs on the CPU in a pool of `n_workers` processes (the config's crf_workers), which
        callers create once and share between threads; otherwise it runs on the scores' device and
        ignores n_workers.
    """

    run: CrfBackend
    worker_pool: bool = False


# The CRF backend registry (config key `crf_backend`), filled at the end of this module: adding a
# backend is one `register_crf_backend(name, fn)`. 'auto' is AUTO_DEFAULT on every device.
CRF_BACKENDS: Registry[CrfBackendSpec] = Registry("CRF backend", "CRF backend", reserved=("auto",))
AUTO_DEFAULT = "torch"


def register_crf_backend(name: str, backend: CrfBackend, replace: bool = False, worker_pool: bool = False) -> None:
    """Add a CRF backend under `name` ('auto' is reserved); `worker_pool`: see CrfBackendSpec."""
    CRF_BACKENDS.register(name, CrfBackendSpec(backend, worker_pool), replace)


def crf_backend_spec(name: str, device: Union[str, torch.device, None] = None) -> CrfBackendSpec:
    """The registry entry of `name` ('auto' resolved on `device`)."""
    return CRF_BACKENDS[resolve_crf_backend(name, device)]


def unregister_crf_backend(name: str) -> None:
    CRF_BACKENDS.unregister(name)


def crf_backend_names() -> tuple[str, ...]:
    """The values `crf_backend` accepts: 'auto' and every registered backend."""
    return ("auto",) + CRF_BACKENDS.names()


def resolve_crf_backend(name: str, device: Union[str, torch.device, None] = None) -> str:
    """'auto' -> AUTO_DEFAULT ('torch', on every device); registered names are returned as-is.

    The torch port gives pydensecrf's labels and, on a CPU, runs 1.4x to 2.5x faster than the pydensecrf
    process pool (benchmarks/crf.py), so it is the default on CPUs too; `device` is kept for callers.
    """
    if name == "auto":
        return AUTO_DEFAULT
    if name not in CRF_BACKENDS:
        raise CRF_BACKENDS.unknown(name, crf_backend_names())
    return name


# ----------------------------------------------------------------------------- input checks

def _as_images(images: ArrayLike, batched: bool) -> ArrayLike:
    want = "(B, H, W, 3)" if batched else "(H, W, 3)"
    if not isinstance(images, (np.ndarray, Tensor)):
        raise ValueError(f"image must be a uint8 numpy array or tensor {want}, got {type(images).__name__}")
    if images.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"image must be uint8 {want} RGB, got dtype {images.dtype}")
    if images.ndim != (4 if batched else 3) or images.shape[-1] != 3:
        raise ValueError(f"image must be uint8 {want} RGB, got shape {tuple(images.shape)}")
    if images.shape[-2] < 1 or images.shape[-3] < 1:
        raise ValueError(f"image must not be empty, got shape {tuple(images.shape)}")
    return images


def _as_logits(logits: ArrayLike, batched: bool) -> Tensor:
    want = "(B, C, H, W)" if batched else "(C, H, W)"
    if isinstance(logits, np.ndarray):
        logits = torch.from_numpy(logits)
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor {want}")
    if logits.ndim != (4 if batched else 3) or min(logits.shape) < 1:
        raise ValueError(f"logits must be {want} with non-empty dimensions, got {tuple(logits.shape)}")
    return logits.detach().float()


def _probabilities(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, h, w) -> softmax over classes after bilinear resizing to size (the original's order)."""
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return F.softmax(logits, dim=1)


# ----------------------------------------------------------------------------- torch backend

@lru_cache(maxsize=8)
def _feature_table(n: int, scale: float) -> np.ndarray:
    """float32 i / scale for i in 0..n-1, divided exactly as the C++ does (not times 1/scale)."""
    return np.arange(n, dtype=np.float32) / np.float32(scale)


def _normalised(lattice, weight: float) -> LatticeOperator:
    """NORMALIZE_SYMMETRIC: weight * n^-1/2 K n^-1/2 with n = K 1 (self-term included)."""
    op = lattice_operator(lattice)
    norm = op.apply(torch.ones(lattice.vertex.shape[0], 1, device=lattice.vertex.device))[:, 0]
    op.release()
    scale = (1.0 / torch.sqrt(norm.double() + 1e-20)).float()  # 1/sqrt in double, like the C++
    return op.rescaled(scale, scale * weight)


@lru_cache(maxsize=4)
def _gaussian_operator(height: int, width: int, device: torch.device) -> Union[MatrixOperator, LatticeOperator]:
    """The Gaussian (positional) kernel depends only on the image size: built once and cached."""
    x = torch.from_numpy(np.tile(_feature_table(width, POS_XY_STD), height))
    y = torch.from_numpy(np.repeat(_feature_table(height, POS_XY_STD), width))
    lattice = build_lattice(torch.stack([x, y], dim=1).to(device))
    return _normalised(lattice, POS_W).to_matrix()


def _bilateral_operator(images: Tensor) -> LatticeOperator:
    """images (B, H, W, 3) uint8 BGR on the target device; pixels ordered (pixel, image)."""
    b, h, w, _ = images.shape
    dev = images.device
    xs = torch.from_numpy(_feature_table(w, BI_XY_STD)).to(dev)
    ys = torch.from_numpy(_feature_table(h, BI_XY_STD)).to(dev)
    colour = torch.from_numpy(_feature_table(256, BI_RGB_STD)).to(dev)
    feats = torch.empty(h, w, b, 5, dtype=torch.float32, device=dev)
    feats[..., 0] = xs[None, :, None]
    feats[..., 1] = ys[:, None, None]
    feats[..., 2:] = colour[images.permute(1, 2, 0, 3).long()]
    image_index = torch.arange(b, device=dev).repeat(h * w)
    lattice = build_lattice(feats.reshape(-1, 5), image_index)
    return _normalised(lattice, BI_W)


def _crf_torch(images: Tensor, probs: Tensor) -> Tensor:
    """images (B, H, W, 3) uint8 RGB, probs (B, C, H, W) on one device -> Q (B, C, H, W)."""
    b, c, h, w = probs.shape
    bgr = images.flip(-1)
    gauss = _gaussian_operator(h, w, probs.device)
    bilateral = _bilateral_operator(bgr)
    # State laid out (pixel, image, class): the Gaussian lattice is shared by all images of the
    # batch (they are columns), the bilateral one holds each image's pixels.
    neg_unary = torch.log(probs.clamp(UNARY_CLIP, 1.0)).permute(2, 3, 0, 1).reshape(h * w * b, c)
    q = torch.softmax(neg_unary, dim=1)
    energy = torch.empty_like(q)
    for _ in range(MAX_ITER):
        # energy = (-U + 3 m_gauss) + 4 m_bilateral, the compat weights being folded into the kernels
        energy.copy_(neg_unary)
        gauss.apply(q.view(h * w, b * c), out=energy.view(h * w, b * c), accumulate=True)
        bilateral.apply(q, out=energy, accumulate=True)
        _softmax_(energy, out=q)
    gauss.release()  # the cached Gaussian operator keeps no work buffers
    return q.view(h, w, b, c).permute(2, 3, 0, 1).contiguous()


def _softmax_(x: Tensor, out: Tensor) -> Tensor:
    """Softmax over dim 1 (max-subtracted, like pydensecrf's expAndNormalize) into a preallocated
    tensor: on CPU a fresh (P, C) tensor per iteration costs page faults."""
    return torch.softmax(x, 1, out=out)  # public torch.softmax, its out= overload (softmax.int_out)


# ----------------------------------------------------------------------------- public API

@torch.no_grad()
def dense_crf_batch(images: ArrayLike, logits: ArrayLike, backend: str = "torch",
                    n_workers: Optional[int] = None, chunk_size: Optional[int] = None) -> Tensor:
    """Dense CRF of a batch: images uint8 (B, H, W, 3) RGB, logits (B, C, h, w) -> probs (B, C, H, W).

    logits are log-probabilities or scores; they are resized bilinearly to (H, W) and softmaxed.
    backend "pydensecrf": n_workers processes (None -> all cores, <= 1 -> in this process).
    backend "torch": on the logits' device, chunk_size images per lattice (None -> the whole batch
    on CUDA, one image at a time on CPU, where batching saves nothing). "auto" picks by device.
    Result: float32 on the logits' device.
    """
    images = _as_images(images, batched=True)
    logits = _as_logits(logits, batched=True)
    if images.shape[0] != logits.shape[0]:
        raise ValueError(f"batch sizes differ: images {images.shape[0]}, logits {logits.shape[0]}")
    backend = resolve_crf_backend(backend, logits.device)
    size = (int(images.shape[1]), int(images.shape[2]))
    return CRF_BACKENDS[backend].run(images, _probabilities(logits, size), n_workers, chunk_size)


def _crf_torch_batched(images: ArrayLike, probs: Tensor, n_workers: Optional[int],
                      chunk_size: Optional[int]) -> Tensor:
    """The torch backend: on the probabilities' device, chunk_size images per lattice (None -> the whole
    batch on CUDA, one image at a time on CPU, where batching saves nothing)."""
    device = probs.device
    imgs = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images).to(device)
    if chunk_size is None:
        chunk_size = probs.shape[0] if device.type == "cuda" else 1
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return torch.cat([_crf_torch(imgs[i : i + chunk_size], probs[i : i + chunk_size])
                      for i in range(0, probs.shape[0], chunk_size)])


def dense_crf(image: ArrayLike, logits: ArrayLike, backend: str = "pydensecrf") -> Tensor:
    """Dense CRF of one image (SPEC 9.2): image uint8 (H, W, 3) RGB, logits (C, h, w) tensor ->
    probabilities (C, H, W) float32 on the logits' device."""
    image = _as_images(image, batched=False)
    logits = _as_logits(logits, batched=False)
    return dense_crf_batch(image[None], logits[None], backend=backend, n_workers=1)[0]


register_crf_backend("pydensecrf", _crf_pydensecrf, worker_pool=True)
register_crf_backend("torch", _crf_torch_batched)


@dataclass(frozen=True)
class CrfSettings:
    """How the dense CRF runs: a resolved backend ('pydensecrf' or 'torch') and the pydensecrf pool size."""

    backend: str
    n_workers: Optional[int] = None

    @classmethod
    def resolve(cls, backend: str, device: Union[str, torch.device, None], n_workers: Optional[int]) -> "CrfSettings":
        """From the config key crf_backend ('auto' resolved on `device`) and the pool size (the config's
        crf_workers, its fallback resolved: utils.config_schema.effective)."""
        return cls(resolve_crf_backend(backend, device), n_workers)

    def refine(self, images: Tensor, scores: Tensor) -> Tensor:
        return crf_refine(images, scores, backend=self.backend, n_workers=self.n_workers)


@torch.no_grad()
def crf_refine(images: Tensor, scores: Tensor, backend: str, n_workers: Optional[int] = None) -> Tensor:
    """The CRF step of every ReCo / ReCo+ prediction (SPEC 9.2).

    images (B, 3, H, W) ImageNet-normalised float; scores (B, N, h, w) class scores (probabilities or
    logits, any float dtype). The images are denormalised to uint8 RGB and the CRF runs on the
    log-softmax of the scores over classes. Returns CRF probabilities (B, N, H, W) float32 on the
    scores' device.
    """
    return dense_crf_batch(denormalise_image(images.cpu()), torch.log_softmax(scores.float(), dim=1),
                           backend=backend, n_workers=n_workers)
