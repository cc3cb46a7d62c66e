"""Config names checked against the registries right after the config loads, before anything runs.

A typo such as `clip_arch: ViT-L/14-336` must fail at load with one line naming the key, the value and
the known names, not after minutes of work or after reusing a cached file made with another setting.
utils/config.py cannot do this itself (utils/ imports nothing of the project), so both entry points
call `check_reco_names` / `check_reco_plus_names` right after `load_*_config`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, NamedTuple, Optional

from utils.config import ConfigError, RecoConfig, RecoPlusConfig
from utils.naming import file_name_problem


def check_name(key: str, value: Optional[str], known: Iterable[str], allow_none: bool = False,
               accepts: Optional[Callable[[str], bool]] = None) -> None:
    """ConfigError "key: unknown value 'x'; known: a, b, c" unless `value` is one of `known` (or
    `accepts(value)`, for registries that also take other spellings, e.g. open_clip's model names)."""
    if value is None and allow_none:
        return
    known = list(known)
    if value in known or (isinstance(value, str) and accepts is not None and accepts(value)):
        return
    raise ConfigError(f"{key}: unknown value {value!r}; known: {', '.join(known)}")


class _Row(NamedTuple):
    value: Callable[[Any], Optional[str]]
    known: Callable[[], Iterable[str]]
    allow_none: bool = False
    accepts: Optional[Callable[[str], bool]] = None


# The registries are imported when checked: each lives with what it registers (datasets/, networks/, utils/).
def _benchmarks() -> Iterable[str]:
    from datasets.registry import benchmark_names

    return benchmark_names()


def _encoders() -> Iterable[str]:
    from networks.encoder_registry import encoder_names

    return encoder_names()


def _clips(dense: bool) -> Callable[[], Iterable[str]]:
    def names() -> Iterable[str]:
        from networks.clip_registry import clip_names

        return clip_names(dense)
    return names


def _clip_alias(dense: bool) -> Callable[[str], bool]:
    def accepts(value: str) -> bool:  # open_clip's spelling of a registered CLIP, e.g. ViT-L-14-336
        from networks.clip_registry import find_clip

        spec = find_clip(value)
        return spec is not None and (spec.dense or not dense)
    return accepts


def _crf_backends() -> Iterable[str]:
    from utils.crf import crf_backend_names

    return crf_backend_names()


def _segmentors() -> Iterable[str]:
    from networks.deeplab import SEGMENTOR_NAMES

    return SEGMENTOR_NAMES


_RECO_KEYS: dict[str, _Row] = {
    "dataset_name": _Row(lambda c: c.dataset_name, _benchmarks, allow_none=True),
    "encoder_arch": _Row(lambda c: c.encoder_arch, _encoders),
    "clip_arch": _Row(lambda c: c.clip_arch, _clips(False), accepts=_clip_alias(False)),
    "dense_clip_arch": _Row(lambda c: c.dense_clip_arch, _clips(True), accepts=_clip_alias(True)),
    "crf_backend": _Row(lambda c: c.crf_backend, _crf_backends),
}
_RECO_PLUS_KEYS: dict[str, _Row] = {
    "dataset_name": _Row(lambda c: c.dataset_name, _benchmarks),
    "segmentor_name": _Row(lambda c: c.segmentor_name, _segmentors),
    "crf_backend": _Row(lambda c: c.crf_backend, _crf_backends),
}


def _check(config: Any, rows: dict[str, _Row]) -> None:
    for key, row in rows.items():
        check_name(key, row.value(config), row.known(), row.allow_none, row.accepts)


def check_reco_names(config: RecoConfig) -> RecoConfig:
    """Every registry-backed key of a ReCo config names a registered entry, and `suffix` can be part of
    a file name; returns the config."""
    _check(config, _RECO_KEYS)
    check_suffix(config.suffix)
    return config


SUFFIX_MAX_BYTES = 64


def check_suffix(suffix: str) -> None:
    """`suffix` (also --suffix) ends up in run-directory and reference-pickle names: it must not name
    another folder ('../x') nor make a name longer than file systems allow."""
    problem = file_name_problem(suffix, SUFFIX_MAX_BYTES)
    if problem:
        raise ConfigError(f"suffix (--suffix): {suffix!r} becomes part of run-directory and pickle names, but "
                          f"{problem}; use letters, digits, '-' and '_'")


def check_reco_plus_names(config: RecoPlusConfig) -> RecoPlusConfig:
    """Every registry-backed key of a ReCo+ config names a registered entry; returns the config."""
    _check(config, _RECO_PLUS_KEYS)
    return config
