"""One settings object: every setting with its name, default and help.

Precedence (lowest first): defaults, the config file (TOML: ``--config``, ``LAKE_CONFIG``,
or ``lake.toml`` in the working directory), ``LAKE_*`` environment variables, explicit
keyword arguments (the CLI's flags).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import InvalidArgument

_MINIMUMS = {"payload_limit": 1024, "preview_chars": 0, "flush_rows": 1, "flush_interval_ms": 0,
             "compact_fragments": 1, "wal_segment_bytes": 4096, "port": 0, "otlp_port": -1,
             "metrics_port": -1, "max_message_bytes": 65536, "max_inflight": 1,
             "inflight_reserve": 0, "stream_idle_ms": 10, "max_open_streams": 1}
AUTH_MODES = ("auto", "on", "off")
WAL_DIR, QUARANTINE_DIR = "_wal", "quarantine"  # their defaults: in a local lake's root


def _s(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    data: str = _s("./lake-data", "lake root: a directory or an object-store URI (s3://...)")
    tenant: str = _s("default", "tenant used by the CLI and by an open (no-auth) server")
    wal_dir: str = _s("", "write-ahead log directory (local disk); default DATA/_wal")
    payload_limit: int = _s(65536, "inputs/outputs larger than this many bytes are stored "
                            "once in `payloads`, with a preview inline")
    preview_chars: int = _s(1024, "characters of a large payload kept inline as preview")
    flush_rows: int = _s(50000, "steps grouped into one lake commit at most")
    flush_interval_ms: int = _s(200, "longest a durable write waits before its lake commit")
    compact_fragments: int = _s(32, "compact a table in the background past this many fragments")
    sql_cache_mb: int = _s(1024, "memory SQL keeps of the tables' columns, MiB (half narrow "
                           "columns, half blocks of long text); 0: read Lance on every query")
    wal_segment_bytes: int = _s(64 << 20, "write-ahead log segment size")
    quarantine_dir: str = _s("", "where rejected records go; default DATA/quarantine")
    host: str = _s("127.0.0.1", "address `lake serve` binds")
    port: int = _s(50051, "port `lake serve` listens on (0: any free port)")
    otlp_port: int = _s(-1, "also take OTLP trace exports on this port (4317 is the "
                        "standard; -1: only on `port`, which takes them too)")
    metrics_port: int = _s(-1, "serve Prometheus metrics at http://HOST:PORT/metrics (9464 is "
                           "the usual; 0: any free port; -1: off)")
    auth: str = _s("auto", "bearer tokens: on | off | auto (on unless the host is loopback)")
    max_message_bytes: int = _s(64 << 20, "largest gRPC message the server accepts or sends")
    max_inflight: int = _s(32, "gRPC calls served at once; more get RESOURCE_EXHAUSTED "
                          "with a retry-after-ms hint")
    inflight_reserve: int = _s(4, "of max_inflight, calls kept for the other tenants: one "
                               "tenant holds at most max_inflight minus this (and at least "
                               "half); 0: no per-tenant limit")
    stream_idle_ms: int = _s(60_000, "a client stream (StreamSteps) that sends no message for "
                             "this long is ended (UNAVAILABLE: reopen it and send again)")
    log_level: str = _s("warning", "`lake serve`'s log level: debug, info, warning, error")
    abandon_after: str = _s("", "`lake serve` finishes as abandoned the runs left running "
                            "with no start or step for this long (24h, 7d); empty: never")
    keep_versions: str = _s("", "`lake serve` vacuums hourly, keeping the versions made "
                            "within this age (7d, 36h) and tagged ones; empty: keeps every "
                            "version (`lake vacuum` frees them by hand)")
    max_open_streams: int = _s(16, "health Watch and reflection streams open at once (they "
                               "need no token); more get RESOURCE_EXHAUSTED")

    @classmethod
    def load(cls, config: str | os.PathLike[str] | None = None,
             env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = config or env.get("LAKE_CONFIG") or (
            "lake.toml" if Path("lake.toml").exists() else None)
        if path:
            try:
                values.update(tomllib.loads(Path(path).read_text()))
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise InvalidArgument(f"cannot read config file: {e}; fix or remove it",
                                      location=str(path)) from e
        for f in fields(cls):
            key = f"LAKE_{f.name.upper()}"
            if key in env:
                values[f.name] = env[key]
        _unknown_env(env, {f"LAKE_{f.name.upper()}" for f in fields(cls)})
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        known = {f.name: f for f in fields(cls)}
        out: dict[str, Any] = {}
        for name, raw in values.items():
            if name not in known:
                raise InvalidArgument(f"unknown setting {name!r}; known: {', '.join(known)}")
            typ = type(known[name].default)
            try:
                out[name] = typ(raw)
            except (TypeError, ValueError) as e:
                raise InvalidArgument(f"setting {name}={raw!r} is not a valid {typ.__name__}",
                                      field=name) from e
        return cls(**out)

    def __post_init__(self) -> None:
        for name, low in _MINIMUMS.items():
            if getattr(self, name) < low:
                raise InvalidArgument(f"setting {name}={getattr(self, name)} is below its "
                                      f"minimum {low}; set LAKE_{name.upper()} (or {name} in "
                                      f"the config file) to at least {low}", field=name)
        if not self.tenant:
            raise InvalidArgument("setting tenant is empty; name a tenant", field="tenant")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise InvalidArgument(f"setting log_level={self.log_level!r} is not one of debug, "
                                  "info, warning, error", field="log_level")
        if self.auth not in AUTH_MODES:
            raise InvalidArgument(f"setting auth={self.auth!r} is not one of "
                                  f"{', '.join(AUTH_MODES)}", field="auth")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def is_local(self) -> bool:
        return "://" not in self.data or self.data.startswith("file://")

    @property
    def local_root(self) -> Path:
        return Path(self.data.removeprefix("file://")).expanduser()

    @property
    def wal_path(self) -> Path:
        if self.wal_dir:
            return Path(self.wal_dir).expanduser()
        if not self.is_local:
            raise InvalidArgument(
                f"the lake root {self.data} is not a local directory, so the write-ahead log "
                "needs a local disk: set LAKE_WAL_DIR (or wal_dir in lake.toml) to a local "
                "directory")
        return self.local_root / WAL_DIR

    @property
    def quarantine_path(self) -> Path:
        if self.quarantine_dir:
            return Path(self.quarantine_dir).expanduser()
        return (self.local_root if self.is_local else Path(".")) / QUARANTINE_DIR

    @classmethod
    def describe(cls) -> list[tuple[str, str, Any, str]]:
        """(name, env var, default, help) for every setting: docs and `lake config`."""
        return [(f.name, f"LAKE_{f.name.upper()}", f.default, f.metadata["help"])
                for f in fields(cls)]


_OTHER_ENV = {"LAKE_CONFIG", "LAKE_TOKEN", "LAKE_DEBUG"}  # read elsewhere, not settings
_warned: set[str] = set()


def _unknown_env(env: Mapping[str, str], known: set[str]) -> None:
    """A mistyped variable (LAKE_PROT) would be ignored without a word: say so, once."""
    for key in sorted(k for k in env if k.startswith("LAKE_") and k not in known
                      and k not in _OTHER_ENV and k not in _warned):
        _warned.add(key)
        near = difflib.get_close_matches(key, sorted(known | _OTHER_ENV), n=1)
        logging.getLogger(__name__).warning(
            "environment variable %s is no setting of the lake and is ignored%s (`lake "
            "config` lists them)", key, f": did you mean {near[0]}?" if near else "")
