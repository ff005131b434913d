"""Typed settings read from ``SDC_*`` environment variables or a TOML config file.

Each process type (head node, workflow worker, agent) declares its settings once as a frozen
dataclass whose fields carry a line of help; :func:`load` fills it. Environment variables win
over the file named by ``SDC_CONFIG`` so a deployment can keep a file and override one value.
The file holds the settings of one kind of process: a key that is no setting of the
process reading it is refused, naming the key and the file (a typo would otherwise
leave the default in force without a word).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

T = TypeVar("T")

ENV_PREFIX = "SDC_"


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def setting(default: Any, help: str) -> Any:  # noqa: A002 - "help" is the natural name here
    """Declare one setting with its default and a line of help for ``sdc config``."""
    return dataclasses.field(default=default, metadata={"help": help})


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _convert(name: str, raw: Any, kind: Any) -> Any:
    if raw is None or (kind is not str and isinstance(raw, kind) and not isinstance(raw, bool)):
        return raw
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(f"expected true or false, got {raw!r}")
        if kind in (int, float, str):
            return kind(raw)
        if kind is Path:
            return Path(str(raw)).expanduser()
    except ValueError as exc:
        raise SettingsError(f"{env_name(name)}: {exc}") from exc
    return raw


def _file_values(cls: type, environ: Mapping[str, str]) -> dict[str, Any]:
    path = environ.get(ENV_PREFIX + "CONFIG")
    if not path:
        return {}
    try:
        with open(path, "rb") as fh:
            values = {str(k).lower(): v for k, v in tomllib.load(fh).items()}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"SDC_CONFIG={path}: {exc}") from exc
    _refuse_unknown(cls, values, path)
    return values


def _refuse_unknown(cls: type, values: Mapping[str, Any], path: str) -> None:
    """A key that is no setting of ``cls`` is most likely a typo, which would otherwise leave
    the default in force without a word. So a file serves one kind of process (head node or
    agent), which knows every key in it."""
    known = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        named = ", ".join(_with_hint(key, known) for key in unknown)
        raise SettingsError(f"SDC_CONFIG={path}: unknown key{'s' if len(unknown) > 1 else ''} "
                            f"{named}: no setting of {cls.__name__} (`sdc config` lists them)")


def _with_hint(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return repr(key) + (f" (did you mean {close[0]!r}?)" if close else "")


def load(cls: type[T], environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """Build ``cls`` from defaults, then the config file, then the environment, then overrides."""
    environ = os.environ if environ is None else environ
    from_file = _file_values(cls, environ)
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        kind = hints[field.name]
        kind = next((a for a in getattr(kind, "__args__", ()) if a is not type(None)), kind)
        if field.name in overrides and overrides[field.name] is not None:
            raw = overrides[field.name]
        elif env_name(field.name) in environ:
            raw = environ[env_name(field.name)]
        elif field.name in from_file:
            raw = from_file[field.name]
        else:
            continue
        values[field.name] = _convert(field.name, raw, kind)
    return cls(**values)


def to_environ(settings: Any) -> dict[str, str]:
    """The ``SDC_*`` variables that make :func:`load` in another process give ``settings``."""
    env: dict[str, str] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, bool):
            env[env_name(field.name)] = "true" if value else "false"
        elif value is not None:
            env[env_name(field.name)] = str(value)
    return env


def describe(cls: type) -> list[tuple[str, str, str]]:
    """(variable, default, help) for every setting, for ``sdc config`` and the README."""
    return [
        (env_name(f.name), repr(f.default), f.metadata.get("help", ""))
        for f in dataclasses.fields(cls)
    ]
