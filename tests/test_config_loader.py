"""One loader for YAML files, mappings and the API's keyword arguments: the same checks, the same errors."""
import dataclasses

import pytest
import yaml

from reco_api import ReCo
from reco_api.config_checks import reco_config, reco_plus_config
from utils.config import ConfigError, RecoConfig, RecoPlusConfig
from utils.config_schema import declared

BASE = {"dir_ckpt": "ckpt"}


@pytest.mark.parametrize("key, value, message", [
    ("device", "gpu0", "device: 'gpu0' is not a device; use auto, cpu, cuda or cuda:N"),
    ("n_imgs", 0, "'n_imgs' must be >= 1, got 0"),
    ("clip_arch", "ViT-L/14-336", "clip_arch: unknown value 'ViT-L/14-336'; known: "),
    ("crf_backend", "gpu", "crf_backend: unknown value 'gpu'; known: auto, pydensecrf, torch"),
    ("imagenet_split", "test", "'imagenet_split' must be one of ['train', 'val'], got 'test'"),
])
def test_yaml_mapping_and_keyword_arguments_give_the_same_error(tmp_path, key, value, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, key: value}))
    errors = []
    for load in (lambda: reco_config(path), lambda: reco_config({**BASE, key: value}),
                 lambda: reco_config(BASE, {key: value}), lambda: ReCo.from_settings(**BASE, **{key: value})):
        with pytest.raises(ConfigError) as caught:
            load()
        errors.append(str(caught.value))
    assert errors[0] == f"{path}: {errors[1]}"  # a file's errors name the file, then the same line
    assert errors[1] == errors[2] == errors[3] and errors[1].startswith(message), errors


def test_the_device_argument_of_the_api_is_checked_as_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^device: 'gpu0' is not a device"):
        ReCo.from_settings(**BASE, device="gpu0")  # the API's own device argument, not torch's RuntimeError
    with pytest.raises(ConfigError, match=r"^device: 'gpu0' is not a device"):
        RecoConfig(dir_ckpt="x", device="gpu0")  # a config built directly in Python is checked too


def test_overrides_merge_mappings_and_keep_the_rest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, "weights": {"clip": "a.pt", "encoder": "e.pt"}, "n_imgs": 7}))
    config = reco_config(path, {"weights": {"encoder": "other.pt"}, "image_short_side": None})
    assert (config.weights.clip, config.weights.encoder, config.n_imgs) == ("a.pt", "other.pt", 7)
    assert config.image_short_side is None  # an explicit None from the API is a value, not "not given"
    assert reco_config(config) is config
    plus = reco_plus_config({"dir_ckpt": "c", "dir_dataset": "d", "dataset_name": "cityscapes"}, {"iter_train": 3})
    assert isinstance(plus, RecoPlusConfig) and plus.iter_train == 3
    with pytest.raises(ConfigError, match="segmentor_name: unknown value 'x'"):
        reco_plus_config({"dir_ckpt": "c", "dir_dataset": "d", "dataset_name": "cityscapes", "segmentor_name": "x"})


@pytest.mark.parametrize("cls", [RecoConfig, RecoPlusConfig], ids=lambda c: c.__name__)
def test_every_key_is_declared_with_a_doc(cls):
    def keys(cls):
        for f, tp in declared(cls):
            assert f.metadata.get("doc"), f"{cls.__name__}.{f.name} has no doc"
            if dataclasses.is_dataclass(tp):
                yield from keys(tp)
    list(keys(cls))


def test_fallbacks_are_declared_once():
    from utils.config import effective

    assert effective(RecoConfig(dir_ckpt="x", n_workers=3), "crf_workers") == 3
    assert effective(RecoConfig(dir_ckpt="x", n_workers=3, crf_workers=1), "crf_workers") == 1
    assert effective(RecoPlusConfig(dir_ckpt="x", dir_dataset="y", dataset_name="cityscapes"), "crf_workers") == 8


def test_clip_precision_auto_is_resolved_in_one_place():
    from utils.config import resolve_clip_precision

    assert resolve_clip_precision("auto", "cuda") == "fp16" and resolve_clip_precision("auto", "cpu") == "fp32"
    assert resolve_clip_precision("bf16", "cpu") == "bf16"
