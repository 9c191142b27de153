"""Persistent state of the local Healthcare API: an SQLite index and content-addressed blobs on disk."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (name TEXT PRIMARY KEY, parent TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stores (name TEXT PRIMARY KEY, dataset TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    store TEXT NOT NULL, study TEXT NOT NULL, series TEXT NOT NULL, sop TEXT NOT NULL,
    sha256 TEXT NOT NULL, size INTEGER NOT NULL, metadata TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (store, study, series, sop));
CREATE TABLE IF NOT EXISTS operations (
    name TEXT PRIMARY KEY, dataset TEXT NOT NULL, seq INTEGER NOT NULL, done INTEGER NOT NULL,
    body TEXT NOT NULL, request TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS op_stores (name TEXT PRIMARY KEY, store TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS op_stores_store ON op_stores(store);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS storage_classes (
    store TEXT NOT NULL, study TEXT NOT NULL, series TEXT NOT NULL, sop TEXT NOT NULL, class TEXT NOT NULL,
    PRIMARY KEY (store, study, series, sop));
"""


class Storage:
    """Thread-safe access to the index. Writes are serialised with one lock; SQLite runs in WAL mode."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.blob_dir = self.root / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self._blob_folders: set[str] = set()
        self._db = sqlite3.connect(self.root / "index.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.lock = threading.RLock()

    # --- generic helpers ---
    def query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        with self.lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    def execute(self, sql: str, args: Iterable[Any] = ()) -> int:
        with self.lock:
            return self._db.execute(sql, tuple(args)).rowcount

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        with self.lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def next_id(self, counter: str) -> int:
        with self.lock:
            self._db.execute(
                "INSERT INTO counters(name, value) VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET value = value + 1",
                (counter,),
            )
            return self._db.execute("SELECT value FROM counters WHERE name = ?", (counter,)).fetchone()[0]

    # --- blobs ---
    def blob_path(self, sha256: str) -> str:
        """Where a blob lives: ``blobs/<first two hex digits>/<sha256>``, as a plain string (the import's hot path)."""
        return os.path.join(self.blob_dir, sha256[:2], sha256)

    def put_blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not os.path.exists(path):
            folder = os.path.dirname(path)
            if folder not in self._blob_folders:
                os.makedirs(folder, exist_ok=True)
                self._blob_folders.add(folder)
            tmp = f"{path}.{threading.get_ident()}.tmp"
            with open(tmp, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        return digest

    def get_blob(self, sha256: str) -> bytes:
        with open(self.blob_path(sha256), "rb") as blob:
            return blob.read()

    # --- datasets / stores ---
    def get_json(self, table: str, name: str) -> dict | None:
        rows = self.query(f"SELECT body FROM {table} WHERE name = ?", (name,))
        return json.loads(rows[0][0]) if rows else None

    def list_json(self, table: str, column: str, value: str) -> list[dict]:
        rows = self.query(f"SELECT body FROM {table} WHERE {column} = ? ORDER BY name", (value,))
        return [json.loads(r[0]) for r in rows]

    # --- operations ---
    def save_operation(self, op: dict, request: dict | None = None) -> None:
        name = op["name"]
        dataset = name.split("/operations/")[0]
        with self.lock:
            self._db.execute(
                "INSERT INTO operations(name, dataset, seq, done, body, request) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET done = excluded.done, body = excluded.body",
                (
                    name,
                    dataset,
                    int(name.rsplit("/", 1)[1]),
                    int(bool(op.get("done"))),
                    json.dumps(op),
                    json.dumps(request or {}),
                ),
            )

    def record_operation_store(self, name: str, store: str) -> None:
        self.execute("INSERT OR REPLACE INTO op_stores(name, store) VALUES (?, ?)", (name, store))

    def operations_of_store(self, store: str) -> list[tuple[str, dict, dict]]:
        """(name, operation, request) of every operation started on the store, oldest first."""
        rows = self.query(
            "SELECT o.name, o.body, o.request FROM operations o JOIN op_stores s ON s.name = o.name "
            "WHERE s.store = ? ORDER BY o.seq",
            (store,),
        )
        return [(name, json.loads(body), json.loads(request)) for name, body, request in rows]

    def operation_request(self, name: str) -> dict:
        rows = self.query("SELECT request FROM operations WHERE name = ?", (name,))
        return json.loads(rows[0][0]) if rows else {}


def now_rfc3339(ts: float | None = None) -> str:
    ts = time.time() if ts is None else ts
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"
