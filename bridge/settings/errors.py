"""Problems with the settings, told in the operator's terms.

`SettingsError` carries one line per problem, each naming the setting by its
environment variable and dotted path (`env_name`, `problem`). `problems_of`
turns a pydantic ValidationError into such lines: pydantic's wording put in the
operator's terms, a did-you-mean for a misspelt name, never a secret's input.
A whole-section check raises `FieldError` to pin its problem on one field.
"""

from __future__ import annotations

import difflib
import re

from pydantic import (
    BaseModel,
    ValidationError,
)
from pydantic_core import ErrorDetails

from bridge.settings.tree import keyed_sections, leaf_fields, model_at

ENV_PREFIX = "BRIDGE_"
NESTED_DELIMITER = "__"

# Settings whose input must never be echoed in an error message.
_SECRET_PATHS = frozenset(
    {("ingres", "password"), ("ingres", "target"), ("ingres", "targets"),
     ("ingres", "databases"), ("amqp", "url")}
)


class SettingsError(Exception):
    """The settings are not usable; `problems` holds one line per problem.

    Each line names the setting by its environment variable and dotted path,
    e.g. ``BRIDGE_AMQP__EXCHANGE_TYPE (amqp.exchange_type): must be one of
    direct, fanout, headers, topic; got 'fnout'``. No line contains a secret.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class FieldError(ValueError):
    """A problem found by a whole-model check, pinned to one field of that model.

    Pydantic keeps the exception object in the error's context, which lets the
    renderer name the field instead of the whole section.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def env_name(path: tuple[str, ...]) -> str:
    """The environment variable of a setting path: ('amqp', 'url') → BRIDGE_AMQP__URL."""
    return ENV_PREFIX + NESTED_DELIMITER.join(part.upper() for part in path)


# --------------------------------------------------------------------------- error rendering


def problem(path: tuple[str, ...], message: str) -> str:
    """One line of a SettingsError: ENV_NAME (dotted.path): message."""
    return f"{env_name(path)} ({'.'.join(path)}): {message}"


def _setting_path(root: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[str, ...]:
    """The setting an error location points at, without list indexes and union tags."""
    path: list[str] = []
    for part in loc:
        if not isinstance(part, str):
            continue
        if keyed_sections(root, tuple(path)) is not None:
            path.append(part)  # a section's name, e.g. a database's
            continue
        model = model_at(root, tuple(path))
        if model is None:
            break
        path.append(part)
        if part not in model.model_fields:
            break
    return tuple(path)


def _suggestion(root: type[BaseModel], path: tuple[str, ...]) -> tuple[str, ...] | None:
    """The known setting that `path` most likely misspells, looking below its parent.

    Names are compared flattened ('loglevel' against 'log_level'), so a
    missing level separator is recognised too.
    """
    parent, key = path[:-1], path[-1]
    candidates: dict[str, tuple[str, ...]] = {}
    for leaf, _field in leaf_fields(root):
        for depth in range(len(parent) + 1, len(leaf) + 1):
            if leaf[: len(parent)] == parent:
                candidates.setdefault("_".join(leaf[len(parent) : depth]), leaf[:depth])
    close = difflib.get_close_matches(key, list(candidates), n=1)
    close = close or [name for name in candidates if name.startswith(key)][:1]
    return candidates[close[0]] if close else None


def _unknown_setting(root: type[BaseModel], path: tuple[str, ...]) -> str:
    if path in (("config_file",), ("secrets_dir",)):
        return "is read from the process environment only, not from .env; remove it there"
    suggestion = _suggestion(root, path)
    if suggestion is not None:
        return f"unknown setting; did you mean {'.'.join(suggestion)} ({env_name(suggestion)})?"
    model = model_at(root, path[:-1])
    known = list(model.model_fields) if model is not None else []
    return f"unknown setting; known here: {', '.join(known)}"


_SCALARS = (str, int, float, bool)


# pydantic's words for its own types, by error type, in the operator's terms.
_MESSAGES = {
    "bool_parsing": "must be true or false (also: yes/no, on/off, 1/0)",
    "byte_size": "must be a size in bytes, or with a unit (KB, MB, GB, TB: powers of 1000; "
    "KiB, MiB, GiB, TiB: powers of 1024)",
    "path_not_file": "must name an existing file",
    "url_scheme": "must start with amqp:// or amqps://",
    "url_type": "must be a valid string",
}
_MESSAGES["byte_size_unit"] = _MESSAGES["byte_size"]
# What a URL failed on (pydantic-core's `error` context: a fixed set of reasons).
_URL_REASONS = {
    "empty host": "has no host; expected amqp://USER:PASSWORD@HOST:PORT/VHOST",
    "invalid port number": "has an invalid port (expected a number 1-65535)",
    "relative URL without a base": "must start with amqp:// or amqps://",
}


def _message(root: type[BaseModel], error: ErrorDetails, path: tuple[str, ...]) -> str:
    kind = error["type"]
    context = error.get("ctx") or {}
    if kind == "value_error":
        return str(context.get("error", error["msg"]))
    if kind == "extra_forbidden":
        return _unknown_setting(root, path)
    if kind == "missing":
        return "is required"
    if kind == "url_parsing":
        reason = str(context.get("error", ""))
        return _URL_REASONS.get(reason, f"is not a valid URL: {reason}")
    message = _MESSAGES.get(kind) or re.sub(
        r"^(Input|String|List|Value) should ", "must ", error["msg"]
    )
    value = error.get("input")
    if path not in _SECRET_PATHS and isinstance(value, _SCALARS):
        message += f"; got {value!r}"
    return message


def problems_of(root: type[BaseModel], exc: ValidationError) -> list[str]:
    """One line per error: ENV_NAME (dotted.path): message. Inputs of secrets are never shown."""
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        path = _setting_path(root, error["loc"])
        context_error = (error.get("ctx") or {}).get("error")
        if isinstance(context_error, FieldError):
            path = (*path, *context_error.field.split("."))
        problems.append(problem(path, _message(root, error, path)) if path else error["msg"])
    return problems


