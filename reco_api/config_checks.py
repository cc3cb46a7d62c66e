"""The config loader of the library: one path for YAML files, mappings and keyword arguments.

`reco_config` / `reco_plus_config` read a config from a YAML file, a mapping of its keys or an already
built config, merge overrides (the command line's, or the Python API's keyword arguments), and check it:
types, ranges and value checks as declared on the keys (utils/config.py), then the names that must be
registered (`check_reco_names` / `check_reco_plus_names`), against the registries of datasets/, networks/
and utils/crf.py, which utils/ cannot import (networks/config_registries.py: main_reco_plus.py uses that
check too without reaching the ReCo stage that reco_api's package brings). Whatever the source, a bad value is the same one line
naming the key (prefixed by the file for a YAML file), e.g. "device: 'gpu0' is not a device; ...".
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

from networks.config_registries import check_config_names, check_name  # noqa: F401  (check_name: public here)
from utils.config import RecoConfig, RecoPlusConfig, config_to_dict
from utils.config_schema import ConfigError, build_dataclass, read_yaml_mapping

ConfigSource = Union[str, os.PathLike, Mapping[str, Any], RecoConfig, RecoPlusConfig]


def check_reco_names(config: RecoConfig) -> RecoConfig:
    """Every registry-backed key of a ReCo config names a registered entry; returns the config."""
    return check_config_names(config)


def check_reco_plus_names(config: RecoPlusConfig) -> RecoPlusConfig:
    """Every registry-backed key of a ReCo+ config names a registered entry; returns the config."""
    return check_config_names(config)


def reco_config(source: ConfigSource, overrides: Optional[Mapping[str, Any]] = None) -> RecoConfig:
    """A checked ReCo config from a YAML file, a mapping of its keys or a RecoConfig, with `overrides`
    replacing keys (a mapping value is merged into the key's mapping, e.g. weights={"encoder": ...})."""
    return _load(RecoConfig, source, overrides)


def reco_plus_config(source: ConfigSource, overrides: Optional[Mapping[str, Any]] = None) -> RecoPlusConfig:
    """As `reco_config`, for ReCo+."""
    return _load(RecoPlusConfig, source, overrides)


def _load(cls: type, source: ConfigSource, overrides: Optional[Mapping[str, Any]]) -> Any:
    if isinstance(source, cls) and not overrides:
        return _check_source(lambda: check_config_names(source), None)
    path = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        raw = read_yaml_mapping(path)
    elif isinstance(source, cls):
        raw = config_to_dict(source)
    elif isinstance(source, Mapping):
        raw = dict(source)
    else:
        raise TypeError(f"a config is a YAML path, a mapping or a {cls.__name__}, got {type(source).__name__}")
    for name, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(raw.get(name), Mapping):
            value = {**raw[name], **value}
        raw[name] = value

    def build() -> Any:
        return check_config_names(build_dataclass(cls, raw))
    return _check_source(build, path)


def _check_source(build: Callable[[], Any], path: Optional[Path]) -> Any:
    """build(); a ConfigError from a file's values is prefixed with the file."""
    try:
        return build()
    except ConfigError as error:
        if path is None:
            raise
        raise ConfigError(f"{path}: {error}") from None
