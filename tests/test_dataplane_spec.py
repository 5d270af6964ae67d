"""docs/dataplane.md is enough to read a real exchange: a decoder written from the page alone (struct and
the generated protobuf classes, nothing of memstore.dataplane) reads docs/dataplane-exchange.json, which
scripts/record_dataplane.py recorded between the client and a server; and the client's frames for the
same calls are byte for byte the recorded ones."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from memstore import dataplane as dp
from memstore.v1 import memstore_pb2 as pb

EXCHANGE = Path(__file__).resolve().parent.parent / "docs" / "dataplane-exchange.json"
META = {1: pb.DataHello, 2: pb.DataGet, 3: pb.DataPut, 4: pb.DataResult}


def frames(raw: bytes) -> list[tuple[int, int, object, bytes]]:
    """Split one direction's bytes into (kind, request id, meta message, data), as section 2 says."""
    out, pos = [], 0
    while pos < len(raw):
        magic, version, kind, request, meta_len, data_len = struct.unpack_from("<2sBBIIQ", raw, pos)
        assert (magic, version) == (b"MD", 1)
        pos += 20
        meta = META[kind].FromString(raw[pos : pos + meta_len])
        pos += meta_len
        out.append((kind, request, meta, raw[pos : pos + data_len]))
        pos += data_len
    assert pos == len(raw)
    return out


def test_the_recorded_exchange_reads_as_the_page_says() -> None:
    record = json.loads(EXCHANGE.read_text())
    sent = frames(bytes.fromhex(record["client"]))
    answered = frames(bytes.fromhex(record["server"]))
    assert [(k, r) for k, r, _, _ in sent] == [(1, 0), (3, 1), (2, 2)]  # HELLO, PUT, GET
    assert [(k, r) for k, r, _, _ in answered] == [(4, 0), (4, 1), (4, 2)]  # one RESULT each, same ids
    _, _, hello, _ = sent[0]
    assert len(hello.ticket) == 32  # type: ignore[attr-defined]
    assert answered[0][2].code == 0  # type: ignore[attr-defined]
    _, _, put, data = sent[1]
    assert put.namespace == "default"  # type: ignore[attr-defined]
    items = put.items  # type: ignore[attr-defined]
    assert [(i.key, i.size) for i in items] == [(b"greeting", 17), (b"vector", 16)]
    assert (items[1].array.dtype, list(items[1].array.shape)) == ("<f4", [4])
    assert data[:17] == b"hello, data plane"
    assert np.frombuffer(data[17:], "<f4").tolist() == [0.0, 1.0, 2.0, 3.0]
    assert answered[1][2].stored == 2  # type: ignore[attr-defined]
    _, _, get, _ = sent[2]
    assert list(get.keys) == [b"greeting", b"vector", b"absent"]  # type: ignore[attr-defined]
    _, _, result, values = answered[2]
    found = [(i.found, i.size) for i in result.items]  # type: ignore[attr-defined]
    assert found == [(True, 17), (True, 16), (False, 0)]
    assert result.items[1].array.dtype == "<f4"  # type: ignore[attr-defined]
    assert values == data  # the found values back to back, in key order


def test_the_client_writes_the_recorded_frames() -> None:
    record = json.loads(EXCHANGE.read_text())
    raw = bytes.fromhex(record["client"])
    hello_end = 20 + struct.unpack_from("<I", raw, 8)[0]
    items = [(b"greeting", b"hello, data plane", None), (b"vector", np.arange(4, dtype="<f4"), None)]
    (put,) = dp.put_frames("default", items, 1, 1 << 20)
    ((get, _),) = dp.get_frames("default", [b"greeting", b"vector", b"absent"], True, 2, 8)
    assert raw[hello_end:] == put.head + b"".join(bytes(d) for d in put.data) + get
