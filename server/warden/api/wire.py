"""Protobuf wire format for answers encoded from pre-encoded parts (api/answer.py for
Authorize, api/envoy_authz.py for Check). Parsers accept fields in any order and concatenated
submessage bytes, so joined parts decode to the message built field by field; each encoder's
unit test checks that against protobuf itself."""

from __future__ import annotations

_ONE_BYTE = [bytes((i,)) for i in range(0x80)]


def varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE[value]
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Field keys (number << 3 | wire type) of the fields numbered 1-8: varint and length-delimited.
_VARINT_KEY = [varint(n << 3) for n in range(9)]
_BYTES_KEY = [varint(n << 3 | 2) for n in range(9)]


def field(number: int, data: bytes) -> bytes:
    """A length-delimited field (a string or a submessage)."""
    return _BYTES_KEY[number] + varint(len(data)) + data


def number(number: int, value: int) -> bytes:
    """A varint field; nothing for 0, as proto3 writes it."""
    return _VARINT_KEY[number] + varint(value) if value else b""
