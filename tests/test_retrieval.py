"""retrieve_top_k equals a brute-force argsort, for the fp32 and the bf16 (pre-filter + re-score) paths."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reco.retrieval import retrieve_top_k


def _index(tmp_path, rows: np.ndarray) -> np.ndarray:
    """rows as a float16 .npy file opened like ImageNetIndex.embeddings (read-only memmap)."""
    path = tmp_path / "embeddings.npy"
    np.save(path, rows.astype(np.float16))
    return np.load(path, mmap_mode="r")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _brute_force_scores(queries: torch.Tensor, embeddings: np.ndarray) -> np.ndarray:
    return queries.double().numpy() @ np.asarray(embeddings, dtype=np.float64).T


@pytest.mark.parametrize("method", ["fp32", "bf16"])
@pytest.mark.parametrize("chunk_rows", [64, 1000, 5000])
def test_equals_brute_force_argsort(tmp_path, method, chunk_rows):
    rng = np.random.default_rng(0)
    embeddings = _index(tmp_path, _unit(rng.standard_normal((3000, 32))))
    queries = torch.from_numpy(_unit(rng.standard_normal((7, 32)))).float()
    top = retrieve_top_k(queries, embeddings, 50, chunk_rows=chunk_rows, method=method)
    expected = np.argsort(-_brute_force_scores(queries, embeddings), axis=1, kind="stable")[:, :50]
    assert top.dtype == torch.long and top.shape == (7, 50)
    np.testing.assert_array_equal(top.numpy(), expected)


def test_bf16_path_is_exact_on_near_ties(tmp_path):
    """Hundreds of rows whose scores differ by far less than the bf16 rounding error: the bf16 pass
    cannot order them, the float32 re-scoring must."""
    rng = np.random.default_rng(1)
    dim, n = 64, 4000
    query = _unit(rng.standard_normal(dim))
    noise = rng.standard_normal((n, dim))
    noise -= np.outer(noise @ query, query)  # orthogonal to the query
    cosines = np.concatenate([0.3 + 1e-5 * rng.permutation(400), rng.uniform(-0.2, 0.29, n - 400)])
    rows = cosines[:, None] * query + np.sqrt(1 - cosines ** 2)[:, None] * _unit(noise)
    embeddings = _index(tmp_path, rows)
    queries = torch.from_numpy(np.stack([query, -query])).float()
    scores = _brute_force_scores(queries, embeddings)
    for method in ("bf16", "fp32"):
        top = retrieve_top_k(queries, embeddings, 50, chunk_rows=512, method=method).numpy()
        got = np.take_along_axis(scores, top, axis=1)
        np.testing.assert_allclose(got, -np.sort(-scores, axis=1)[:, :50], rtol=0, atol=1e-6)


def test_bf16_path_with_all_scores_negative(tmp_path):
    rng = np.random.default_rng(4)
    direction = _unit(rng.standard_normal(32))
    rows = _unit(direction + 0.05 * rng.standard_normal((2000, 32)))  # all close to `direction`
    embeddings = _index(tmp_path, rows)
    queries = torch.from_numpy(np.stack([-direction, -_unit(direction + 0.1 * rng.standard_normal(32))])).float()
    scores = _brute_force_scores(queries, embeddings)
    assert (scores < 0).all()
    top = retrieve_top_k(queries, embeddings, 20, chunk_rows=300, method="bf16").numpy()
    np.testing.assert_array_equal(top, np.argsort(-scores, axis=1, kind="stable")[:, :20])


def test_tensor_input_unnormalised_queries_and_k_equal_m(tmp_path):
    rng = np.random.default_rng(2)
    embeddings = torch.from_numpy(rng.standard_normal((300, 16))).float()
    queries = torch.from_numpy(rng.standard_normal((3, 16)) * 5).float()
    expected = np.argsort(-(queries.double() @ embeddings.double().T).numpy(), axis=1, kind="stable")
    np.testing.assert_array_equal(retrieve_top_k(queries, embeddings, 300, chunk_rows=70).numpy(), expected)
    np.testing.assert_array_equal(retrieve_top_k(queries, embeddings, 5, method="bf16", chunk_rows=70).numpy(),
                                  expected[:, :5])


def test_argument_errors():
    embeddings = np.zeros((10, 4), np.float16)
    with pytest.raises(ValueError, match="k must be"):
        retrieve_top_k(torch.zeros(2, 4), embeddings, 11)
    with pytest.raises(ValueError, match=r"\(M, 8\)"):
        retrieve_top_k(torch.zeros(2, 8), embeddings, 1)
    with pytest.raises(ValueError, match="method"):
        retrieve_top_k(torch.zeros(2, 4), embeddings, 1, method="int8")


@pytest.mark.cuda
def test_cuda_equals_cpu(tmp_path):
    rng = np.random.default_rng(3)
    embeddings = _index(tmp_path, _unit(rng.standard_normal((20000, 64))))
    queries = torch.from_numpy(_unit(rng.standard_normal((11, 64)))).float()
    cpu = retrieve_top_k(queries, embeddings, 50, method="fp32")
    cuda = retrieve_top_k(queries, embeddings, 50, device="cuda", chunk_rows=4096)
    assert cuda.device.type == "cpu"
    np.testing.assert_array_equal(cuda.numpy(), cpu.numpy())


# ----------------------------------------------------------------------------- exact float32 re-scoring

def _near_tie_index(tmp_path, n=3000, dim=64, n_ties=400, seed=5):
    """float32 rows whose cosines with `query` around rank 50 differ by 1e-6, far below what float16
    rows resolve (~1e-4): (query (D,) float32, float32 rows, float16 memmap, ExactRows)."""
    from reco.retrieval import ExactRows

    rng = np.random.default_rng(seed)
    query = _unit(rng.standard_normal(dim))
    noise = rng.standard_normal((n, dim))
    noise -= np.outer(noise @ query, query)
    cosines = np.concatenate([0.3 + 1e-6 * rng.permutation(n_ties), rng.uniform(-0.2, 0.29, n - n_ties)])
    rows32 = (cosines[:, None] * query + np.sqrt(1 - cosines ** 2)[:, None] * _unit(noise)).astype(np.float32)
    rows32 = rows32[rng.permutation(n)]
    embeddings = _index(tmp_path, rows32)
    residual = np.linalg.norm(rows32.astype(np.float64) - np.asarray(embeddings, np.float64), axis=1).max()
    norm = np.linalg.norm(np.asarray(embeddings, np.float64), axis=1).max()
    return query.astype(np.float32), rows32, embeddings, ExactRows(rows32, float(residual), float(norm))


def _float32_argsort(queries: torch.Tensor, rows32: np.ndarray, k: int) -> np.ndarray:
    scores = queries.double().numpy() @ rows32.astype(np.float64).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("method,chunk_rows", [("fp32", 100000), ("fp32", 256), ("bf16", 512), ("bf16", 100000)])
def test_exact_rows_give_the_float32_top_k_on_near_ties(tmp_path, method, chunk_rows):
    query, rows32, embeddings, exact = _near_tie_index(tmp_path)
    assert exact.max_residual > 0  # float16 cannot hold these rows
    queries = torch.from_numpy(np.stack([query, 0.5 * query + 0.5 * rows32[7]])).float()
    expected = _float32_argsort(queries, rows32, 50)
    float16_only = retrieve_top_k(queries, embeddings, 50, chunk_rows=chunk_rows, method=method).numpy()
    assert not np.array_equal(float16_only[0], expected[0])  # the float16 scores reorder the near-ties
    top = retrieve_top_k(queries, embeddings, 50, chunk_rows=chunk_rows, method=method, exact_rows=exact)
    assert top.dtype == torch.long and top.device.type == "cpu"
    np.testing.assert_array_equal(top.numpy(), expected)


def test_exact_rows_break_exact_ties_by_row_order(tmp_path):
    from reco.retrieval import ExactRows

    rng = np.random.default_rng(6)
    rows32 = _unit(rng.standard_normal((500, 16))).astype(np.float32)
    rows32[100:140] = rows32[3]  # 41 identical rows, several of them at the rank-k boundary
    queries = torch.from_numpy(np.stack([rows32[3], -rows32[3]])).float()
    embeddings = _index(tmp_path, rows32)
    residual = float(np.linalg.norm(rows32 - np.asarray(embeddings, np.float32), axis=1).max()) * 1.01
    exact = ExactRows(rows32, residual, 1.01)
    for method in ("fp32", "bf16"):
        top = retrieve_top_k(queries, embeddings, 20, method=method, exact_rows=exact, chunk_rows=128)
        np.testing.assert_array_equal(top.numpy(), _float32_argsort(queries, rows32, 20))
        assert top[0].tolist() == [3] + list(range(100, 119))


def test_exact_rows_must_match_the_index():
    from reco.retrieval import ExactRows

    with pytest.raises(ValueError, match="same rows"):
        retrieve_top_k(torch.zeros(1, 4), np.zeros((10, 4), np.float16), 1,
                       exact_rows=ExactRows(np.zeros((9, 4), np.float32), 0.0, 1.0))


@pytest.mark.cuda
def test_cuda_exact_rows_on_near_ties(tmp_path):
    query, rows32, embeddings, exact = _near_tie_index(tmp_path, n=20000)
    queries = torch.from_numpy(np.stack([query, -query])).float()
    top = retrieve_top_k(queries, embeddings, 50, device="cuda", chunk_rows=4096, exact_rows=exact)
    assert top.device.type == "cpu"
    np.testing.assert_array_equal(top.numpy(), _float32_argsort(queries, rows32, 50))
