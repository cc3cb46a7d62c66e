"""A converted published index keeps the float32 values float16 cannot hold, and retrieval on it returns
the float32 top k exactly (image_index.published, image_index.storage, reco.retrieval.ExactRows)."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from image_index.published import ensure_index
from image_index.storage import index_dir, published_pickle_path
from reco.retrieval import ExactRows, retrieve_top_k

ARCH = "ViT-L/14@336px"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _near_ties(n=2000, dim=32, n_ties=300, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """(query (D,), float32 rows (n, D)) whose cosines around rank 50 differ by 1e-6."""
    rng = np.random.default_rng(seed)
    query = _unit(rng.standard_normal(dim))
    noise = rng.standard_normal((n, dim))
    noise -= np.outer(noise @ query, query)
    cosines = np.concatenate([0.3 + 1e-6 * rng.permutation(n_ties), rng.uniform(-0.2, 0.29, n - n_ties)])
    rows = cosines[:, None] * query + np.sqrt(1 - cosines ** 2)[:, None] * _unit(noise)
    return query.astype(np.float32), rows[rng.permutation(n)].astype(np.float32)


def _write_pickle(root, rows: np.ndarray) -> list[str]:
    names = [f"n{i % 7:08d}_{i}.JPEG" for i in range(len(rows))]
    table = {name: torch.from_numpy(row.copy()) for name, row in zip(names, rows)}
    published_pickle_path(root, ARCH, "train").write_bytes(pickle.dumps(table))
    return names


def _exact_rows(index) -> ExactRows:
    bounds = index.meta["float32_rows"]
    return ExactRows(index.float32_rows, bounds["max_residual"], bounds["max_norm"])


def test_float32_values_are_kept_and_retrieval_is_exact(tmp_path):
    query, rows = _near_ties()
    names = _write_pickle(tmp_path, rows)
    index = ensure_index(tmp_path, ARCH, "train", expected_dim=32)
    assert index.filenames == names
    np.testing.assert_array_equal(np.asarray(index.embeddings), rows.astype(np.float16))
    np.testing.assert_array_equal(np.asarray(index.float32_rows), rows)
    bounds = index.meta["float32_rows"]
    half = rows.astype(np.float16).astype(np.float64)
    assert bounds["file"] == "embeddings_fp32.npy"
    assert np.linalg.norm(rows - half, axis=1).max() <= bounds["max_residual"] < 1e-3
    assert np.linalg.norm(half, axis=1).max() <= bounds["max_norm"] < 1.01

    queries = torch.from_numpy(np.stack([query, -query])).float()
    expected = np.argsort(-(queries.double().numpy() @ rows.astype(np.float64).T), axis=1, kind="stable")[:, :50]
    float16_only = retrieve_top_k(queries, index.embeddings, 50, method="fp32")
    assert not np.array_equal(float16_only.numpy()[0], expected[0])
    for method in ("fp32", "bf16"):
        top = retrieve_top_k(queries, index.embeddings, 50, method=method, exact_rows=_exact_rows(index))
        np.testing.assert_array_equal(top.numpy(), expected)
    assert ensure_index(tmp_path, ARCH, "train").float32_rows is not None  # reloads the kept copy


def test_float16_valued_pickle_needs_no_float32_copy(tmp_path):
    """The original computes the embeddings in float16 (SPEC 2): their float32 values fit float16 exactly."""
    _, rows = _near_ties(n=400)
    _write_pickle(tmp_path, rows.astype(np.float16).astype(np.float32))
    index = ensure_index(tmp_path, ARCH, "train")
    assert index.float32_rows is None and "float32_rows" not in index.meta
    assert not (index.directory / "embeddings_fp32.npy").exists()


def test_missing_or_wrong_float32_copy_is_a_clear_error(tmp_path):
    _, rows = _near_ties(n=400)
    _write_pickle(tmp_path, rows)
    directory = ensure_index(tmp_path, ARCH, "train").directory
    np.save(directory / "embeddings_fp32.npy", rows[:50])
    with pytest.raises(ValueError, match="float32.*convert the published pickle again"):
        ensure_index(tmp_path, ARCH, "train")
    (directory / "embeddings_fp32.npy").unlink()
    with pytest.raises(ValueError, match="missing embeddings_fp32.npy"):
        ensure_index(tmp_path, ARCH, "train")
    meta = json.loads((directory / "meta.json").read_text())
    meta["float32_rows"] = {"file": "embeddings_fp32.npy"}
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="max_residual"):
        ensure_index(tmp_path, ARCH, "train")
    assert index_dir(tmp_path, ARCH, "train") == directory


def test_the_retrieval_stage_uses_the_float32_rows(tmp_path, monkeypatch):
    """reco_api.references.retrieve on a converted near-tie pickle returns the float32 order of images."""
    import reco_api.references as common
    from utils.config import RecoConfig

    query, rows = _near_ties()
    names = _write_pickle(tmp_path, rows)
    config = RecoConfig(dir_ckpt=str(tmp_path / "ckpt"), dir_imagenet=str(tmp_path), clip_arch=ARCH, n_imgs=50)
    from reco_api.settings import reference_settings

    paths = common.retrieve(reference_settings(config), ["thing"], torch.device("cpu"),
                            retrieval_text=lambda words: torch.from_numpy(query)[None])["thing"]
    scores = rows.astype(np.float64) @ query.astype(np.float64)
    assert [p.name for p in paths] == [names[i] for i in np.argsort(-scores, kind="stable")[:50]]
