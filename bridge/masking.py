"""Hiding secrets in text we show: one mask, one helper per kind of secret.

Every place that shows a setting, logs a message or reports an error masks
with these helpers, so an operator sees the same `***` wherever a password
was, and a grep for `***` finds every masked spot.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = [
    "MASK",
    "hide",
    "mask_target",
    "mask_url",
    "redact",
    "target_has_credentials",
    "without_credentials",
]

MASK = "***"

# `scheme://user:password@` -> `scheme://user:***@`. The password part runs to
# the last '@' of the token (greedy, no whitespace), so that a password holding a
# raw, unescaped '@' is hidden whole rather than half.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]*:)\S*@")
# The `[user,password]` part of an Ingres connection target.
_TARGET_CREDENTIALS = re.compile(r"\[([^\],]*),([^\]]*)\]")


def mask_url(url: str) -> str:
    """`url` with the password in its user information replaced by ***."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not at or not colon:
        return url
    return parts._replace(netloc=f"{user}:{MASK}@{hostport}").geturl()


def mask_target(target: str) -> str:
    """The Ingres target with the password of a `[user,password]` part replaced by ***."""
    return _TARGET_CREDENTIALS.sub(lambda m: f"[{m.group(1)},{MASK}]", target)


def without_credentials(target: str) -> str:
    """The Ingres target with its `[user,password]` part removed."""
    return _TARGET_CREDENTIALS.sub("", target)


def target_has_credentials(target: str) -> bool:
    """Whether an Ingres target carries `[user,password]` itself."""
    return _TARGET_CREDENTIALS.search(target) is not None


def redact(text: str) -> str:
    """`text` with the password of every `scheme://user:password@` replaced by ***."""
    return _URL_PASSWORD.sub(rf"\1{MASK}@", text)


def hide(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` (a known password) replaced by ***."""
    return text.replace(secret, MASK) if secret else text
