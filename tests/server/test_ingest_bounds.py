"""What one ingest call may make the server hold is bounded by what it sends.

IngestArrow: an Arrow IPC message decodes to no more than its size allows (body compression,
rows without bytes and dictionary bombs are refused whole, before decoding); StreamSteps:
a stream holds a bounded number of steps and bytes unlogged, however many trajectories it
names. Real server on port 0, real client."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from lake.errors import InvalidArgument
from proto.contextlake.v1 import lake_pb2 as pb
from server import ipc_bounds, service

from .conftest import run

DEADLINE_S = 30.0


def _ipc(table: pa.Table, compression: str | None = None, file: bool = False) -> bytes:
    sink = io.BytesIO()
    opts = pa.ipc.IpcWriteOptions(compression=compression)
    with (pa.ipc.new_file if file else pa.ipc.new_stream)(sink, table.schema,
                                                         options=opts) as w:
        w.write_table(table)
    return sink.getvalue()


def _send(client, data: bytes) -> Any:
    return client.call(client.ingest.IngestArrow, pb.IngestArrowRequest(arrow_ipc=data))


def _refused(client, data: bytes) -> InvalidArgument:
    before = client.stats()["submitted_lsn"]
    with pytest.raises(InvalidArgument) as e:
        _send(client, data)
    assert client.stats()["submitted_lsn"] == before  # refused whole: nothing logged
    return e.value


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
@pytest.mark.parametrize("file", [False, True], ids=["stream", "file"])
def test_compressed_ipc_is_refused_before_it_is_decoded(client, codec, file):
    """The QA's bomb: a few KiB of compressed IPC stating 8 MiB (GBs in the report)."""
    bomb = pa.table({"trajectory_id": ["x"], "task": ["a" * (8 << 20)]})
    data = _ipc(bomb, codec, file)
    assert len(data) < 64 << 10
    err = _refused(client, data)
    assert err.field == "arrow_ipc"
    assert "compression" in err.message and "uncompressed" in err.message
    assert "grpc.Compression" in err.message


def test_a_compressed_dictionary_batch_is_seen_too():
    table = pa.table({"trajectory_id": ["a", "b"],
                      "task": pa.array(["t", "t"]).dictionary_encode()})
    kinds = {m.type: ipc_bounds._compressed(m.metadata.to_pybytes())
             for m in pa.ipc.MessageReader.open_stream(pa.py_buffer(_ipc(table, "zstd")))}
    assert kinds == {"schema": False, "dictionary": True, "record batch": True}
    plain = {m.type: ipc_bounds._compressed(m.metadata.to_pybytes())
             for m in pa.ipc.MessageReader.open_stream(pa.py_buffer(_ipc(table)))}
    assert not any(plain.values())


def test_our_client_and_uncompressed_ipc_still_land(client):
    """The client sends uncompressed streams (``arrow_to_ipc``); a file, and a table with a
    dictionary-encoded column (a pandas category), land as before."""
    table = pa.Table.from_pylist([run("c1"), run("c2")])
    assert client.ingest_arrow(table).accepted == 2
    assert _send(client, _ipc(pa.Table.from_pylist([run("f1")]), file=True)).accepted == 1
    cat = pa.Table.from_pylist([run(f"d{i}") for i in range(50)])
    cat = cat.set_column(cat.schema.get_field_index("agent"), "agent",
                         cat["agent"].dictionary_encode())
    r = client.ingest_arrow(cat)
    assert (r.accepted, r.rejects) == (50, [])
    assert client.get_trajectory("d7", min_lsn=r.lsn)["agent"] == "bot"


def test_rows_without_bytes_are_refused(client):
    """A null-typed column has no buffers: 232 bytes once held 5M rows (21 GB to reject)."""
    err = _refused(client, _ipc(pa.table({"trajectory_id": pa.nulls(1_000_000)})))
    assert err.field == "arrow_ipc" and "1000000 rows in" in err.message


def test_a_dictionary_that_decodes_to_too_much_is_refused(client):
    """One 64 KiB task used 2,000 times: ~200 KB sent, 128 MiB decoded."""
    uses = 2000
    task = pa.DictionaryArray.from_arrays(pa.array([0] * uses, pa.int16()),
                                          pa.array(["t" * (64 << 10)]))
    data = _ipc(pa.table({"trajectory_id": [f"b{i}" for i in range(uses)], "task": task}))
    assert len(data) < 256 << 10
    err = _refused(client, data)
    assert err.field == "task" and "dictionary_decode" in err.message
    nested = pa.table({"trajectory_id": [f"n{i}" for i in range(uses)],
                       "steps": pa.array([[{"name": "s" * (64 << 10)}]] * uses)})
    steps = nested["steps"].combine_chunks()
    names = steps.flatten().field("name").dictionary_encode()
    nested = nested.set_column(1, "steps", pa.ListArray.from_arrays(
        steps.offsets, pa.StructArray.from_arrays([names], ["name"])))
    assert _refused(client, _ipc(nested)).field == "steps"


def _many_trajectories(client, monkeypatch, n: int, step: dict[str, Any],
                       **bounds: int) -> list[int]:
    """Stream one step for each of ``n`` started trajectories; after them, wait until the
    server logs a group while the stream is still open. The sizes of the groups logged."""
    for name, value in bounds.items():
        monkeypatch.setattr(service, name, value)
    for i in range(n):
        client.start("t", trajectory_id=f"s{i}")
    logged: list[int] = []
    some = threading.Event()
    real = service.IngestServicer._log_group

    def log_group(self, tid, steps, offset, totals):
        logged.append(len(steps))
        some.set()
        return real(self, tid, steps, offset, totals)

    monkeypatch.setattr(service.IngestServicer, "_log_group", log_group)

    def messages() -> Iterator[pb.StreamStepsRequest]:
        for i in range(n):
            yield pb.StreamStepsRequest(trajectory_id=f"s{i}", steps=[pb.Step(index=0,
                                                                               **step)])
        assert some.wait(DEADLINE_S), "the stream held every step until it ended"

    r = client.call(client.ingest.StreamSteps, messages())
    assert r.accepted == n and not r.rejects
    return logged


def test_a_stream_of_many_trajectories_holds_a_bounded_number_of_steps(client, monkeypatch):
    logged = _many_trajectories(client, monkeypatch, 40, {"kind": "tool", "name": "x"},
                                STREAM_HELD_STEPS=8)
    assert sum(logged) == 40 and max(logged) == 1


def test_a_stream_of_big_steps_holds_a_bounded_number_of_bytes(client, monkeypatch):
    logged = _many_trajectories(client, monkeypatch, 6, {"kind": "tool", "name": "x",
                                                         "input": "i" * (200 << 10)},
                                STREAM_HELD_BYTES=500 << 10)
    assert sum(logged) == 6
    got = client.get_trajectory("s5", min_lsn=client.stats()["submitted_lsn"])
    assert got["n_steps"] == 1
