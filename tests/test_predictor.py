"""reco_api.predictor.Predictor: the one prediction path (scores, sliding windows, CRF, labels)."""
from types import SimpleNamespace

import pytest
import torch

from reco_api.predictor import Predictor
from reco_api.settings import InferenceSettings
from utils.crf import CrfSettings


def position_scores(images):
    """(B, 3, h, w) -> (B, 2, h, w): class 0 scores the red channel, class 1 the green one (a pixel-wise
    model, so windows change nothing)."""
    return torch.sigmoid(torch.stack([images[:, 0], images[:, 1]], dim=1) * 4)


def predictor(window=None, stride=112, crf="torch"):
    calls = []

    def predict(images):
        calls.append(tuple(images.shape[-2:]))
        return position_scores(images)

    models = SimpleNamespace(predict=predict, references=torch.zeros(2, 4))
    settings = InferenceSettings(batch_size=2, n_workers=0, slide_window=window, slide_stride=stride)
    return Predictor(models, settings, CrfSettings(crf, n_workers=1)), calls


def two_region_images():
    images = torch.full((2, 3, 24, 40), -1.0)
    images[:, 0, :, :20] = 1.0   # left half red -> class 0
    images[:, 1, :, 20:] = 1.0   # right half green -> class 1
    return images


def test_labels_scores_and_crf_of_a_known_image():
    model, calls = predictor()
    prediction = model.predict(two_region_images())
    assert calls == [(24, 40)]  # one pass without a window
    assert torch.equal(prediction.scores, position_scores(two_region_images()))
    assert (prediction.labels[:, :, :20] == 0).all() and (prediction.labels[:, :, 20:] == 1).all()
    assert prediction.crf_probabilities.shape == (2, 2, 24, 40)
    assert torch.equal(prediction.crf_labels, prediction.labels)  # two clean regions stay as they are


def test_sliding_windows_cover_the_image_and_average_to_the_same_scores():
    model, calls = predictor(window=16, stride=8)
    prediction = model.predict(two_region_images(), crf=False)
    assert len(calls) > 1 and all(h <= 16 and w <= 16 for h, w in calls)
    torch.testing.assert_close(prediction.scores, position_scores(two_region_images()))
    assert prediction.crf_probabilities is None
    with pytest.raises(ValueError, match="without the CRF"):
        prediction.crf_labels


def test_the_crf_refines_the_class_scores_made_from_the_scores():
    model, _ = predictor()
    prediction = model.predict(two_region_images(), crf_scores=lambda s: s.flip(1))
    assert (prediction.labels[:, :, :20] == 0).all()  # the scores stay those of the names
    assert (prediction.crf_labels[:, :, :20] == 1).all() and (prediction.crf_labels[:, :, 20:] == 0).all()
