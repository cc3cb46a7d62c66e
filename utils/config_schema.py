"""Generic mapping -> frozen dataclass: the declarations and checks behind utils.config.

A config key is declared once, as a dataclass field made by `key(...)`: its type (the annotation), its
default, its range or choices, a one-line doc, and optionally a value check, the registry its value must
name, or the key it falls back to when unset. Everything else reads these declarations: the loader's type
coercion and range checks (`build_dataclass`, `check_declared`), the registry-name checks of the library
(reco_api/config_checks.py), fallbacks (`effective`) and the README's tables (reco_api/config_docs.py).
Every error is a `ConfigError` naming the dotted key. The project's config classes live in utils.config.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import yaml


class ConfigError(ValueError):
    """A config key is unknown, missing, of the wrong type, or names a file that is not there."""


_COMPARISONS = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b}


def key(default: Any = dataclasses.MISSING, *, doc: str, default_factory: Any = dataclasses.MISSING,
        range: Optional[str] = None, check: Optional[Callable[[Any, str], Any]] = None,
        names: Optional[str] = None, fallback: Optional[str] = None, shown_default: Optional[str] = None,
        allowed: Optional[str] = None) -> Any:
    """A declared config key (a dataclass field).

    doc: one line, the key's meaning (the README's "meaning" column).
    range: ">= 1", "> 0" or "0..1" (inclusive); None values are not checked.
    check: (value, dotted key) -> anything; raises ConfigError for a bad value (e.g. the device names).
    names: the registry the value must name ("dataset", "encoder", "clip", "dense_clip", "crf_backend",
        "segmentor"), checked by reco_api.config_checks once the registries are importable.
    fallback: the key whose value is used when this one is None (see `effective`).
    shown_default / allowed: how the README shows the default / the allowed values where the declaration
        alone would not say it well (e.g. a default list, a check function).
    Choices come from a Literal annotation.
    """
    if range is not None:
        _parse_range(range)
    metadata = {"doc": doc, "range": range, "check": check, "names": names, "fallback": fallback,
                "shown_default": shown_default, "allowed": allowed}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def declared(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """(field, resolved type) of every key of the config class `cls`, in declaration order."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def effective(config: Any, name: str) -> Any:
    """The value of key `name`, or, when it is None and the key declares a fallback, the fallback key's
    (e.g. crf_workers unset -> n_workers)."""
    value = getattr(config, name)
    fallback = _field(type(config), name).metadata.get("fallback")
    return getattr(config, fallback) if value is None and fallback is not None else value


def _field(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def _parse_range(rule: str) -> tuple[str, float, float]:
    """'>= 1' -> ('>=', 1, _); '0..1' -> ('..', 0, 1)."""
    if ".." in rule:
        low, high = rule.split("..")
        return "..", float(low), float(high)
    operator, bound = rule.split()
    if operator not in _COMPARISONS:
        raise ValueError(f"unknown range rule {rule!r}")
    return operator, float(bound), float("nan")


def check_range(rule: str, value: Any, key_name: str) -> None:
    """ConfigError "'key' must be >= 1, got 0" (or "... must be in [0, 1], got 2") if `value` is outside.
    None and words (a key's `auto`) are not numbers: they are left to the key's type."""
    if value is None or isinstance(value, str):
        return
    operator, low, high = _parse_range(rule)
    if operator == "..":
        if not low <= value <= high:
            raise ConfigError(f"'{key_name}' must be in [{rule.replace('..', ', ')}], got {value}")
    elif not _COMPARISONS[operator](value, low):
        raise ConfigError(f"'{key_name}' must be {rule}, got {value}")


def check_declared(config: Any, prefix: str = "") -> None:
    """The ranges and value checks declared on the keys of `config` (nested configs included)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            check_declared(value, prefix + f.name + ".")
            continue
        if f.metadata.get("range") is not None:
            check_range(f.metadata["range"], value, prefix + f.name)
        if f.metadata.get("check") is not None and value is not None:
            f.metadata["check"](value, prefix + f.name)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            name = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if name in seen:
                raise ConfigError(f"key '{name}' is given twice (lines {seen[name]} and {line}); keep one")
            seen[name] = line
        return super().construct_mapping(node, deep=deep)


def shown_path(path: str | os.PathLike) -> str:
    """`path` as a message shows it: a relative path with the absolute one it stands for, since relative
    paths are taken from the working directory."""
    path = Path(path).expanduser()
    return str(path) if path.is_absolute() else f"{path} (= {path.absolute()}, relative to the working directory)"


def read_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """The top-level mapping of the YAML file `path`; errors name the file. A key given twice is an error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {shown_path(path)}")
    with open(path) as f:
        try:
            raw = yaml.load(f, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return raw


def load_yaml_dataclass(cls: type, path: str | os.PathLike, overrides: Optional[dict[str, Any]],
                        check: Callable[[Any], None] = lambda config: None,
                        other: Optional[tuple[type, str]] = None) -> Any:
    """`cls` built from the YAML file `path` (plus non-None `overrides`), then `check`ed; errors name the file.
    other: (another config class, what to say) when the file's keys are that class's rather than cls's
    (a ReCo+ config given to main_reco.py)."""
    raw = read_yaml_mapping(path)
    if other is not None:
        _check_not_other(cls, raw, *other)
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        config = build_dataclass(cls, raw, prefix="")
        check(config)
        return config
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _check_not_other(cls: type, raw: dict[str, Any], other: type, what: str) -> None:
    """ConfigError saying `what` when the file's unknown keys are all keys of `other`."""
    own = {f.name for f in dataclasses.fields(cls)}
    theirs = {f.name for f in dataclasses.fields(other)}
    unknown = sorted(set(map(str, raw)) - own)
    if unknown and set(unknown) <= theirs:
        shown = ", ".join(f"'{k}'" for k in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise ConfigError(f"this is {what} (its keys {shown} are not keys of this program's config)")


def build_dataclass(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    """`cls` from a mapping of its field names: unknown, missing or mistyped keys raise ConfigError naming
    the key. The declared ranges and checks run in the top-level class's __post_init__ (`check_declared`),
    so a config built directly in Python is checked too."""
    fields = {f.name: (f, tp) for f, tp in declared(cls)}
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), list(fields), n=1, cutoff=0.7)
        hint = f"did you mean '{prefix}{close[0]}'? " if close else ""
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}' ({hint}known keys: {', '.join(sorted(fields))})")
    values = {}
    for name, (f, tp) in fields.items():
        key_name = prefix + name
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing required key '{key_name}'")
            continue
        values[name] = _coerce(tp, raw[name], key_name)
    return cls(**values)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return build_dataclass(tp, value, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for candidate in inner[:-1]:  # e.g. Union[Literal["auto"], int]: the first type the value fits
            try:
                return _coerce(candidate, value, key)
            except ConfigError:
                pass
        return _coerce(inner[-1], value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"'{key}' must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"'{key}' must be a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return {_coerce(args[0], k, key): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} for '{key}'")
