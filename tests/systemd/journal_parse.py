"""A reader of journald's native datagram format, written from the protocol document.

Independent of edged.systemd.journal on purpose: a test that parsed with the encoder's own code
would agree with any encoding bug.
"""

from __future__ import annotations

import struct


def parse_fields(data: bytes) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    pos = 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        line = data[pos:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            pos = end + 1
        else:
            # binary form: KEY\n, u64 little-endian length, bytes, \n
            key = line
            (size,) = struct.unpack_from("<Q", data, end + 1)
            start = end + 1 + 8
            value = data[start : start + size]
            assert data[start + size : start + size + 1] == b"\n", "binary field not terminated"
            pos = start + size + 1
        fields.append((key.decode("ascii"), value.decode("utf-8")))
    return fields


def parse_entry(data: bytes) -> dict[str, str]:
    fields = parse_fields(data)
    entry = dict(fields)
    assert len(entry) == len(fields), f"duplicate fields in {fields}"
    return entry
