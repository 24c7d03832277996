"""What one request may cost the server, and who may change its state.

:class:`Limits` (``ServeOptions.limits``, the ``moge serve`` flags) bounds every request before
the application parses it, in :class:`RequestGuard`, an ASGI middleware in front of the routes:

* the client's ``Host`` header must be one of ``allowed_hosts`` when that is set (``moge serve``
  on a loopback address allows only the loopback names: a DNS-rebinding page cannot reach it);
* the body: a declared ``Content-Length`` over ``max_body_bytes`` is answered 413 before a byte
  is read, a streamed body is counted as it arrives (413 at the first byte over), and the whole
  body must arrive within ``body_timeout_s`` (408 otherwise; a slow client holds no worker);
* the work routes (``/score``, ``/recommend``) run at most :meth:`Limits.concurrency` at a time
  (sized from the memory a maximum-size request takes); the next one is answered 503 with
  ``Retry-After`` at once instead of queueing;
* a request not answered within ``request_timeout_s`` is answered 504; its thread finishes the
  work it started (a thread cannot be stopped) and holds its concurrency slot until then.

Headers are bounded by the HTTP protocol (:func:`http_protocol`): a connection that has not
sent a complete request head within ``header_timeout_s`` is closed.

Every refusal is counted by reason (``moge_rejections_total{reason}``, :mod:`ml_core.serving.metrics`)
and answered with a short JSON ``{"detail": ...}`` that never repeats the input.

State changes (:func:`check_admin`): ``POST /reload`` needs ``Authorization: Bearer <token>``
(``ServeOptions.admin_token``; without one the route is refused) and is refused from a browser
page of another origin (an ``Origin`` header, or ``Sec-Fetch-Site`` other than ``same-origin``
or ``none``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from dataclasses import dataclass

from ml_core.serving.metrics import Metrics

#: Hosts ``moge serve`` accepts in the ``Host`` header when it listens on a loopback address.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class Limits:
    """Bounds on one request (``moge serve`` flags of the same names)."""

    #: the largest request body. The largest valid request, 100,000 pairs of 19-digit ids, is
    #: 4.2 MB of JSON: 6 MiB leaves room for whitespace and nothing for a 10M-id (80 MB) body
    max_body_bytes: int = 6 << 20
    #: seconds the whole body may take to arrive after the request head (a slow client)
    body_timeout_s: float = 10.0
    #: seconds a connection may take to send a complete request head (a slowloris client)
    header_timeout_s: float = 10.0
    #: seconds from the request to the response before a 504
    request_timeout_s: float = 30.0
    #: /score and /recommend running at once; 0 = from memory (:meth:`concurrency`)
    max_concurrent: int = 0
    #: memory one maximum-size request may take, MiB: one 100,000-pair /score of unknown ids
    #: peaked at about 0.6 GB (issue 27's measurement)
    request_memory_mib: int = 640
    #: the ``Retry-After`` seconds of a 503 over the concurrency limit
    retry_after_s: int = 1
    #: open connections (and requests) uvicorn accepts; over it, uvicorn answers 503
    max_connections: int = 256
    #: accepted ``Host`` header names (without the port); empty = any
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        counts = (self.max_body_bytes, self.request_memory_mib, self.retry_after_s, self.max_connections)
        times = (self.body_timeout_s, self.header_timeout_s, self.request_timeout_s)
        if min(counts) < 1 or min(times) <= 0 or self.max_concurrent < 0:
            raise ValueError(f"expected positive limits (max_concurrent >= 0, 0 = from memory), got {self}")
        object.__setattr__(self, "allowed_hosts", tuple(h.lower() for h in self.allowed_hosts))

    def concurrency(self) -> int:
        """``max_concurrent``, or when 0: as many maximum-size requests as half the available
        memory holds, at least 1 and at most two per CPU core (more only queue for the cores)."""
        if self.max_concurrent:
            return self.max_concurrent
        by_memory = available_memory_bytes() // 2 // (self.request_memory_mib << 20)
        return int(max(1, min(by_memory, 2 * (os.cpu_count() or 1))))


def available_memory_bytes() -> int:
    """``MemAvailable`` of ``/proc/meminfo`` (Linux), else the physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class Rejected(Exception):
    """A request refused before (or instead of) its work: the HTTP status, the metrics reason
    and a message that names the limit, never the input."""

    def __init__(self, status: int, reason: str, message: str | list, headers: dict | None = None):
        super().__init__(message)
        self.status, self.reason, self.message, self.headers = status, reason, message, headers or {}

    def body(self) -> bytes:
        return json.dumps({"detail": self.message}).encode()


async def send_rejection(send, rejected: Rejected) -> None:
    """Answer ``rejected`` on the ASGI ``send`` (the connection is closed after a body refusal)."""
    body = rejected.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), str(v).encode()) for k, v in rejected.headers.items()]
    await send({"type": "http.response.start", "status": rejected.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _host_name(host: str) -> str:
    """``Host`` header without its port (``[::1]:8000`` -> ``[::1]``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class RequestGuard:
    """ASGI middleware enforcing :class:`Limits` (see the module docstring).

    Args:
        app: the ASGI application it guards.
        limits (Limits): the bounds.
        metrics (Metrics): where refusals are counted by reason.
        work_paths (set[str]): the routes under the concurrency limit.
    """

    def __init__(self, app, limits: Limits, metrics: Metrics, work_paths: set[str]):
        self.app, self.limits, self.metrics, self.work_paths = app, limits, metrics, work_paths
        self.slots = limits.concurrency()
        self.busy = 0  # work requests in progress (read and written on the event loop only)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        work = scope["path"] in self.work_paths
        try:
            self._check_head(headers)
            body = await self._read_body(receive)
            if work and self.busy >= self.slots:
                raise Rejected(503, "overloaded", f"{self.busy} requests are in progress, the limit is {self.slots}; "
                                                  "retry later", {"Retry-After": self.limits.retry_after_s})
        except Rejected as r:
            self.metrics.rejected(r.reason)
            return await send_rejection(send, r)
        if body is None:  # the client went away
            return None
        await self._run(scope, receive, send, body, work)

    def _check_head(self, headers: dict[str, str]) -> None:
        hosts = self.limits.allowed_hosts
        if hosts and _host_name(headers.get("host", "")) not in hosts:
            raise Rejected(400, "host", f"the Host header is not one this server answers to (allowed: {list(hosts)})")
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise Rejected(400, "bad_request", "the Content-Length header is not a number")
            if int(length) > self.limits.max_body_bytes:
                raise self._too_large()

    def _too_large(self) -> Rejected:
        return Rejected(413, "body_too_large", f"the request body is larger than {self.limits.max_body_bytes} bytes "
                                               "(batch scoring: `moge score`)", {"Connection": "close"})

    async def _read_body(self, receive) -> bytes | None:
        """The whole body, within the size and time limits (None: the client disconnected)."""
        chunks, size, more = [], 0, True
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                while more:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        return None
                    chunk = msg.get("body", b"")
                    size += len(chunk)
                    if size > self.limits.max_body_bytes:
                        raise self._too_large()
                    chunks.append(chunk)
                    more = msg.get("more_body", False)
        except TimeoutError:
            raise Rejected(408, "body_timeout", f"the request body did not arrive within {self.limits.body_timeout_s} s",
                           {"Connection": "close"}) from None
        return b"".join(chunks)

    async def _run(self, scope, receive, send, body: bytes, work: bool) -> None:
        replayed = False
        started = abandoned = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def guarded_send(message):
            nonlocal started
            if abandoned:  # answered 504 already: the late response goes nowhere
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        task = asyncio.ensure_future(self.app(scope, replay, guarded_send))
        if work:
            self.busy += 1
        task.add_done_callback(lambda t: self._done(t, work))
        try:
            await asyncio.wait_for(asyncio.shield(task), self.limits.request_timeout_s)
        except TimeoutError:
            abandoned = True
            if not started:
                r = Rejected(504, "timeout", f"the request took longer than {self.limits.request_timeout_s} s")
                self.metrics.rejected(r.reason)
                await send_rejection(send, r)

    def _done(self, task: asyncio.Task, work: bool) -> None:
        if work:
            self.busy -= 1
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned request's error is not reported a second time


def check_admin(headers, token: str) -> None:
    """Raise :class:`Rejected` unless the request may change the server's state: same origin
    (no ``Origin`` header, ``Sec-Fetch-Site`` absent, ``same-origin`` or ``none``) and the
    bearer ``token`` (compared in constant time). ``headers``: a case-insensitive mapping."""
    fetch_site = headers.get("sec-fetch-site", "none").lower()
    if headers.get("origin") is not None or fetch_site not in ("same-origin", "none"):
        raise Rejected(403, "cross_origin", "state changes are not accepted from another origin")
    if not token:
        raise Rejected(403, "admin_disabled", "this route is off: start the server with $MOGE_ADMIN_TOKEN or "
                                              "--admin-token-file to enable it")
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Rejected(401, "unauthorized", "a valid 'Authorization: Bearer <admin token>' header is required",
                       {"WWW-Authenticate": "Bearer"})


def http_protocol(header_timeout_s: float) -> type:
    """uvicorn's HTTP protocol (httptools when installed, as uvicorn's own default, else h11)
    closing a connection that has not sent a complete request head within ``header_timeout_s``
    seconds of connecting or of its previous response (uvicorn has no such timeout)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # httptools is optional
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base

    class HeadTimeoutProtocol(Base):
        _timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._timer is None and not self.transport.is_closing():
                self._arm()  # waiting for the next request's head

        def on_headers_complete(self) -> None:  # httptools: a request head is complete
            self._disarm()
            super().on_headers_complete()

        def handle_events(self) -> None:  # h11: a request head is complete once a cycle starts
            before = self.cycle
            super().handle_events()
            if self.cycle is not None and self.cycle is not before:
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._timer = self.loop.call_later(header_timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expire(self) -> None:
            self._timer = None
            waiting = (self.cycle is None or self.cycle.response_complete) and not getattr(self, "pipeline", None)
            if waiting and not self.transport.is_closing():  # no request in progress or queued
                self.transport.close()

    return HeadTimeoutProtocol
