"""Walking an exception's chain of causes: the one place that does it."""

from __future__ import annotations

from collections.abc import Iterator


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then each exception it wraps (`__cause__`, else `__context__`), each once.

    Libraries re-raise under their own types (aiormq turns an `ssl` error into
    AMQPConnectionError), so what went wrong is often a few links down. Chains
    can loop (an exception can become the context of its own cause), hence the
    visited set.
    """
    visited: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in visited:
        visited.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
