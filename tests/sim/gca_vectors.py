"""Bytes Actian's real client library (Actian Client 1.5) sent to the simulator,
copied from its GCA trace (II_GCA_TRACE=5), for tests that run without it.
"""

from __future__ import annotations


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# Transport connect request, without its 2-byte packet length (trace "Sending 85 bytes").
CR = _hex(
    """
    54 E0 00 00 00 00 10 C1 02 00 00 C2 02 00 00 C0 01 0D C4 01 04 C8 34 0D 32 16 01 02
    C1 2D 07 05 FF FF FF FF FF FF FF FF FF FF FF FF FF FF FF FF 03 03 00 01 00 01 00 14
    00 00 03 11 FF FF FF FF 00 01 00 07 06 09 00 04 00 01 C9 C7 08 2B B1 00 CD 33 60 24 7D
    """
)

# The transport connect confirm it accepted (trace "Received 21 bytes").
CC = _hex("14 D0 00 00 00 07 20 C1 02 00 00 C2 02 00 00 C0 01 0D C4 01 02")

# Data TPDU with the session connect of `@127.0.0.1,tcp_ip,PORT[ingres,secret]::demodb`
# (trace "Sending 157 bytes").
CN = _hex(
    """
    04 F0 00 07 80 0D 96 16 01 02 C1 6E 00 00 00 00 07 05 FF FF FF FF FF FF FF FF FF FF
    FF FF FF FF FF FF 03 03 00 01 00 01 00 14 00 00 03 11 FF FF FF FF 00 00 00 00 06 09
    00 06 64 65 6D 6F 64 62
    """
    + " 00" * 58
    + " C2 FF 00 1F 13 02 00 00 16 02 00 49 0A FF 00 07 69 6E 67 72 65 73 00"
    + " 0B FF 00 08 C5 DE C0 E9 C1 11 B4 57"
)
ARCHITECTURE = _hex("03 03 00 01 00 01 00 14 00 00 03 11 FF FF FF FF")

# Data TPDU with its GCA_MD_ASSOC (trace "Sending 196 bytes").
MD_ASSOC = _hex(
    """
    04 F0 00 07 80 01 00 03 02 00 B9 05 00 00 00 03 01 00 00 1E 00 00 00 00 00 00 00 04
    00 00 00 02 00 00 00 13 01 00 00 14 00 00 00 00 00 00 00 03 00 00 00 47 4D 54 01 02
    00 00 14 00 00 00 00 00 00 00 06 00 00 00 64 65 6D 6F 64 62 00 04 00 00 14 00 00 00
    00 00 00 00 4E 00 00 00 75 73 65 72 3D 27 72 6F 6F 74 27 2C 68 6F 73 74 3D 27 76 6D
    27 2C 74 74 79 3D 27 3F 27 2C 70 69 64 3D 32 34 36 34 30 2C 63 6F 6E 6E 3D 27 40 31
    32 37 2E 30 2E 30 2E 31 2C 74 63 70 5F 69 70 2C 34 36 32 31 33 3A 3A 64 65 6D 6F 64
    62 27 10 02 00 00 14 00 00 00 00 00 00 00 0A 00 00 00 69 6E 67 72 65 73 64 61 74 65
    """
)

# Data TPDUs with GCA_QUERY: what IIapi_autocommit sends, then `select 1`.
QUERY_AUTOCOMMIT = _hex(
    """
    04 F0 00 07 80 01 00 03 0D 00 26 02 00 00 00 00 00 00 00 33 00 00 00 00 00 00 00 12
    00 00 00 73 65 74 20 61 75 74 6F 63 6F 6D 6D 69 74 20 6F 6E 00
    """
)
QUERY_SELECT_1 = _hex(
    """
    04 F0 00 07 80 01 00 03 0D 00 1D 02 00 00 00 31 00 00 00 33 00 00 00 00 00 00 00 09
    00 00 00 73 65 6C 65 63 74 20 31 00
    """
)

# Encrypted passwords from session connects: (user, password, session mask or
# None, bytes sent). The mask is the client's CR mask XOR the server's CC mask.
PASSWORDS = [
    ("ingres", "secret", None, _hex("c5dec0e9c111b457")),
    ("ingres", "secret", None, _hex("256fcd17420fe724")),
    ("bob", "correct horse battery", None, _hex(
        "7521e84ab79ad419fcc457dfd4c3b5e0b9c7b371d10bca6ac66ad6cf7d672d83"
    )),
    ("dbevent_bridge_user", "p", None, _hex("9500d79a8c2001e0")),
    (
        "ingres",
        "secret",
        bytes(
            a ^ b
            for a, b in zip(_hex("f2b0b8f9fe247557"), _hex("0102030405060708"), strict=True)
        ),
        _hex("1038eddd16d0d03e"),
    ),
]  # fmt: skip
