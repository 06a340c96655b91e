"""The console's HTTP adapter (aiohttp): the page, the live stream and the admin
actions.

Routes: ``GET /`` the page, ``GET /console.js`` its script, ``GET /api/frame``
the current frame as JSON, ``GET /api/stream`` Server-Sent Events (a ``full``
frame, then a ``delta`` per interval), ``POST /api/login`` (auth's password
login, admins only), ``POST /api/zones/{zone}/drain``,
``POST /api/players/{player}/kick`` and ``POST /api/accounts/{account}/ban``
(an admin's access token as ``Authorization: Bearer``; a ban passes it on to
auth's BanAccount). Every admin action, refused ones included, is written to
the audit log, which ``GET /api/audit`` reads back (admins only).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from aiohttp import web

from tessera.authclient.verifier import Verifier
from tessera.common.audit import AuditLog, AuditRecord
from tessera.console import admin, metrics
from tessera.console.admin import Refused
from tessera.console.clients import Clients
from tessera.console.feed import Feed
from tessera.console.store import ConsoleStore
from tessera.wire.access_token import Claims, TokenError

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# Auth's answer to a login -> the HTTP status; anything else (auth down) is 502.
LOGIN_STATUS = {
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
}
# Auth's refusal of a ban -> the HTTP status; anything else (auth down) is 502.
BAN_STATUS = {
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
}


@dataclass
class Console:
    """What the handlers need."""

    feed: Feed
    store: ConsoleStore
    clients: Clients
    verifier: Verifier
    audit: AuditLog
    drain_deadline_s: float


def app(console: Console) -> web.Application:
    """The aiohttp application serving ``console``."""
    handlers = Handlers(console)
    application = web.Application(client_max_size=16 * 1024)
    application.add_routes(
        [
            web.get("/", handlers.page),
            web.get("/console.js", handlers.script),
            web.get("/api/frame", handlers.current),
            web.get("/api/stream", handlers.stream),
            web.post("/api/login", handlers.login),
            web.post("/api/zones/{zone}/drain", handlers.drain),
            web.post("/api/players/{player}/kick", handlers.kick),
            web.post("/api/accounts/{account}/ban", handlers.ban),
            web.get("/api/audit", handlers.audit),
        ]
    )
    return application


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class Handlers:
    """The request handlers of :func:`app`."""

    def __init__(self, console: Console) -> None:
        self.c = console

    async def page(self, _: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def script(self, _: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "console.js")

    async def current(self, _: web.Request) -> web.Response:
        return web.Response(body=json.dumps(self.c.feed.frame), content_type="application/json")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue = self.c.feed.subscribe()
        try:
            while chunk := await queue.get():
                await response.write(chunk)
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.c.feed.unsubscribe(queue)
        return response

    async def login(self, request: web.Request) -> web.Response:
        try:
            body = await _json(request)
        except Refused as err:
            return _error(err.status, str(err))
        username, password = str(body.get("username", "")), str(body.get("password", ""))
        if not username or not password:
            return _error(400, "username and password are required")
        try:
            session = await self.c.clients.login(username, password)
            claims = self.c.verifier.verify(session.access_token)
        except grpc.aio.AioRpcError as err:
            self._audit(
                request,
                actor="",
                action="login",
                target=username,
                outcome="refused",
                detail=err.details() or "",
            )
            status = LOGIN_STATUS.get(err.code(), 502)
            return _error(status, f"login refused by auth: {err.details()}")
        except TokenError as err:
            return _error(503, f"auth's token could not be verified yet: {err}")
        if "admin" not in claims.roles:
            self._audit(
                request,
                actor=claims.sub,
                action="login",
                target=username,
                outcome="refused",
                detail="not an admin",
            )
            return _error(403, f"account {username!r} is not an admin")
        self._audit(request, actor=claims.sub, action="login", target=username, outcome="ok")
        return web.json_response(
            {
                "account_id": session.account_id,
                "username": username,
                "access_token": session.access_token,
                "expires_at": session.expires_at,
            }
        )

    async def drain(self, request: web.Request) -> web.Response:
        zone = request.match_info["zone"]

        async def act() -> tuple[str, dict[str, Any]]:
            snap = await self.c.store.snapshot()
            target = admin.drain_target(zone, snap.zones, snap.zone_map.zones)
            address = next(z.address for z in snap.zones if z.name == zone)
            remaining = await self.c.clients.drain(
                _bearer(request), address, target, self.c.drain_deadline_s
            )
            detail = f"draining into {target}, {remaining} entities to hand away"
            return detail, {"zone": zone, "target": target, "remaining": remaining}

        return await self._admin(request, "drain", zone, act)

    async def kick(self, request: web.Request) -> web.Response:
        player = request.match_info["player"]

        async def act() -> tuple[str, dict[str, Any]]:
            admin.check_player(player)
            body = await _json(request)
            reason = str(body.get("reason", "")) or "kicked by an admin"
            kicked = await self.c.clients.kick(_bearer(request), player, reason[:200])
            if not kicked:
                raise Refused(404, f"no relay holds a session of player {player!r}")
            return f"kicked from {', '.join(kicked)}", {"player": player, "relays": kicked}

        return await self._admin(request, "kick", player, act)

    async def ban(self, request: web.Request) -> web.Response:
        account = request.match_info["account"]

        async def act() -> tuple[str, dict[str, Any]]:
            order = admin.check_ban(account, await _json(request), time.time())
            try:
                revoked = await self.c.clients.ban(
                    _bearer(request), order.account_id, order.reason, order.until
                )
            except grpc.aio.AioRpcError as err:
                status = BAN_STATUS.get(err.code())
                if status is None:
                    raise
                raise Refused(status, f"auth refused the ban: {err.details()}") from None
            term = f"until {order.until}" if order.until else "permanently"
            detail = f"banned {term} ({order.reason}); {revoked} sessions revoked"
            answer = {"account": account, "until": order.until, "revoked_sessions": revoked}
            return detail, answer

        return await self._admin(request, "ban", account[:128], act)

    async def _admin(
        self,
        request: web.Request,
        action: str,
        target: str,
        act: Callable[[], Awaitable[tuple[str, dict[str, Any]]]],
    ) -> web.Response:
        """Verify the admin token, run ``act``, audit the outcome, answer."""
        actor = ""
        try:
            claims = self._claims(request)
            actor = claims.sub
            if "admin" not in claims.roles:
                raise Refused(403, f"account {actor} is not an admin")
            detail, answer = await act()
        except Refused as err:
            self._audit(
                request,
                actor=actor,
                action=action,
                target=target,
                outcome="refused",
                detail=str(err),
            )
            return _error(err.status, str(err))
        except (grpc.aio.AioRpcError, ConnectionError) as err:
            message = err.details() if isinstance(err, grpc.aio.AioRpcError) else str(err)
            self._audit(
                request,
                actor=actor,
                action=action,
                target=target,
                outcome="failed",
                detail=message or "",
            )
            return _error(502, f"{action} failed: {message}")
        self._audit(request, actor=actor, action=action, target=target, outcome="ok", detail=detail)
        return web.json_response(answer)

    async def audit(self, request: web.Request) -> web.Response:
        """The newest audit records (``limit``, 1-1000, default 100), only one
        ``actor``'s or one ``target``'s when given; admins only."""
        try:
            claims = self._claims(request)
            if "admin" not in claims.roles:
                raise Refused(403, f"account {claims.sub} is not an admin")
            query = admin.check_audit_query(request.query)
        except Refused as err:
            return _error(err.status, str(err))
        try:
            records = await self.c.audit.recent(query.limit, actor=query.actor, target=query.target)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            return _error(503, f"the audit log could not be read: {err}")
        return web.json_response(
            {"records": [{**asdict(r), "at": r.at.isoformat() if r.at else None} for r in records]}
        )

    def _claims(self, request: web.Request) -> Claims:
        """The verified claims of the request's bearer token; :class:`Refused` 401."""
        try:
            return self.c.verifier.verify(_bearer(request))
        except TokenError as err:
            raise Refused(401, f"access token refused: {err}") from None

    def _audit(
        self,
        request: web.Request,
        *,
        actor: str,
        action: str,
        target: str,
        outcome: str,
        detail: str = "",
    ) -> None:
        metrics.ADMIN_ACTIONS.labels(action, outcome).inc()
        self.c.audit.write(
            AuditRecord(actor, action, target, request.remote or "", outcome, detail)
        )
        log.info("admin action", extra={"actor": actor, "action": action, "outcome": outcome})


def _bearer(request: web.Request) -> str:
    """The request's bearer token; :class:`Refused` 401 when there is none."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(401, "admin login required")
    return token.strip()


async def _json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body ({} when empty); :class:`Refused` 400 otherwise."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Refused(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise Refused(400, "the body must be a JSON object")
    return body
