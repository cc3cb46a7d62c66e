import json
import math

import numpy as np
import pytest
import torch

from utils.metrics import RunningScore, named_scores


def test_running_score_matches_original_fixture(fixtures_dir):
    data = np.load(fixtures_dir / "running_score.npz")
    expected = json.loads((fixtures_dir / "running_score_expected.json").read_text())
    score = RunningScore(5)
    for gt, pred in zip(data["gt"], data["pred"]):
        score.update(torch.from_numpy(gt), pred)
    np.testing.assert_array_equal(score.confusion, data["confusion"])
    scores = score.scores()
    for key, value in expected["scores"].items():
        assert scores[key] == pytest.approx(value, abs=1e-12)
    for key, value in expected["class_iou"].items():
        if value is None:
            assert math.isnan(scores[int(key)])
        else:
            assert scores[int(key)] == pytest.approx(value, abs=1e-12)


def test_unseen_class_is_nan_and_named_scores():
    score = RunningScore(3)
    score.update(np.array([0, 0, 1, -1, 7]), np.array([0, 1, 1, 2, 2]))
    assert math.isnan(score.scores()[2])  # ignored pixels do not count as predictions
    score.update(np.array([0]), np.array([2]))
    s = score.scores()
    assert s[2] == 0  # predicted but absent from the ground truth counts as 0
    named = named_scores(s, ["a", "b", "c"])
    assert set(named) == {"Pixel Acc", "Mean Acc", "FreqW Acc", "Mean IoU", "a", "b", "c"}
    with pytest.raises(ValueError):
        named_scores(s, ["a"])
    empty = RunningScore(2)
    empty.update(np.array([0]), np.array([0]))
    assert math.isnan(empty.scores()[1])
