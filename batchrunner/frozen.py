"""Frozen dataclasses made by the hundred thousand: :func:`assemble`.

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (it has to
get past the class's own ``__setattr__``), which is most of the cost of making one. Where a
hot path already holds every field's value — a ledger row, a plainly valid manifest row, the
plan's decision for a new job — the instance is made with its ``__dict__`` given whole.
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


def assemble(cls: type[T], fields: dict[str, Any]) -> T:
    """``cls(**fields)`` without ``__init__``, for a dataclass without ``__post_init__`` or
    field converters. ``fields`` must hold every field (it becomes the instance's ``__dict__``,
    not a copy of it): the tests of each caller compare the result with ``cls(**fields)``."""
    made = object.__new__(cls)
    object.__setattr__(made, "__dict__", fields)
    return made
