"""Who is calling, and may they: bearer tokens, one scope per RPC, the audit trail.

Every call of the lake's services passes ``AuthLayer``:

1. identify: ``authorization: Bearer cl_<id>_<secret>`` metadata, verified against the
   lake's token store (``lake/tokens.py``). Without auth (an open server on loopback) a
   call without a token acts as ``settings.tenant`` with every scope; a token that is sent
   is still verified and used.
2. authorize: the RPC's scope (``methods.SCOPES``, the one table) must be among the token's.
3. run the RPC with the identity attached (``identity()`` in the servicer); the tenant of
   everything it does comes from here, never from the request.
4. a client stream's token is verified again while it is open (``streams.StreamLayer``):
   a revoked token ends the stream, refused and audited here like any other call.

Refused calls (unauthenticated, permission denied, overloaded) and every admin-scoped
call are appended to the ``audit`` table; admin actions are flushed at once.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import text_format
from google.protobuf.message import Message

from lake.audit import AuditLog
from lake.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from lake.tokens import SCOPES as ALL_SCOPES
from lake.tokens import Identity, Tokens

from .errors import Behavior, Layer, status_of
from .methods import SCOPES, V1

REFUSALS = (Unauthenticated, PermissionDenied, ResourceExhausted)
ANONYMOUS = "anonymous"

_IDENTITY: contextvars.ContextVar[Identity] = contextvars.ContextVar("lake_identity")


def identity() -> Identity:
    """The caller of the RPC being served (set by ``AuthLayer``)."""
    return _IDENTITY.get()


def current_tenant() -> str | None:
    """The tenant of the RPC being served; None outside one."""
    who = _IDENTITY.get(None)
    return None if who is None else who.tenant


class Authenticator:
    def __init__(self, tokens: Tokens, *, required: bool, open_tenant: str):
        self.tokens, self.required = tokens, required
        self.open_identity = Identity(open_tenant, "local", frozenset(ALL_SCOPES))

    def identify(self, metadata: Sequence[tuple[str, Any]] | None) -> Identity:
        header = _header(metadata)
        if header is None:
            if self.required:
                raise Unauthenticated("this server requires a bearer token: send metadata "
                                      "`authorization: Bearer cl_...` (an operator creates one "
                                      "with `lake token create`)")
            return self.open_identity
        try:
            scheme, token = _bearer(header)
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated("the authorization metadata must read `Bearer <token>`")
            return self.tokens.verify(token)
        except Unauthenticated as e:
            if self.required:
                raise
            err = Unauthenticated(f"{e.message}. This server runs without auth: send no token "
                                  f"to act as tenant {self.open_identity.tenant!r}; a valid "
                                  "token acts as its own tenant")
            err.claimed = getattr(e, "claimed", None)  # type: ignore[attr-defined]
            raise err from None

    async def identify_async(self, metadata: Sequence[tuple[str, Any]] | None) -> Identity:
        """``identify`` for the event loop, which must not wait on storage: from memory when
        it can, else on the thread pool (the token store is read)."""
        if self.cached(metadata):
            return self.identify(metadata)
        return await asyncio.to_thread(self.identify, metadata)

    def cached(self, metadata: Sequence[tuple[str, Any]] | None) -> bool:
        """True when ``identify`` can answer from memory (no read of the token store)."""
        header = _header(metadata)
        if header is None:
            return True
        return self.tokens.cached(_bearer(header)[1])

    @staticmethod
    def authorize(who: Identity, method: str) -> None:
        scope = SCOPES[method]
        if scope not in who.scopes:
            rpc = method.rsplit(".", 1)[-1]
            raise PermissionDenied(
                f"token {who.token_id} (agent {who.agent!r}, tenant {who.tenant!r}) has scopes "
                f"{', '.join(sorted(who.scopes)) or 'none'}; {rpc} needs {scope!r}: use a token "
                f"created with `lake token create --scopes {scope}`")


class AuthLayer(Layer):
    def __init__(self, auth: Authenticator, audit: AuditLog):
        self.auth, self.audit = auth, audit

    def applies(self, method: str) -> bool:
        return method in SCOPES  # health and reflection are open

    def decorate(self, method: str, behavior: Behavior) -> Behavior:
        admin = SCOPES[method] == "admin"

        def checked(request: Any, context: grpc.ServicerContext) -> Any:
            who: Identity | None = None
            try:
                who = self.auth.identify(context.invocation_metadata())
                self.auth.authorize(who, method)
                token = _IDENTITY.set(who)
                try:
                    result = behavior(request, context)
                finally:
                    _IDENTITY.reset(token)
            except Exception as exc:
                if admin or isinstance(exc, REFUSALS):
                    refused = isinstance(exc, REFUSALS)  # a storm of these: not flushed per call
                    self._audit(method, who, request, context, exc, flush=admin and not refused)
                raise
            if admin:
                self._audit(method, who, request, context, None, flush=True)
            return result

        return checked

    def decorate_async(self, method: str, behavior: Behavior) -> Behavior:
        """The same on the event loop, which must not wait on storage: a token the store
        must be read for is verified on the thread pool, and so is a refusal's audit row."""
        if SCOPES[method] == "admin":
            raise TypeError(f"{method}: admin calls are audited at once; serve them on the "
                            "thread pool (a plain function), not on the event loop")

        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            who: Identity | None = None
            try:
                metadata = context.invocation_metadata()
                who = self.auth.identify(metadata) if self.auth.cached(metadata) else \
                    await asyncio.to_thread(self.auth.identify, metadata)
                self.auth.authorize(who, method)
                token = _IDENTITY.set(who)
                try:
                    return await behavior(request, context)
                finally:
                    _IDENTITY.reset(token)
            except REFUSALS as exc:
                await asyncio.to_thread(self._audit, method, who, request, context, exc,
                                        flush=False)
                raise

        return checked

    def _audit(self, method: str, who: Identity | None, request: Any,
               context: grpc.ServicerContext, exc: BaseException | None, *, flush: bool) -> None:
        admin = SCOPES[method] == "admin"
        outcome = "ok" if exc is None else status_of(exc)[0].name.lower()
        detail: dict[str, Any] = {"peer": context.peer()}
        if exc is not None:
            detail["error"] = str(exc)[:1000]
        if who is None:  # refused before it was known: the token tried, if one was known
            who = getattr(exc, "claimed", None)
        self.audit.record(
            tenant=who.tenant if who else "", actor=who.agent if who else ANONYMOUS,
            token_id=who.token_id if who else None, action=method.removeprefix(V1),
            resource=_resource(request) if admin else _ids(request), outcome=outcome,
            detail=detail, flush=flush)


def _header(metadata: Sequence[tuple[str, Any]] | None) -> Any:
    return next((v for k, v in metadata or () if k == "authorization"), None)


def _bearer(header: Any) -> tuple[str, str]:
    """(scheme, token) of an authorization header: ``Bearer cl_...`` -> ("Bearer", "cl_...")."""
    scheme, _, token = str(header).strip().partition(" ")
    return scheme, token.strip()


def _ids(request: Any) -> str | None:
    """What a refused call named, cheaply: its top-level text and number fields (not its
    bytes or steps: a refusal must cost little, whatever was sent)."""
    if not isinstance(request, Message):
        return None
    parts = [f"{fd.name}: {v!r:.100}" for fd, v in request.ListFields()
             if isinstance(v, str | int | float) and not isinstance(v, bool)]
    return " ".join(parts)[:500] or None


def _resource(request: Any) -> str | None:
    """The request in one line of protobuf text (``name: "before" ref: "3"``)."""
    if not isinstance(request, Message):
        return None  # a client stream
    text = text_format.MessageToString(request, as_one_line=True)
    return text[:500] or None
