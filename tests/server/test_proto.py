"""The contract: stubs regenerate identically, messages mirror the schema, every RPC has a scope."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import grpc
import pyarrow as pa
from google.protobuf.descriptor import FieldDescriptor

from lake.schema import STATUSES, STEPS, TRAJECTORIES, public_columns
from proto import generate
from proto.contextlake.v1 import lake_pb2 as pb
from server.auth import SCOPES
from server.convert import wire_name

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_are_what_the_proto_generates(tmp_path):
    fresh = generate.generate(tmp_path)
    for new, committed in zip(fresh, generate.stubs(), strict=True):
        assert committed.exists(), f"{committed} is missing: run `make proto`"
        assert new.read_bytes() == committed.read_bytes(), \
            f"{committed.relative_to(ROOT)} is stale: run `make proto` and commit the stubs"


def test_pyproject_floors_match_the_generated_code():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    text = (ROOT / "proto/contextlake/v1/lake_pb2.py").read_text()
    protobuf = re.search(r"Protobuf Python Version: ([\d.]+)", text).group(1)
    assert f"protobuf>={protobuf}" in {d.split(",")[0] for d in deps}, deps
    grpc_text = (ROOT / "proto/contextlake/v1/lake_pb2_grpc.py").read_text()
    grpc_min = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", grpc_text).group(1)
    assert f"grpcio>={grpc_min}" in {d.split(",")[0] for d in deps}, deps


def test_every_rpc_has_exactly_one_scope():
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp

    services = [*pb.DESCRIPTOR.services_by_name.values(), otlp.DESCRIPTOR.services_by_name[
        "TraceService"]]  # ours and the OTLP receiver
    methods = {f"/{s.full_name}/{m.name}" for s in services for m in s.methods}
    assert methods == set(SCOPES)
    assert set(SCOPES.values()) <= {"ingest", "read", "admin"}


def _mirrors(message: type, schema: pa.Schema, absent: set[str]) -> None:
    fields = message.DESCRIPTOR.fields_by_name
    for f in schema:
        if f.name.startswith("_") or f.name in absent:
            continue
        name = wire_name(f)
        assert name in fields, f"{message.__name__} lacks {name} (column {f.name}): add it to " \
                               "proto/contextlake/v1/lake.proto"
        fd = fields[name]
        if f.name == "status":
            assert fd.type == FieldDescriptor.TYPE_ENUM
        elif pa.types.is_map(f.type) or pa.types.is_list(f.type):
            assert fd.is_repeated, name
        elif f.nullable and f.type != pa.string():
            assert fd.has_presence, f"{name} must be `optional`: the column is nullable"
    mirrored = {wire_name(f) for f in schema} | {"steps"}
    extra = set(fields) - mirrored
    assert not extra, f"{message.__name__} fields with no column: {extra}"


def test_messages_mirror_the_schema():
    _mirrors(pb.Trajectory, TRAJECTORIES, set())
    _mirrors(pb.Step, STEPS, {"tenant", "trajectory_id"})  # the parent trajectory's
    assert public_columns(TRAJECTORIES)  # sanity


def test_status_enum_is_the_schema_statuses():
    names = [v.name for v in pb.Status.DESCRIPTOR.values]
    assert names == ["STATUS_UNSPECIFIED"] + [f"STATUS_{s.upper()}" for s in STATUSES]
    assert pb.Status.DESCRIPTOR.values[0].number == 0


def test_generated_stubs_import_as_a_package():
    from proto.contextlake.v1 import lake_pb2_grpc

    assert lake_pb2_grpc.AdminServiceStub(grpc.insecure_channel("localhost:1"))
