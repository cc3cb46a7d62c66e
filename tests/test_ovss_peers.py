"""The open-vocabulary labels as the peers compute them (reco/ovss.py): every query resized to the label's
size before a class takes the max of its names, and their background rule (mode 'probability')."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from entry.reco_ovss import OvssGeometry, OvssProtocol, evaluate_ovss
from reco_api.predictor import Predictor
from reco_api.settings import InferenceSettings
from reco.ovss import (ProbabilityBackground, drop_small_classes, ovss_class_scores, ovss_labels,
                       probability_class_scores, upsampled_argmax)
from utils.config import BackgroundConfig, ConfigError, RecoConfig

# one row, two samples at inference resolution -> four at the label's: the bilinear resize (align_corners
# False) gives the middle pixels 3/4 of their nearer sample and 1/4 of the other
TWO_NAMES = torch.tensor([[0.8, 0.8],    # background
                          [1.0, 0.0],    # person
                          [0.0, 1.0]])[None, :, None, :]  # person in shirt: (1, 3, 1, 2)
TWO_NAMES_MEMBERS = [[0], [1, 2]]


def peers_labels(query_scores, query_class, size, logit_scale=None, prob_thd=0.0, area_thd=None):
    """An independent transcription of the peers' evaluation of one batch: the scores of every query resized
    to `size`, then per image the softmax over queries, the class max through a one-hot query -> class
    table, the area rule, the argmax and the probability threshold (background = class 0). logit_scale
    None: no softmax and no threshold (their labels under plain synonyms)."""
    logits = F.interpolate(query_scores, size=size, mode="bilinear")
    n_classes, n_queries = max(query_class) + 1, len(query_class)
    out = []
    for image in logits:
        probs = image if logit_scale is None else (image * logit_scale).softmax(0)
        table = F.one_hot(torch.tensor(query_class), n_classes).T.reshape(n_classes, n_queries, 1, 1)
        probs = (probs[None] * table.to(probs.dtype)).max(dim=1).values
        if area_thd is not None:
            predicted = F.one_hot(probs.argmax(0), n_classes).to(probs.dtype)  # (H, W, C)
            area = predicted[:, :, 1:].sum((0, 1))
            probs[1:] = probs[1:] * (area > area_thd * area.sum()).to(probs.dtype)[:, None, None]
        labels = probs.argmax(0)
        labels[probs.max(0).values < prob_thd] = 0
        out.append(labels)
    return torch.stack(out)


def test_every_query_is_resized_before_the_max_over_a_class_names():
    labels = ovss_labels(TWO_NAMES, TWO_NAMES_MEMBERS, (1, 4))
    assert labels.flatten().tolist() == [1, 0, 0, 1]  # person 1, 3/4, 3/4, 1 against the background's 0.8
    assert torch.equal(labels, peers_labels(TWO_NAMES, [0, 1, 1], (1, 4)))
    # resizing the max instead gives the person all four pixels
    assert upsampled_argmax(ovss_class_scores(TWO_NAMES, TWO_NAMES_MEMBERS), (1, 4)).flatten().tolist() == [1] * 4


def test_threshold_background_after_the_resize():
    scores = TWO_NAMES[:, 1:]  # the background is not queried; it scores 0.8
    labels = ovss_labels(scores, [[], [0, 1]], (1, 4), background_index=0, threshold=0.8)
    assert labels.flatten().tolist() == [1, 0, 0, 1]


def test_one_name_per_class_gives_the_old_labels():
    """Resizing is per channel, so classes with one name each label as before (resize the class scores)."""
    scores = torch.rand(2, 4, 5, 7, generator=torch.Generator().manual_seed(1))
    members = [[2], [0], [3], [1]]
    assert torch.equal(ovss_labels(scores, members, (11, 13)),
                       upsampled_argmax(ovss_class_scores(scores, members), (11, 13)))


def test_probability_rule_known_answer():
    # one pixel per column; two classes: background (names 0, 1) and car (name 2); scale 1
    scores = torch.tensor([[0.0, 0.0, 0.0],
                           [0.0, 0.0, 0.0],
                           [0.0, 3.0, 1.0]])[None, :, None, :]
    rule = ProbabilityBackground(logit_scale=1.0, prob_thd=0.5)
    probabilities = torch.softmax(scores, dim=1)  # car: 1/3, e^3/(2+e^3) = 0.91, e/(2+e) = 0.58
    labels = ovss_labels(scores, [[0, 1], [2]], (1, 3), background_index=0, probability=rule)
    assert labels.flatten().tolist() == [0, 1, 1]  # column 0: best probability 1/3 < 0.5
    tie = ProbabilityBackground(logit_scale=1.0, prob_thd=float(probabilities[0, 2, 0, 2]))
    assert ovss_labels(scores, [[0, 1], [2]], (1, 3), 0, probability=tie).flatten().tolist() == [0, 1, 1]
    above = ProbabilityBackground(logit_scale=1.0, prob_thd=float(probabilities[0, 2, 0, 2]) + 1e-6)
    assert ovss_labels(scores, [[0, 1], [2]], (1, 3), 0, probability=above).flatten().tolist() == [0, 1, 0]


def test_area_rule_known_answer():
    # argmax areas over ten pixels: background 2, class 1 4, class 2 2, class 3 2 of 8 non-background
    winner = [0, 0, 1, 1, 1, 1, 2, 2, 3, 3]
    scores = torch.full((1, 4, 1, 10), 0.1)
    scores[0, winner, 0, range(10)] = 0.6
    scores[0, 0, 0, 8:] = 0.5  # class 3's pixels have the background second
    dropped = drop_small_classes(scores, background_index=0, area_thd=0.25)  # 2 is not above 0.25 * 8
    assert dropped.argmax(dim=1).flatten().tolist() == [0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    assert torch.equal(dropped[0, :2], scores[0, :2]) and not dropped[0, 2:].any()
    kept = drop_small_classes(scores, background_index=0, area_thd=0.2)  # 2 > 1.6
    assert torch.equal(kept, scores)
    # no non-background pixel: nothing is above 0, every other class is zeroed
    assert not drop_small_classes(scores[:, [0]].repeat(1, 3, 1, 1), 0, 0.1)[0, 1:].any()


@pytest.mark.parametrize("seed", range(4))
def test_probability_rule_matches_the_peers_on_random_inputs(seed):
    generator = torch.Generator().manual_seed(seed)
    members = [[0, 1], [2], [3, 4, 5], [6], [7, 8]]
    query_class = [c for c, names in enumerate(members) for _ in names]
    scores = torch.rand(2, 9, 7, 9, generator=generator)
    size = (17, 23)
    for logit_scale, prob_thd, area_thd in [(40, 0.1, None), (65, 0.1, 0.1), (50, 0.3, 0.25), (10, 0.0, 0.3),
                                            (65, 0.5, None), (10, 0.3, None), (40, 0.5, 0.1)]:
        rule = ProbabilityBackground(logit_scale, prob_thd, area_thd)
        ours = ovss_labels(scores, members, size, background_index=0, probability=rule)
        theirs = peers_labels(scores, query_class, size, logit_scale, prob_thd, area_thd)
        assert torch.equal(ours, theirs), (logit_scale, prob_thd, area_thd)
    # ties: a threshold equal to some pixel's best probability, and an area fraction equal to a class's
    probabilities = torch.softmax(40 * F.interpolate(scores, size=size, mode="bilinear"), dim=1)
    best = ovss_class_scores(probabilities, members).amax(dim=1)
    tie = float(best.flatten()[int(torch.randint(best.numel(), (1,), generator=generator))])
    areas = torch.bincount(ovss_class_scores(probabilities, members).argmax(dim=1).flatten(), minlength=5)
    fraction = float(areas[1:].max()) / float(areas[1:].sum())
    for prob_thd, area_thd in [(tie, None), (tie, fraction), (0.1, fraction)]:
        rule = ProbabilityBackground(40, prob_thd, area_thd)
        ours = ovss_labels(scores, members, size, background_index=0, probability=rule)
        assert torch.equal(ours, peers_labels(scores, query_class, size, 40, prob_thd, area_thd))
    assert (ovss_labels(scores, members, size, 0, probability=ProbabilityBackground(40, tie)) != 0).any()


def test_the_rule_changes_labels_on_random_inputs():
    """The random comparison above exercises both rules: the threshold and the area rule move pixels."""
    scores = torch.rand(2, 9, 7, 9, generator=torch.Generator().manual_seed(0))
    members = [[0, 1], [2], [3, 4, 5], [6], [7, 8]]
    plain = ovss_labels(scores, members, (17, 23), 0, probability=ProbabilityBackground(40, 0.0))
    thresholded = ovss_labels(scores, members, (17, 23), 0, probability=ProbabilityBackground(40, 0.5))
    area = ovss_labels(scores, members, (17, 23), 0, probability=ProbabilityBackground(40, 0.0, 0.25))
    assert (thresholded != plain).any() and (thresholded[thresholded != plain] == 0).all()
    assert (area != plain).any()


def test_probability_scores_raise_the_background_to_the_threshold():
    scores = torch.tensor([[0.0, 0.0], [0.0, 2.0]])[None, :, None, :]
    out = probability_class_scores(scores, [[0], [1]], 0, ProbabilityBackground(1.0, 0.6))
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.6, 0.5]))  # 0.5 < 0.6: background raised
    torch.testing.assert_close(out[0, :, 0, 1], torch.softmax(scores[0, :, 0, 1], dim=0))


def test_probability_settings_are_checked():
    with pytest.raises(ValueError, match="logit_scale"):
        ProbabilityBackground(0.0, 0.1)
    with pytest.raises(ValueError, match="prob_thd"):
        ProbabilityBackground(40, 1.5)
    with pytest.raises(ValueError, match="area_thd"):
        ProbabilityBackground(40, 0.1, -0.1)
    with pytest.raises(ValueError, match="not both"):
        ovss_class_scores(TWO_NAMES, TWO_NAMES_MEMBERS, 0, threshold=0.5, probability=ProbabilityBackground(40, 0.1))
    for key, value in [("logit_scale", 0), ("logit_scale", float("inf")), ("prob_thd", -0.1), ("area_thd", 2.0)]:
        with pytest.raises(ConfigError, match=f"'background.{key}' must be"):
            BackgroundConfig(mode="probability", **{key: value})


class OneImage(torch.utils.data.Dataset):
    """A 1 x 4 image whose label is the peers' labels of TWO_NAMES."""

    image_paths = ["one.png"]

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return {"image": torch.zeros(3, 1, 4), "label": torch.tensor([[1, 0, 0, 1]]), "name": "one",
                "image_path": "one.png"}

    def image_sizes(self, unreadable=None):
        return [(1, 4)]


class IdentityCrf:
    """Records the class scores the CRF is given and returns them as its probabilities."""

    def __init__(self):
        self.seen = []

    def refine(self, images, scores):
        self.seen.append((tuple(images.shape[-2:]), scores.clone()))
        return scores


class FixedScores:
    references = torch.zeros(3, 1)  # where the predictor runs (the CPU)

    def predict(self, images):
        return TWO_NAMES.expand(len(images), -1, -1, -1)


@pytest.mark.parametrize("probability", [None, ProbabilityBackground(10.0, 0.0)])
def test_evaluation_order_with_and_without_the_crf(tmp_path, probability):
    """Without the CRF the peers' order (resize every query, then the max); the CRF refines the class
    scores at the inference resolution (1 x 2 here, the image resized to its short side 1 with the long
    side capped at 2), and its probabilities are resized to the label's size before the argmax."""
    protocol = OvssProtocol(["background", "person"], ["a", "b", "c"], TWO_NAMES_MEMBERS, 0, None, probability)
    crf = IdentityCrf()
    predictor = Predictor(FixedScores(), InferenceSettings(batch_size=1, n_workers=0), crf)
    out = evaluate_ovss("voc21", dataset=OneImage(), protocol=protocol, geometry=OvssGeometry(1, 2), run_dir=tmp_path,
                        predictor=predictor, batch_size=1, n_workers=0, n_visualisations=0,
                        device=torch.device("cpu"))
    (crf_size, crf_scores), = crf.seen
    assert crf_size == (1, 2)
    assert torch.equal(crf_scores, ovss_class_scores(TWO_NAMES, TWO_NAMES_MEMBERS, 0, probability=probability))
    assert out["results"]["Mean IoU"] == pytest.approx(1.0)  # [1, 0, 0, 1]
    # the CRF's order: the person everywhere ([1, 1, 1, 1]): background IoU 0, person 2/4
    assert out["results_crf"]["background"] == pytest.approx(0.0)
    assert out["results_crf"]["person"] == pytest.approx(0.5)
    assert np.isclose(out["results_crf"]["Mean IoU"], 0.25)


def test_probability_mode_from_the_config():
    """Mode 'probability' queries the background by its names (as 'synonyms') and names its run directory."""
    from entry.reco_ovss import ovss_protocol, protocol_tag

    background = BackgroundConfig(mode="probability", logit_scale=65, prob_thd=0.1, area_thd=0.1)
    config = RecoConfig(dir_ckpt="x", dataset_name="voc21", slide_window=224, background=background)
    protocol = ovss_protocol(config)
    synonyms = ovss_protocol(RecoConfig(dir_ckpt="x", dataset_name="voc21", background=BackgroundConfig("synonyms")))
    assert protocol.queries == synonyms.queries and protocol.members == synonyms.members
    assert protocol.probability == ProbabilityBackground(65, 0.1, 0.1) and protocol.threshold is None
    assert protocol_tag(config).startswith("short336_slide224s112_bgprob_s65_p0.1_a0.1_")
    default = protocol_tag(RecoConfig(dir_ckpt="x", dataset_name="voc21", background=BackgroundConfig("probability")))
    assert re.fullmatch(r"short336_whole_bgprob_s40_p0\.1_[0-9a-f]{6}", default), default
    with pytest.raises(ConfigError, match="'threshold', 'synonyms' or 'probability'"):
        ovss_protocol(RecoConfig(dir_ckpt="x", dataset_name="voc21"))


def test_probability_mode_end_to_end(tmp_path, monkeypatch):
    """VOC21 through main_reco.py with the peers' rule (SCLIP's VOC21 values) and the colour-coded models."""
    import json

    import main_reco
    import networks
    from colour_models import ColourEncoder
    from datasets import metadata
    from entry.reco_ovss import ovss_run_dir
    from synthetic_ovss import write_ovss
    from test_end_to_end import install_colour_models
    from test_ovss_end_to_end import COLOURS, fill_reference_cache, ovss_config, vocabulary
    from utils.config import load_reco_config

    install_colour_models(monkeypatch, vocabulary(metadata.categories("voc21") + metadata.context_categories()),
                          COLOURS)
    monkeypatch.setattr(networks, "build_encoder", lambda arch, weights, key="": ColourEncoder(COLOURS, patch_size=4))
    write_ovss("voc21", tmp_path / "voc21")
    background = {"mode": "probability", "logit_scale": 65, "prob_thd": 0.1, "area_thd": 0.1}
    config = ovss_config(tmp_path, "voc21", background=background, n_visualisations=0)
    fill_reference_cache(config, metadata.categories("voc21"))
    assert main_reco.main(["--config", str(config)]) == 0
    out = ovss_run_dir(load_reco_config(config))
    assert out.name.startswith("short96_slide48s24_bgprob_s65_p0.1_a0.1_")
    results = json.loads((out / "results.json").read_text())
    assert results["background"] >= 0.9 and results["car"] >= 0.8 and results["Mean IoU"] >= 0.9
