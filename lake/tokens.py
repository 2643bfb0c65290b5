"""Bearer tokens: create, verify, revoke, list. Stored hashed in the ``tokens`` table.

A token reads ``cl_<id>_<secret>``. The ``id`` (12 hex digits) is public and is how the
token is found; the secret (32 random bytes, URL-safe base64) is shown once, at creation,
and only its sha256 is stored. With 256 random bits a plain sha256 is the right hash: there
is nothing to guess, so no salt or slow hash is needed. A token binds a tenant, an agent
identity and scopes (``ingest``, ``read``, ``admin`` for the tenant's own data, ``operator``
for what changes every tenant's); the tenant of every call made with it comes from here,
never from the request.

``tokens`` is a system table: not pinned by lake versions (a restore never brings a
revoked token back) and written directly, so ``lake token create|revoke`` works while
``lake serve`` holds the write-ahead log. A server notices new tokens at once (an unknown
id reloads the table) and revocations within ``refresh_s``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from .audit import AuditLog
from .errors import InvalidArgument, NotFound, Unauthenticated
from .records import now_us
from .schema import TOKENS
from .settings import Settings
from .tables import TableStore

OPERATOR = "operator"  # lake-wide changes: Restore, moving a tag; every tenant's versions
SCOPES = ("ingest", "read", "admin", OPERATOR)
PREFIX = "cl"
_TOKEN_RE = re.compile(r"^cl_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_RELOAD_MIN_S = 0.2  # an unknown id reloads the table at most this often (storms of bad ids)


@dataclass(frozen=True)
class Identity:
    """Who is calling: from a token, or the open server's local caller (``token_id`` None)."""

    tenant: str
    agent: str
    scopes: frozenset[str]
    token_id: str | None = None


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    tenant: str
    agent: str
    scopes: tuple[str, ...]
    created_at: datetime | int
    revoked_at: datetime | int | None

    def as_dict(self) -> dict[str, Any]:
        return {"token_id": self.token_id, "tenant": self.tenant, "agent": self.agent,
                "scopes": list(self.scopes), "created_at": self.created_at,
                "revoked_at": self.revoked_at}


def parse_scopes(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"read,ingest"`` -> ``("ingest", "read")``; unknown names are an error."""
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    names = [s for s in names if s]
    bad = [s for s in names if s not in SCOPES]
    if bad or not names:
        raise InvalidArgument(f"scopes {', '.join(bad) or '(none)'} not known; use a comma-"
                              f"separated list of {', '.join(SCOPES)}", field="scopes")
    return tuple(s for s in SCOPES if s in names)


def _check_name(field: str, value: str) -> None:
    """A tenant or agent name: 1-128 printable characters, no space at either end."""
    if not value or len(value) > 128 or not value.isprintable() or value != value.strip():
        raise InvalidArgument(f"{value!r:.60} is not a usable {field} name: give 1-128 "
                              "printable characters with no space at either end", field=field)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Tokens:
    def __init__(self, store: TableStore, *, refresh_s: float = 1.0,
                 audit: AuditLog | None = None, actor: str = "lake"):
        self.store = store
        self.refresh_s = refresh_s
        self.audit, self.actor = audit, actor  # token administration is audited
        self._rows: dict[str, dict[str, Any]] = {}
        self._version: int | None = None
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    @classmethod
    def at(cls, settings: Settings, actor: str = "lake") -> Tokens:
        """The token store of the lake at ``settings.data``, auditing as ``actor``. Works while
        a server runs (it writes the ``tokens`` table directly, not through the log)."""
        if settings.is_local and not (settings.local_root / "_versions.lance").is_dir():
            raise NotFound(f"no lake at {settings.data}: create it first (`lake init "
                           "--no-sample`, or `lake serve`), or point --data / LAKE_DATA at it")
        store = TableStore(settings.data)
        return cls(store, audit=AuditLog(store), actor=actor)

    # -- administration -----------------------------------------------------------------------
    def create(self, tenant: str, agent: str, scopes: str | list[str] | tuple[str, ...]
               ) -> tuple[str, TokenInfo]:
        """A new token: returns its text (shown once, never stored) and its record."""
        for name, value in (("tenant", tenant), ("agent", agent)):
            _check_name(name, value)
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        row = {"token_id": token_id, "tenant": tenant, "agent": agent,
               "scopes": list(parse_scopes(scopes)), "secret_sha256": _digest(secret),
               "created_at": now_us(), "revoked_at": None}
        self.store.ensure("tokens")
        self.store.append("tokens", pa.Table.from_pylist([row], schema=TOKENS))
        self._loaded_at = float("-inf")
        self._audit("token.create", row)
        return f"{PREFIX}_{token_id}_{secret}", _info(row)

    def revoke(self, token_id: str) -> TokenInfo:
        """Revoke a token (by its id, or the whole token text). Revoking twice is a no-op."""
        m = _TOKEN_RE.match(token_id)
        token_id = m.group(1) if m else token_id
        rows = {r["token_id"]: r for r in self._read()}
        row = rows.get(token_id)
        if row is None:  # a mistyped whole token: never print its secret
            shown = token_id if len(token_id) <= 16 else f"{token_id[:15]}..."
            raise NotFound(f"no token with id {shown!r}; `lake token list` shows the ids")
        if row["revoked_at"] is None:
            row = {**row, "revoked_at": now_us()}
            self.store.upsert("tokens", ["token_id"], pa.Table.from_pylist([row], schema=TOKENS))
            self._loaded_at = float("-inf")
            self._audit("token.revoke", row)
        return _info(row)

    def _audit(self, action: str, row: dict[str, Any]) -> None:
        if self.audit is not None:
            self.audit.record(tenant=row["tenant"], actor=self.actor, action=action,
                              resource=f"token {row['token_id']}", outcome="ok", flush=True,
                              detail={"agent": row["agent"], "scopes": row["scopes"]})

    def list(self) -> list[TokenInfo]:
        return sorted((_info(r) for r in self._read()), key=lambda t: (t.tenant, t.token_id))

    # -- verification -------------------------------------------------------------------------
    def verify(self, token: str) -> Identity:
        """The identity a token stands for; ``Unauthenticated`` if it is not a valid one."""
        m = _TOKEN_RE.match(token)
        if not m:
            raise Unauthenticated("the bearer token is malformed: expected cl_<id>_<secret> "
                                  "as printed by `lake token create`")
        token_id, secret = m.groups()
        row = self._lookup(token_id)
        if row is None or not hmac.compare_digest(row["secret_sha256"], _digest(secret)):
            raise _refused(f"token {token_id} is not known (or its secret is wrong); create "
                           "one with `lake token create`", row, token_id, proven=False)
        if row["revoked_at"] is not None:
            raise _refused(f"token {token_id} was revoked; ask for a new one", row, token_id,
                           proven=True)
        return Identity(row["tenant"], row["agent"], frozenset(row["scopes"]), token_id)

    def cached(self, token: str) -> bool:
        """True when ``verify(token)`` answers from memory, without reading the store."""
        m = _TOKEN_RE.match(token)
        return m is None or not self._stale(m.group(1))

    def _stale(self, token_id: str) -> bool:
        age = time.monotonic() - self._loaded_at
        return age > self.refresh_s or (token_id not in self._rows and age > _RELOAD_MIN_S)

    def _lookup(self, token_id: str) -> dict[str, Any] | None:
        if self._stale(token_id):
            self._reload()
        return self._rows.get(token_id)

    def _reload(self) -> None:
        with self._lock:
            if not self.store.exists("tokens"):
                self._rows, self._version = {}, None
            else:
                ds = self.store.dataset("tokens")
                if ds.version != self._version:
                    self._rows = {r["token_id"]: r for r in ds.to_table().to_pylist()}
                    self._version = ds.version
            self._loaded_at = time.monotonic()

    def _read(self) -> list[dict[str, Any]]:
        if not self.store.exists("tokens"):
            return []
        return self.store.dataset("tokens").to_table().to_pylist()


def _info(row: dict[str, Any]) -> TokenInfo:
    return TokenInfo(row["token_id"], row["tenant"], row["agent"], tuple(row["scopes"]),
                     _time(row["created_at"]), _time(row["revoked_at"]))


def _time(t: Any) -> Any:
    """A time as the table reads it back (a written row holds epoch microseconds)."""
    return datetime.fromtimestamp(t / 1e6, UTC) if isinstance(t, int) else t


def _refused(message: str, row: dict[str, Any] | None, token_id: str, *,
             proven: bool) -> Unauthenticated:
    """A refusal that says, for the audit, whose token was tried (``claimed``: no scopes;
    its agent only when the caller ``proven`` to hold the secret, of a revoked token)."""
    e = Unauthenticated(message)
    e.claimed = None if row is None else Identity(  # type: ignore[attr-defined]
        row["tenant"], row["agent"] if proven else "anonymous", frozenset(), token_id)
    return e
