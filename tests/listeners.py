"""The receiving ends a platform team runs, on 127.0.0.1: a StatsD server, an OpenLineage HTTP endpoint, an SMTP
server. The deployment under test is pointed at them through its ordinary settings and sends to them as it would in
production; the tests read what arrived."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StatsdListener:
    """A StatsD server's socket: every datagram's lines (``name[,tag=value...]:value|type``), kept in order."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.lines.extend(data.decode(errors="replace").splitlines())

    def metrics(self, name: str) -> list[tuple[dict[str, str], float, str]]:
        """The samples of ``<prefix>.<name>`` as (tags, value, type), with InfluxDB-style tags parsed."""
        found = []
        for line in list(self.lines):
            head, _, rest = line.partition(":")
            metric, *tags = head.split(",")
            if metric.split(".", 1)[-1] != name:
                continue
            value, _, kind = rest.partition("|")
            found.append((dict(t.split("=", 1) for t in tags), float(value), kind.split("|")[0]))
        return found

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


class LineageListener:
    """An OpenLineage HTTP endpoint (``POST /api/v1/lineage``), as Marquez or Dataplex's collector receive it."""

    def __init__(self) -> None:
        events: list[dict[str, Any]] = []
        self.events = events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                events.append(json.loads(body))
                self.send_response(201)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def transport(self) -> str:
        """``[openlineage] transport`` for a deployment that sends here, as the README configures it: the HTTP
        transport inside the package's conf-redacting one."""
        return json.dumps(
            {
                "type": "dicom_pipelines.lineage_transport.ConfRedactingTransport",
                "transport": {"type": "http", "url": self.url, "endpoint": "api/v1/lineage"},
            }
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpListener:
    """An SMTP server that keeps every message it is given (aiosmtpd: a development requirement)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[EmailMessage] = []
        messages = self.messages

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
                messages.append(message_from_bytes(envelope.content, policy=policy.default))  # type: ignore[arg-type]
                return "250 OK"

        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def connection(self, sender: str) -> str:
        """``AIRFLOW_CONN_SMTP_DEFAULT`` for a deployment that sends here: plain SMTP, no login, its sender."""
        return json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": self.port,
                "extra": {"disable_ssl": True, "disable_tls": True, "from_email": sender},
            }
        )

    def close(self) -> None:
        self.controller.stop()


def wait_until(what: str, found: Callable[[], Any], timeout: float = 120.0) -> Any:
    """Poll ``found`` until it returns something truthy (the listeners receive asynchronously)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = found()
        if result:
            return result
        time.sleep(1.0)
    raise AssertionError(f"{what}: nothing arrived within {timeout:.0f}s")
