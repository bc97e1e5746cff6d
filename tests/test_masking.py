"""One mask everywhere: URLs, Ingres targets, free text and known passwords."""

from __future__ import annotations

import pytest

from bridge.masking import MASK, hide, mask_target, mask_url, redact
from bridge.settings import Settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://user:pw@host:5672/v", "amqp://user:***@host:5672/v"),
        ("amqps://u:p%40ss@h/", "amqps://u:***@h/"),
        ("amqp://user@host/", "amqp://user@host/"),
        ("amqp://host/", "amqp://host/"),
    ],
)
def test_mask_url(url: str, expected: str) -> None:
    assert mask_url(url) == expected


def test_mask_target() -> None:
    assert mask_target("@db1,tcp_ip,II[bob,s3cret]::sales") == f"@db1,tcp_ip,II[bob,{MASK}]::sales"
    assert mask_target("vnode::sales") == "vnode::sales"


def test_hide_and_redact() -> None:
    assert hide("login failed for s3cret", "s3cret") == "login failed for ***"
    assert hide("nothing", None) == "nothing"
    assert redact("at amqp://u:pw@h/ now") == "at amqp://u:***@h/ now"


def test_settings_and_logs_show_the_same_mask() -> None:
    url = "amqp://guest:pw-Secret@rabbit:5672/prod"
    settings = Settings.isolated({"amqp": {"url": url}})
    shown = {
        settings.amqp.url_masked,
        str(settings.amqp.url),
        settings.masked_dict()["amqp"]["url"],
        redact(url),
    }
    assert shown == {"amqp://guest:***@rabbit:5672/prod"}
