"""Sliding-window inference, the evaluation resize and background scoring (reco/sliding.py, reco/ovss.py)."""
import pytest
import torch

from reco.ovss import (benchmark_queries, class_scores, ovss_class_scores, query_list,
                       with_threshold_background)
from reco.sliding import protocol_size, sliding_window_scores, window_starts


def per_pixel_scores(images):
    """A translation-equivariant score function: 4 classes, each a sigmoid of a fixed mix of the channels."""
    weights = torch.tensor([[1.0, -1.0, 0.5], [0.2, 0.3, -0.7], [-1.0, 0.0, 1.0], [0.5, 0.5, 0.5]])
    return torch.sigmoid(torch.einsum("nc,bchw->bnhw", weights, images))


def test_window_starts_end_flush_with_the_border():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]
    assert window_starts(224, 224, 112) == [0]
    assert window_starts(100, 224, 112) == [0]
    assert window_starts(336, 224, 112) == [0, 112]


def test_sliding_equals_one_pass_for_a_per_pixel_score():
    images = torch.randn(2, 3, 50, 70, generator=torch.Generator().manual_seed(0))
    one_pass = sliding_window_scores(images, per_pixel_scores, window=None, stride=8)
    covering = sliding_window_scores(images, per_pixel_scores, window=70, stride=8)
    slid = sliding_window_scores(images, per_pixel_scores, window=16, stride=8)
    assert torch.equal(one_pass, per_pixel_scores(images)) and torch.equal(covering, one_pass)
    assert slid.shape == (2, 4, 50, 70)
    torch.testing.assert_close(slid, one_pass, rtol=0, atol=1e-6)


def test_overlapping_windows_are_averaged():
    calls = []

    def numbered(crop):  # the k-th window scores k everywhere
        calls.append(tuple(crop.shape[-2:]))
        return torch.full((crop.shape[0], 1, *crop.shape[-2:]), float(len(calls) - 1))

    scores = sliding_window_scores(torch.zeros(1, 3, 4, 6), numbered, window=4, stride=2)
    assert calls == [(4, 4), (4, 4)]  # columns 0..3 and 2..5
    assert scores[0, 0, 0].tolist() == [0, 0, 0.5, 0.5, 1, 1]


def test_bad_windows_are_refused():
    with pytest.raises(ValueError, match="stride"):
        sliding_window_scores(torch.zeros(1, 3, 40, 40), per_pixel_scores, window=8, stride=9)


def test_protocol_size():
    assert protocol_size(375, 500, 336, 2048) == (336, 448)
    assert protocol_size(1024, 2048, 560, 2048) == (560, 1120)      # Cityscapes at the peers' 560
    assert protocol_size(100, 1000, 336, 2048) == (205, 2048)       # the long side caps the scale
    assert protocol_size(200, 300, 336, 2048) == (336, 504)         # small images are enlarged
    with pytest.raises(ValueError):
        protocol_size(0, 10, 336, 2048)


def test_background_by_threshold_known_answer():
    # two classes (car, dog) at four pixels; the background is class 0 and scores 0.4 everywhere
    scores = torch.tensor([[0.9, 0.2, 0.45, 0.1], [0.1, 0.3, 0.5, 0.4]])[None, :, None, :]  # (1, 2, 1, 4)
    with_bg = with_threshold_background(scores, 0.4, background_index=0)
    assert with_bg.shape == (1, 3, 1, 4)
    assert with_bg.argmax(dim=1).flatten().tolist() == [1, 0, 2, 0]  # 0.4 = threshold: a tie goes to background
    assert with_threshold_background(scores, 0.4, 2).argmax(dim=1).flatten().tolist() == [0, 2, 1, 1]  # background last: a tie goes to the class
    members = [[], [0], [1]]
    assert torch.equal(ovss_class_scores(scores, members, background_index=0, threshold=0.4), with_bg)


def test_background_by_synonyms_known_answer():
    queries = benchmark_queries([["background"], ["car"], ["person", "person in shirt"]], 0, "synonyms",
                                synonyms=["sky", "wall"])
    names, members = query_list(queries)
    assert names == ["sky", "wall", "car", "person", "person in shirt"] and members == [[0, 1], [2], [3, 4]]
    # pixels: sky, wall, car, shirt, nothing high
    query_scores = torch.tensor([[0.9, 0.1, 0.2, 0.1, 0.3],
                                 [0.1, 0.8, 0.2, 0.1, 0.2],
                                 [0.2, 0.1, 0.7, 0.1, 0.1],
                                 [0.1, 0.1, 0.1, 0.2, 0.1],
                                 [0.1, 0.2, 0.1, 0.6, 0.2]])[None, :, None, :]
    scores = class_scores(query_scores, members)
    assert scores.shape == (1, 3, 1, 5)
    torch.testing.assert_close(scores[0, :, 0, 4], torch.tensor([0.3, 0.1, 0.2]))
    assert scores.argmax(dim=1).flatten().tolist() == [0, 0, 1, 2, 0]


def test_background_modes_are_checked_against_the_benchmark():
    assert benchmark_queries([["bg"], ["car"]], 0, "threshold") == [[], ["car"]]
    assert benchmark_queries([["sky", "wall"], ["car"]], 0, "synonyms") == [["sky", "wall"], ["car"]]
    with pytest.raises(ValueError, match="background mode 'threshold' or 'synonyms'"):
        benchmark_queries([["bg"], ["car"]], 0, "none")
    with pytest.raises(ValueError, match="needs 'none'"):
        benchmark_queries([["car"], ["dog"]], None, "threshold")
    with pytest.raises(ValueError, match="one of"):
        benchmark_queries([["car"]], None, "max")
    with pytest.raises(ValueError, match="at least one query"):
        class_scores(torch.zeros(1, 2, 1, 1), [[0], []])
