"""The registries a config key may name, and the check that a config's values are registered.

A key declares its registry once, on its field (`names="encoder"` in utils/config.py); this table says
which registry each such name is. The registries are read when checked: a test or a user may register
entries after import. An unregistered value is one ConfigError "key: unknown value 'x'; known: a, b".
The library's loader (reco_api/config_checks.py) and main_reco_plus.py call `check_config_names`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, NamedTuple, Optional

from datasets.registry import benchmark_names
from utils.config_schema import ConfigError
from utils.crf import crf_backend_names

from .clip_registry import clip_names, find_clip
from .deeplab import segmentor_names
from .encoder_registry import encoder_names


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


class _Registry(NamedTuple):
    known: Callable[[], Iterable[str]]
    accepts: Optional[Callable[[str], bool]] = None


def _clip_alias(dense: bool) -> Callable[[str], bool]:
    def accepts(value: str) -> bool:  # open_clip's spelling of a registered CLIP, e.g. ViT-L-14-336
        spec = find_clip(value)
        return spec is not None and (spec.dense or not dense)
    return accepts


# The registries a key may name (its declaration's `names=`).
REGISTRIES: dict[str, _Registry] = {
    "dataset": _Registry(benchmark_names),
    "encoder": _Registry(encoder_names),
    "clip": _Registry(lambda: clip_names(False), _clip_alias(False)),
    "dense_clip": _Registry(lambda: clip_names(True), _clip_alias(True)),
    "crf_backend": _Registry(crf_backend_names),
    "segmentor": _Registry(segmentor_names),
}


def registered_names(registry: str) -> tuple[str, ...]:
    """The names the registry `registry` (a key of REGISTRIES) holds now."""
    return tuple(REGISTRIES[registry].known())


def check_config_names(config: Any) -> Any:
    """Every key of `config` declared with `names=` holds a registered name (or None); returns the config."""
    for f in dataclasses.fields(config):
        registry = f.metadata.get("names")
        if registry is not None:
            row = REGISTRIES[registry]
            check_name(f.name, getattr(config, f.name), row.known(), allow_none=True, accepts=row.accepts)
    return config
