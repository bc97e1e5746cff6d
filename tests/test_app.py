"""The wiring's pure helpers: what a target names, and the CloudEvents source of its events."""

from __future__ import annotations

import pytest

from bridge.app import cloudevents_sources, database_of, source_of


@pytest.mark.parametrize(
    ("target", "source"),
    [
        ("salesdb", "ingres:///salesdb"),
        ("prodnode::salesdb", "ingres://prodnode/salesdb"),
        ("prodnode::salesdb/ingres", "ingres://prodnode/salesdb"),
        ("@db1.example.com,tcp_ip,21064[bridge,s3cret]::salesdb",
         "ingres://db1.example.com:21064/salesdb"),
        ("@db1.example.com,tcp_ip,II::salesdb", "ingres://db1.example.com/salesdb"),
        ("prodnode::my db", "ingres://prodnode/my%20db"),
    ],
)
def test_source_names_the_server_and_database_never_the_password(
    target: str, source: str
) -> None:
    assert source_of(target) == source
    assert "s3cret" not in source_of(target)


def test_sources_by_database() -> None:
    targets = ["a::sales", "@b,tcp_ip,1[u,p]::stock"]
    assert cloudevents_sources(targets) == {
        "sales": "ingres://a/sales", "stock": "ingres://b:1/stock"}
    assert [database_of(t) for t in targets] == ["sales", "stock"]
