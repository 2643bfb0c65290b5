"""How much an Arrow IPC message may decode to: bounded by its own size.

``max_message_bytes`` bounds what a call sends, and an uncompressed IPC message is read in
place (its buffers are slices of the message). Three things decode to more than they
take in the message, and each is refused whole, before the rows are read:

- **IPC body compression** (LZ4, ZSTD): a compressed buffer states its own decoded size, so
  a few KiB could make the server allocate gigabytes. Checked in the messages' metadata
  before anything is decoded; gRPC's own compression (``grpc.Compression.Gzip``) is
  bounded by the message size, so that is the way to send less.
- **rows without bytes** (a column of type null, or run-end encoded): every row costs the
  server its Python record, so a message holds at most one row per ``MIN_ROW_BYTES``
  (a row's ``trajectory_id`` alone takes that: the offsets of a string column).
- **dictionary-encoded columns** decode to their values repeated: those values count at
  their decoded size, at most ``DECODED_FACTOR`` times the message (from a floor, so a
  small message may repeat a long task).

Arrow's own reader verifies the flatbuffers read here, so a message whose metadata this
module misreads is refused by it anyway.
"""

from __future__ import annotations

import struct

import pyarrow as pa
import pyarrow.compute as pc

from lake.errors import InvalidArgument

MIN_ROW_BYTES = 4
DECODED_FACTOR = 4
DECODED_FLOOR = 16 << 20  # a message under this may still decode to DECODED_FACTOR x it
_LEGACY_CODEC = b"ARROW:experimental_compression"  # Arrow 0.17's V4 custom metadata
_BATCH, _DICTIONARY = 3, 2  # MessageHeader union types (format/Message.fbs)
_BINARY = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary())
_GRPC = "let gRPC compress the call (grpc.Compression.Gzip), which the message size bounds"


def refuse_compression(data: bytes) -> None:
    """Refuse a stream or file whose record or dictionary batches use body compression,
    before any is decoded (an unreadable message is left to the reader to refuse)."""
    buf = pa.py_buffer(data)
    try:
        if data[:6] == b"ARROW1":  # the blocks the file reader reads, from its footer
            metas = [pa.ipc.read_message(buf.slice(at)).metadata for at in _file_blocks(data)]
        else:
            metas = [m.metadata for m in pa.ipc.MessageReader.open_stream(buf)]
        compressed = any(_compressed(m.to_pybytes()) for m in metas)
    except (pa.ArrowException, OSError, ValueError, IndexError, struct.error):
        return
    if compressed:
        raise InvalidArgument("arrow_ipc uses IPC body compression (LZ4 or ZSTD), which the "
                              "lake does not decode (its decoded size is unbounded): write it "
                              "uncompressed (pyarrow.ipc.new_stream's default) and " + _GRPC,
                              field="arrow_ipc")


def refuse_expansion(table: pa.Table, size: int) -> None:
    """Refuse a decoded table of more rows, or dictionary values, than ``size`` bytes of
    message can honestly hold."""
    if table.num_rows * MIN_ROW_BYTES > size:
        raise InvalidArgument(f"arrow_ipc holds {table.num_rows} rows in {size} bytes: a row "
                              f"takes at least {MIN_ROW_BYTES} (its trajectory_id), so some "
                              "column has no data (type null, or run-end encoded); send "
                              "plain columns, with a trajectory_id a row", field="arrow_ipc")
    limit, decoded = DECODED_FACTOR * max(size, DECODED_FLOOR), 0
    for name, column in zip(table.column_names, table.columns, strict=True):
        if not _has_dictionary(column.type):
            continue
        decoded += sum(_dictionary_bytes(chunk) for chunk in column.chunks)
        if decoded > limit:
            raise InvalidArgument(
                f"arrow_ipc's dictionary-encoded columns ({name} and any before it) decode to "
                f"more than {limit} bytes ({DECODED_FACTOR} x the message, at least "
                f"{DECODED_FLOOR}): send {name} decoded (pyarrow.compute.dictionary_decode, "
                f"or a plain column) and {_GRPC}", field=name)


def _has_dictionary(t: pa.DataType) -> bool:
    return pa.types.is_dictionary(t) or any(_has_dictionary(t.field(i).type)
                                            for i in range(t.num_fields))


def _dictionary_bytes(arr: pa.Array) -> int:
    """What the dictionary-encoded arrays in ``arr`` (nested too) take decoded: each value
    as often as it is used (values of a nested type: each use as the whole dictionary)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        values, uses = arr.dictionary, arr.indices
        if values.type in _BINARY:
            return int(pc.sum(pc.take(pc.binary_length(values), uses)).as_py() or 0)
        return len(uses) * (_width(values.type) or values.nbytes)
    if pa.types.is_struct(t) or pa.types.is_union(t):
        return sum(_dictionary_bytes(arr.field(i)) for i in range(t.num_fields))
    if pa.types.is_map(t):
        return _dictionary_bytes(arr.keys) + _dictionary_bytes(arr.items)
    if t.num_fields:  # the list types
        return _dictionary_bytes(arr.flatten())
    return 0


def _width(t: pa.DataType) -> int:
    """Bytes a value of a fixed-width type takes; 0 for the others."""
    try:
        return max(1, t.bit_width // 8)
    except ValueError:
        return 0


def _compressed(meta: bytes) -> bool:
    """Whether a message's metadata (a ``Message`` flatbuffer) says its body is compressed:
    a record batch's, or a dictionary batch's data's, ``compression`` field is set."""
    if _LEGACY_CODEC in meta:
        return True
    message = _ref(meta, 0)
    kind, header = _field(meta, message, 1), _field(meta, message, 2)
    if not (kind and header) or meta[kind] not in (_BATCH, _DICTIONARY):
        return False
    batch = _ref(meta, header)
    if meta[kind] == _DICTIONARY:  # DictionaryBatch { id, data: RecordBatch, isDelta }
        data = _field(meta, batch, 1)
        batch = _ref(meta, data) if data else 0
    return bool(batch and _field(meta, batch, 3))  # RecordBatch.compression


def _file_blocks(data: bytes) -> list[int]:
    """Where an IPC file's dictionary and record batches start: its ``Footer``'s blocks
    (``struct Block { offset: long; metaDataLength: int; bodyLength: long }``, 24 bytes)."""
    end = len(data) - 10  # ... footer, its int32 length, "ARROW1"
    footer = _ref(data, end - struct.unpack_from("<i", data, end)[0])
    out = []
    for i in (2, 3):  # Footer { version, schema, dictionaries, recordBatches }
        if at := _field(data, footer, i):
            vector = _ref(data, at)
            out += [struct.unpack_from("<q", data, vector + 4 + 24 * j)[0]
                    for j in range(struct.unpack_from("<I", data, vector)[0])]
    return out


def _field(buf: bytes, table: int, i: int) -> int:
    """Flatbuffers: where field ``i`` of the table at ``table`` is, 0 if it is absent."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    slot = 4 + 2 * i
    at = struct.unpack_from("<H", buf, vtable + slot)[0] \
        if slot < struct.unpack_from("<H", buf, vtable)[0] else 0
    return table + at if at else 0


def _ref(buf: bytes, at: int) -> int:
    """Flatbuffers: follow the offset stored at ``at``."""
    return at + struct.unpack_from("<I", buf, at)[0]
