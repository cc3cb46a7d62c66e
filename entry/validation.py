"""Config names checked against the registries right after the config loads, before anything runs.

A typo such as `clip_arch: ViT-L/14-336` must fail at load with one line naming the key, the value and
the known names, not after minutes of work or after reusing a cached file made with another setting.
utils/config.py cannot do this itself (utils/ imports nothing of the project), so both entry points
call `check_reco_names` / `check_reco_plus_names` right after `load_*_config`.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

from utils.config import ConfigError, RecoConfig, RecoPlusConfig


def check_name(key: str, value: Optional[str], known: Iterable[str], allow_none: bool = False) -> None:
    """ConfigError "key: unknown value 'x'; known: a, b, c" unless `value` is one of `known`."""
    if value is None and allow_none:
        return
    known = list(known)
    if value not in known:
        raise ConfigError(f"{key}: unknown value {value!r}; known: {', '.join(known)}")


def _benchmark_names() -> list[str]:
    from datasets.registry import benchmark_names

    return list(benchmark_names())


def _encoder_names() -> list[str]:
    from networks.encoder_registry import encoder_names

    return list(encoder_names())


# key -> (config attribute reader, known-names provider, may be unset); one row per registry-backed key.
_RECO_KEYS: dict[str, tuple[Callable[[RecoConfig], Optional[str]], Callable[[], Iterable[str]], bool]] = {
    "dataset_name": (lambda c: c.dataset_name, _benchmark_names, True),
    "encoder_arch": (lambda c: c.encoder_arch, _encoder_names, False),
}
_RECO_PLUS_KEYS: dict[str, tuple[Callable[[RecoPlusConfig], Optional[str]], Callable[[], Iterable[str]], bool]] = {
    "dataset_name": (lambda c: c.dataset_name, _benchmark_names, False),
}


def check_reco_names(config: RecoConfig) -> RecoConfig:
    """Every registry-backed key of a ReCo config names a registered entry; returns the config."""
    for key, (value, known, allow_none) in _RECO_KEYS.items():
        check_name(key, value(config), known(), allow_none)
    return config


def check_reco_plus_names(config: RecoPlusConfig) -> RecoPlusConfig:
    """Every registry-backed key of a ReCo+ config names a registered entry; returns the config."""
    for key, (value, known, allow_none) in _RECO_PLUS_KEYS.items():
        check_name(key, value(config), known(), allow_none)
    return config
