"""HTTP routes of the local Cloud Logging API: ``entries:write`` and ``entries:list`` (v2, REST).

This is the subset a service writes its error entries with and a client reads them back with: the
shapes of the Logging API reference, which ``google-cloud-logging`` sends over HTTP. The filter language is
a subset of the Logging query language: comparisons joined by ``AND``, on dotted field paths
(``resource.type``, ``operation.id``, ``jsonPayload.source``, ``timestamp``…), with ``=``, ``!=``, ``:``
(has: substring, case-insensitive), ``<``, ``<=``, ``>``, ``>=``. Anything else is answered with 400 naming
what is not supported here, never silently ignored.

Run with ``python -m emulator.cloudlogging --port 18407 --state-dir .stack/logging``.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
import re
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

from emulator.httpbase import App, Request, bad_request, check_fields

_LOG_NAME_RE = re.compile(r"^(projects|organizations|folders|billingAccounts)/([^/]+)/logs/[^/]+$")
_PARENT_RE = re.compile(r"^projects/([^/]+)$")
_ENTRY_FIELDS = {
    "logName",
    "resource",
    "timestamp",
    "receiveTimestamp",
    "severity",
    "insertId",
    "httpRequest",
    "labels",
    "operation",
    "trace",
    "spanId",
    "traceSampled",
    "sourceLocation",
    "split",
    "textPayload",
    "jsonPayload",
    "protoPayload",
}
_SEVERITIES = {"DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY"}
_TERM_RE = re.compile(r'\s*([A-Za-z_][\w.]*)\s*(>=|<=|!=|=|:|<|>)\s*("(?:[^"\\]|\\.)*"|[^\s()"]+)\s*')
_MAX_PAGE = 1000
_COMPARE = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _parse_time(value: str) -> dt.datetime:
    text = value.strip().replace("Z", "+00:00")
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", text)
    if m and m[2]:  # Python reads at most 6 fractional digits
        text = m[1] + m[2][:7] + m[3]
    parsed = dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def json_names(body: Any) -> Any:
    """Proto3 JSON accepts a field's proto name (``dry_run``) as well as its JSON name (``dryRun``)."""
    if not isinstance(body, dict):
        return body
    return {re.sub(r"_([a-z])", lambda m: m[1].upper(), k): v for k, v in body.items()}


def parse_filter(text: str) -> list[tuple[str, str, str]]:
    """``a.b="x" AND c>=y`` → ``[(path, op, value)]``; 400 for what this subset does not implement."""
    terms: list[tuple[str, str, str]] = []
    rest = text.strip()
    while rest:
        m = _TERM_RE.match(rest)
        if not m:
            raise bad_request(
                f"filter {text!r}: the local Cloud Logging understands comparisons (field OP value) joined by "
                f"AND; it cannot read {rest[:60]!r}",
                "filter",
            )
        value = m[3]
        if value.startswith('"'):
            value = json.loads(value)
        terms.append((m[1], m[2], value))
        rest = rest[m.end() :]
        if rest.startswith("AND ") or rest.startswith("AND\n"):
            rest = rest[4:]
        elif rest and re.match(r"^(OR|NOT)\b", rest):
            raise bad_request(f"filter {text!r}: OR and NOT are not implemented by the local Cloud Logging", "filter")
    return terms


def _lookup(entry: dict, path: str) -> Any:
    value: Any = entry
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def matches(entry: dict, terms: list[tuple[str, str, str]]) -> bool:
    for path, op, wanted in terms:
        value = _lookup(entry, path)
        if value is None:
            if op == "!=":
                continue
            return False
        left: Any
        right: Any
        if path in ("timestamp", "receiveTimestamp"):
            left, right = _parse_time(str(value)), _parse_time(wanted)
        else:
            left, right = (str(value).lower(), wanted.lower()) if op == ":" else (str(value), wanted)
        ok = right in left if op == ":" else _COMPARE[op](left, right)
        if not ok:
            return False
    return True


class LogStore:
    """Entries in an SQLite file, in the order they were received."""

    def __init__(self, state_dir: str | Path):
        root = Path(state_dir)
        root.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(root / "entries.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS entries (project TEXT NOT NULL, body TEXT NOT NULL)")
        self._lock = threading.Lock()

    def add(self, rows: list[tuple[str, dict]]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT INTO entries(project, body) VALUES (?, ?)", [(p, json.dumps(e)) for p, e in rows]
            )

    def of_projects(self, projects: list[str]) -> list[dict]:
        marks = ",".join("?" * len(projects))
        with self._lock:
            rows = self._db.execute(
                f"SELECT body FROM entries WHERE project IN ({marks}) ORDER BY rowid", projects
            ).fetchall()
        return [json.loads(r[0]) for r in rows]


class LoggingApi:
    def __init__(self, store: LogStore):
        self.store = store
        self.app = App("logging")
        self.app.route("POST", r"/v2/entries:write", "entries.write")(self.write)
        self.app.route("POST", r"/v2/entries:list", "entries.list")(self.list)
        self.app.route("GET", r"/logs/query;query=(?P<q>[\s\S]*)", "console.query")(self.console_query)

    def write(self, req: Request) -> dict:
        body = json_names(req.json())
        check_fields(body, {"logName", "resource", "labels", "entries", "partialSuccess", "dryRun"})
        entries = body.get("entries")
        if not isinstance(entries, list) or not entries:
            raise bad_request("entries: at least one log entry is required", "entries")
        received = _rfc3339(dt.datetime.now(dt.UTC))
        rows = []
        for i, raw in enumerate(entries):
            raw = json_names(raw)
            check_fields(raw, _ENTRY_FIELDS, f"entries[{i}]")
            entry = dict(raw)
            entry.setdefault("logName", body.get("logName"))
            entry.setdefault("resource", body.get("resource"))
            if body.get("labels"):
                entry["labels"] = {**body["labels"], **(entry.get("labels") or {})}
            m = _LOG_NAME_RE.match(entry.get("logName") or "")
            if not m:
                raise bad_request(
                    f"entries[{i}].logName {entry.get('logName')!r} must be projects/PROJECT_ID/logs/LOG_ID",
                    f"entries[{i}].logName",
                )
            if not isinstance(entry.get("resource"), dict) or not entry["resource"].get("type"):
                raise bad_request(f"entries[{i}].resource: a monitored resource with a type is required")
            payloads = [k for k in ("textPayload", "jsonPayload", "protoPayload") if k in entry]
            if len(payloads) > 1:
                raise bad_request(f"entries[{i}]: only one of {payloads} may be set", f"entries[{i}]")
            severity = entry.get("severity", "DEFAULT")
            if severity not in _SEVERITIES:
                raise bad_request(f"entries[{i}].severity {severity!r} is not a LogSeverity", f"entries[{i}].severity")
            entry["severity"] = severity
            entry["timestamp"] = _rfc3339(_parse_time(entry["timestamp"])) if entry.get("timestamp") else received
            entry["receiveTimestamp"] = received
            entry.setdefault("insertId", uuid.uuid4().hex[:16])
            rows.append((m[2], entry))
        if not body.get("dryRun"):
            self.store.add(rows)
        return {}

    def console_query(self, req: Request) -> dict:
        """What a Logs Explorer link (``/logs/query;query=…?project=…``) shows, as JSON: the entries it selects."""
        project = req.param("project") or ""
        if not project:
            raise bad_request("project: the link names no project", "project")
        terms = parse_filter(req.match["q"])
        return {"query": req.match["q"], "entries": [e for e in self.store.of_projects([project]) if matches(e, terms)]}

    def list(self, req: Request) -> dict:
        body = json_names(req.json())
        check_fields(body, {"resourceNames", "projectIds", "filter", "orderBy", "pageSize", "pageToken"})
        names = list(body.get("resourceNames") or []) + [f"projects/{p}" for p in body.get("projectIds") or []]
        if not names:
            raise bad_request("resourceNames: at least one parent resource (projects/PROJECT_ID) is required")
        projects = []
        for name in names:
            m = _PARENT_RE.match(name)
            if not m:
                raise bad_request(
                    f"resourceNames: {name!r} is not supported by the local Cloud Logging (only projects/PROJECT_ID)",
                    "resourceNames",
                )
            projects.append(m[1])
        terms = parse_filter(body.get("filter") or "")
        order = (body.get("orderBy") or "timestamp asc").strip().lower()
        if order not in ("timestamp asc", "timestamp desc"):
            raise bad_request(f"orderBy {body.get('orderBy')!r} must be 'timestamp asc' or 'timestamp desc'", "orderBy")
        try:
            size = int(body.get("pageSize") or 50)
            start = int(body.get("pageToken") or 0)
        except ValueError:
            raise bad_request("pageSize and pageToken must be the values this API gave") from None
        if not 0 < size <= _MAX_PAGE:
            raise bad_request(f"pageSize {size} must be between 1 and {_MAX_PAGE}", "pageSize")
        found = [e for e in self.store.of_projects(projects) if matches(e, terms)]
        found.sort(key=lambda e: _parse_time(e["timestamp"]), reverse=order.endswith("desc"))
        out: dict[str, Any] = {"entries": found[start : start + size]}
        if start + size < len(found):
            out["nextPageToken"] = str(start + size)
        return out
