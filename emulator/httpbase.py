"""A small threaded HTTP server with Google-style JSON errors and fault injection.

Both local services (Healthcare and BigQuery) are built on it. It listens on loopback only.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

# Query parameters every Google API accepts and ignores (discovery "parameters").
STANDARD_PARAMS = {
    "alt",
    "$.xgafv",
    "prettyPrint",
    "fields",
    "key",
    "quotaUser",
    "access_token",
    "callback",
    "oauth_token",
    "uploadType",
    "upload_protocol",
    "userIp",
}

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}


class ApiError(Exception):
    """An error answered in Google's JSON shape: ``{"error": {code, message, status, details}}``."""

    def __init__(
        self,
        code: int,
        message: str,
        status: str | None = None,
        details: list | None = None,
        errors: list | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or _STATUS_NAMES.get(code, "UNKNOWN")
        self.details = details or []
        self.errors = errors

    def body(self) -> dict:
        err: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            err["details"] = self.details
        if self.errors is not None:
            err["errors"] = self.errors
        return {"error": err}


def bad_request(message: str, field_name: str | None = None) -> ApiError:
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": field_name or "", "description": message}],
        }
    ]
    return ApiError(400, message, "INVALID_ARGUMENT", details)


def check_fields(body: Any, allowed: set[str], where: str = "") -> None:
    """Refuse unknown JSON fields the way Google does: 400 naming the field."""
    if not isinstance(body, dict):
        raise bad_request(f"Invalid JSON payload received. Expected an object at '{where or 'root'}'.", where)
    for key in body:
        if key not in allowed:
            path = f"{where}.{key}" if where else key
            raise bad_request(
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{where or 'root'}': Cannot find field.",
                path,
            )


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any
    body: bytes
    match: re.Match | None = None

    def param(self, name: str, default: str | None = None) -> str | None:
        vals = self.query.get(name)
        return vals[0] if vals else default

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise bad_request(f"Invalid JSON payload received. {exc}") from None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    """Close the connection without answering: what a client sees when the network fails after the server acted."""


Handler = Callable[[Request], Any]


@dataclass
class FaultRule:
    rate: float
    codes: tuple[int, ...]
    after: bool = False
    """Carry the request out, then answer the error: what a client sees when a proxy or the network fails
    after the server acted (the ambiguous case for a POST)."""
    drop: bool = False
    """Carry the request out, then close the connection without any answer (implies ``after``): not an API behaviour
    but the network's (a proxy or load balancer timing out), which any HTTP client must expect."""


class FaultInjector:
    """Answers a fraction of requests with 429/503, per route name (``*`` for every route).

    Seeded (``seed`` in the configuration, default 0), so a test gets the same sequence of draws each run.
    """

    def __init__(self, seed: int = 0):
        self.rules: dict[str, FaultRule] = {}
        self.injected = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def configure(self, spec: dict[str, Any]) -> None:
        """``{"seed": 7, "route": {"rate": 0.2, "code": 503 | "codes": [429, 503], "after": false, "drop": false}}``."""
        spec = dict(spec)
        seed = spec.pop("seed", 0)
        rules = {}
        for name, r in spec.items():
            codes = tuple(int(c) for c in r.get("codes", [r.get("code", 503)]))
            drop = bool(r.get("drop", False))
            rules[name] = FaultRule(float(r.get("rate", 0)), codes, bool(r.get("after", False)) or drop, drop)
        with self._lock:
            self.rules = rules
            self._rng = random.Random(int(seed))

    def parse_flag(self, flag: str) -> None:
        """``route=rate:code,route2=rate`` as given on the command line."""
        spec: dict[str, Any] = {}
        for item in filter(None, (flag or "").split(",")):
            name, _, rest = item.partition("=")
            rate, _, code = rest.partition(":")
            spec[name] = {"rate": float(rate), "code": int(code or 503)}
        self.configure(spec)

    def draw(self, route: str) -> tuple[ApiError, FaultRule] | None:
        """The error to answer for this request, if any, and its rule (answered after the request is carried out,
        or the connection dropped)."""
        with self._lock:
            rule = self.rules.get(route) or self.rules.get("*")
            if rule and self._rng.random() < rule.rate:
                self.injected += 1
                code = rule.codes[self._rng.randrange(len(rule.codes))]
                msg = "The service is currently unavailable." if code != 429 else "Quota exceeded (injected)."
                return ApiError(code, msg), rule
        return None


class App:
    """Route table plus dispatch. Routes are matched on the URL-decoded path."""

    def __init__(self, name: str):
        self.name = name
        self.routes: list[tuple[str, re.Pattern, str, Handler]] = []
        self.faults = FaultInjector()
        self.request_counts: dict[str, int] = {}
        self._count_lock = threading.Lock()
        self.route("GET", r"/admin/health", "admin.health")(lambda req: {"status": "ok", "service": self.name})
        self.route("GET", r"/admin/faults", "admin.faults")(self._get_faults)
        self.route("POST", r"/admin/faults", "admin.faults")(self._set_faults)
        self.route("GET", r"/admin/stats", "admin.stats")(
            lambda req: {"requests": dict(self.request_counts), "injected": self.faults.injected}
        )

    def _get_faults(self, req: Request) -> dict:
        return {
            name: {"rate": r.rate, "codes": list(r.codes), "after": r.after, "drop": r.drop}
            for name, r in self.faults.rules.items()
        }

    def _set_faults(self, req: Request) -> dict:
        self.faults.configure(req.json())
        return self._get_faults(req)

    def route(self, method: str, pattern: str, name: str) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            self.routes.append((method, re.compile("^" + pattern + "$"), name, fn))
            return fn

        return deco

    def dispatch(self, method: str, raw_path: str, headers: Any, body: bytes) -> Response:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        allowed_methods = set()
        for m, rx, name, fn in self.routes:
            match = rx.match(path)
            if not match:
                continue
            if m != method:
                allowed_methods.add(m)
                continue
            with self._count_lock:
                self.request_counts[name] = self.request_counts.get(name, 0) + 1
            fault = None if name.startswith("admin.") else self.faults.draw(name)
            if fault and not fault[1].after:
                return self._error(fault[0])
            req = Request(method, path, query, headers, body, match)
            try:
                response = self._to_response(fn(req))
            except ApiError as exc:
                response = self._error(exc)
            except Exception as exc:  # a bug in the emulator: answer 500, keep serving
                log.error("handler %s failed: %s", name, traceback.format_exc())
                response = self._error(ApiError(500, f"internal error in local {self.name}: {exc}"))
            if fault and fault[1].drop:
                return Response(drop=True)
            return self._error(fault[0]) if fault else response
        if allowed_methods:
            return self._error(ApiError(405, f"Method {method} not allowed on {path}", "UNIMPLEMENTED"))
        return self._error(ApiError(404, f"The requested URL {path} was not found on this server.", "NOT_FOUND"))

    @staticmethod
    def _to_response(result: Any) -> Response:
        if isinstance(result, Response):
            return result
        if result is None:
            result = {}
        return Response(200, json.dumps(result).encode(), {"Content-Type": "application/json; charset=UTF-8"})

    @staticmethod
    def _error(exc: ApiError) -> Response:
        return Response(exc.code, json.dumps(exc.body()).encode(), {"Content-Type": "application/json; charset=UTF-8"})


def make_server(app: App, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve on loopback. Another address is accepted only inside a container (docker-compose.yaml)."""
    if host not in ("127.0.0.1", "localhost", "::1") and not os.path.exists("/.dockerenv"):
        raise ValueError(f"refusing to listen on {host}: outside a container the local stack binds 127.0.0.1 only")

    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _read_body(self) -> bytes:
            """The request body, sized by ``Content-Length`` or sent ``Transfer-Encoding: chunked`` (RFC 9112 §7.1),
            as clients send uploads whose size they do not know up front (dicomweb-client's STOW over 1 MB)."""
            encoding = (self.headers.get("Transfer-Encoding") or "").lower()
            if "chunked" not in encoding:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""
            chunks = []
            while True:
                size = int(self.rfile.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):  # trailer fields
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)  # the CRLF after each chunk

        def _handle(self) -> None:
            body = self._read_body()
            resp = app.dispatch(self.command, self.path, self.headers, body)
            if resp.drop:
                self.close_connection = True
                return
            self.send_response(resp.status)
            for k, v in resp.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), fmt % args)

    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    return _Server((host, port), _Handler)


def status_name(code: int) -> str:
    return _STATUS_NAMES.get(code, HTTPStatus(code).phrase.upper().replace(" ", "_"))


def serve(app: App, args: Any, what: str) -> None:
    """The entry points' shared tail: faults from ``--faults``, serve on ``--host``/``--port`` until Ctrl-C."""
    app.faults.parse_flag(args.faults)
    server = make_server(app, args.port, args.host)
    log.info("%s listening on http://%s:%d", what, args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
