"""Co-segmentation and inference functions against the original's fixtures and hand-made cases."""
import numpy as np
import pytest
import torch

from reco import cosegmentation as cs
from reco.inference import predict, score_maps


@pytest.fixture
def seed_fixture(fixtures_dir):
    data = np.load(fixtures_dir / "seed_selection.npz")
    return {k: torch.from_numpy(data[k]) for k in data}


def test_reference_embedding_corrected(seed_fixture):
    f, w = seed_fixture["features"], seed_fixture["weights"]
    torch.testing.assert_close(cs.reference_embedding(f, w), seed_fixture["ref_corrected"], atol=1e-6, rtol=0)
    assert torch.equal(cs.select_seeds(f, w), seed_fixture["seed_flat_index_corrected"])
    seeds = cs.seed_features(f, cs.select_seeds(f, w))
    torch.testing.assert_close(seeds, seed_fixture["seed_features_corrected"], atol=1e-6, rtol=0)


def test_reference_embedding_reproduces_original_slice_bug(seed_fixture):
    f, w = seed_fixture["features"], seed_fixture["weights"]
    ref = cs.reference_embedding(f, w, reproduce_slice_bug=True)
    torch.testing.assert_close(ref, seed_fixture["ref_original"], atol=1e-6, rtol=0)
    seeds = cs.seed_features(f, cs.select_seeds(f, w, reproduce_slice_bug=True))
    torch.testing.assert_close(seeds, seed_fixture["seed_features_original"], atol=1e-6, rtol=0)
    no_weights = cs.reference_embedding(f, None, reproduce_slice_bug=True)
    torch.testing.assert_close(no_weights, seed_fixture["ref_original_no_weights"], atol=1e-6, rtol=0)
    assert not torch.allclose(ref, cs.reference_embedding(f, w))


def test_row_chunking_does_not_change_the_result(seed_fixture, monkeypatch):
    f, w = seed_fixture["features"], seed_fixture["weights"]
    expected = cs.select_seeds(f, w)
    monkeypatch.setattr(cs, "ROW_CHUNK", 5)
    assert torch.equal(cs.select_seeds(f, w), expected)
    assert torch.equal(cs.select_seeds(f, w, True), seed_fixture_original_seeds(f, w))


def seed_fixture_original_seeds(f, w):
    # Unchunked reference: the (P, P) matrix at once, maxima over images m..2m.
    k, c, h, w_ = f.shape
    x = f.permute(0, 2, 3, 1).reshape(-1, c)
    x = x / x.norm(dim=1, keepdim=True)
    a = (x @ x.T) * w.reshape(1, -1)
    cols = [a[:, m * h * w_:min((2 * m + 1) * h * w_, k * h * w_)].amax(1) for m in range(k)]
    return torch.stack(cols, 1).mean(1).view(k, -1).argmax(1)


def test_reference_is_unit_norm_and_finds_the_shared_object():
    # Three images: a shared "object" feature at a different place in each, random clutter elsewhere.
    g = torch.Generator().manual_seed(0)
    features = torch.randn(3, 16, 4, 4, generator=g)
    obj = torch.randn(16, generator=g) * 3
    places = [(0, 0), (2, 3), (3, 1)]
    for m, (r, c) in enumerate(places):
        features[m, :, r, c] = obj + 0.01 * torch.randn(16, generator=g)
    seeds = cs.select_seeds(features)
    assert [divmod(int(i), 4) for i in seeds] == places
    ref = cs.reference_embedding(features)
    assert abs(float(ref.norm()) - 1) < 1e-6
    assert float(torch.dot(ref, obj / obj.norm())) > 0.99


def test_text_attention_shapes_and_values():
    g = torch.Generator().manual_seed(1)
    dense = torch.randn(2, 8, 3, 5, generator=g)
    text = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1)
    att = cs.text_attention(dense, text)
    assert att.shape == (2, 4, 3, 5)
    manual = torch.sigmoid(10 * torch.einsum("bdhw,kd->bkhw", dense / dense.norm(dim=1, keepdim=True), text))
    torch.testing.assert_close(att, manual)
    single = cs.text_attention(dense, text[1], output_size=(6, 10))
    assert single.shape == (2, 6, 10)
    assert float(single.min()) >= 1 / (1 + np.e**10) - 1e-6 and float(single.max()) <= 1
    with pytest.raises(ValueError, match="dimension"):
        cs.text_attention(dense, torch.ones(4, 7))


def test_context_weights_and_weight_product():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(2, 8, 3, 3, generator=g)
    ctx = torch.randn(3, 8, generator=g)
    cw = cs.context_weights(feats, ctx)
    assert cw.shape == (2, 3, 3, 3)
    assert float(cw.min()) >= 0.2689 and float(cw.max()) <= 0.7311
    att = torch.rand(2, 3, 3, generator=g)
    w = cs.cosegmentation_weights(feats, att, ctx)
    torch.testing.assert_close(w, att * (1 - cw).prod(dim=1))
    assert torch.equal(cs.cosegmentation_weights(feats), torch.ones(2, 3, 3))


def test_score_maps_and_predict():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(2, 8, 2, 3, generator=g)
    refs = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=1)
    s = score_maps(feats, refs, (4, 6))
    assert s.shape == (2, 5, 4, 6) and float(s.min()) > 0 and float(s.max()) < 1
    low = torch.sigmoid(torch.einsum("bchw,nc->bnhw", feats / feats.norm(dim=1, keepdim=True), refs))
    torch.testing.assert_close(score_maps(feats, refs, (2, 3)), low)
    with pytest.raises(ValueError, match="another encoder"):
        score_maps(feats, torch.ones(5, 7), (4, 6))

    images = torch.randn(2, 3, 32, 48, generator=g)
    encoder = lambda x: torch.nn.functional.avg_pool2d(x, 16).repeat(1, 3, 1, 1)[:, :8]  # noqa: E731
    dense = lambda x: torch.nn.functional.avg_pool2d(x, 32).repeat(1, 2, 1, 1)  # noqa: E731
    text = torch.nn.functional.normalize(torch.randn(5, 6, generator=g), dim=1)
    plain = predict(images, encoder, refs)
    both = predict(images, encoder, refs, dense, text)
    assert plain.shape == both.shape == (2, 5, 32, 48)
    assert torch.all(both <= plain + 1e-6)
    with pytest.raises(ValueError):
        predict(images, encoder, refs, dense, None)
