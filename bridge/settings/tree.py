"""Walking the settings tree by path: the section model at ('amqp', 'tls'), every leaf.

Error messages (errors.py) and the command-line options (cli.py) name settings
by path; the root model is passed in, so nothing here depends on `Settings`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo


def _section_type(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _keyed_type(annotation: object) -> type[BaseModel] | None:
    """The section model of a table of sections by name (ingres.databases), else None."""
    return _section_type(get_args(annotation)[1]) if get_origin(annotation) is dict else None


def model_at(root: type[BaseModel], path: tuple[str, ...]) -> type[BaseModel] | None:
    """The section model found at `path` below `root`, or None if `path` is no section.

    In a table of sections by name (ingres.databases), a name leads to its section.
    """
    model: type[BaseModel] | None = root
    keyed: type[BaseModel] | None = None  # the next part is a name in such a table
    for part in path:
        if keyed is not None:
            model, keyed = keyed, None
            continue
        field = model.model_fields.get(part) if model is not None else None
        annotation = field.annotation if field is not None else None
        keyed, model = _keyed_type(annotation), _section_type(annotation)
        if model is None and keyed is None:
            return None
    return None if keyed is not None else model


def keyed_sections(
    root: type[BaseModel], path: tuple[str, ...]
) -> type[BaseModel] | None:
    """The model of the values when `path` is a table of sections by name (ingres.databases)."""
    parent = model_at(root, path[:-1]) if path else None
    field = parent.model_fields.get(path[-1]) if parent is not None else None
    return _keyed_type(field.annotation) if field is not None else None


def leaf_fields(
    model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    """Every leaf setting below `model` as (path, field), in declaration order.

    E.g. (('amqp', 'url'), field) for Settings.
    """
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from leaf_fields(annotation, (*prefix, name))
        else:
            yield (*prefix, name), field


