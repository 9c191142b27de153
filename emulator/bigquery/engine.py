"""DuckDB-backed storage and job execution for the local BigQuery.

Each BigQuery project is a DuckDB catalog (one file under the state dir), each dataset a schema,
so ``project.dataset.table`` resolves natively after sqlglot translates GoogleSQL to DuckDB.
BigQuery schemas (modes, descriptions) are kept in ``meta.duckdb`` beside the data.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from emulator.bigquery import types as bqt
from emulator.httpbase import ApiError

_ANON = "_anon"


def bq_error(code: int, reason: str, message: str) -> ApiError:
    return ApiError(code, message, errors=[{"message": message, "domain": "global", "reason": reason}])


class JobError(Exception):
    """A job that ran and failed: becomes ``status.errorResult``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def check_partitioning(body: dict, schema: list[dict]) -> None:
    """``timePartitioning`` and ``clustering`` as BigQuery accepts them on tables.insert (a 400 otherwise)."""
    partitioning = body.get("timePartitioning")
    by_name = {f["name"].lower(): f for f in schema}
    if partitioning:
        if partitioning.get("type", "DAY") not in ("HOUR", "DAY", "MONTH", "YEAR"):
            raise ValueError(f"timePartitioning.type {partitioning.get('type')!r} must be HOUR, DAY, MONTH or YEAR")
        field = partitioning.get("field")
        if field:
            column = by_name.get(field.lower())
            if (
                column is None
                or column["type"] not in ("DATE", "TIMESTAMP", "DATETIME")
                or column["mode"] == "REPEATED"
            ):
                raise ValueError(
                    f"The field specified for time partitioning can only be of type TIMESTAMP, DATE or DATETIME, "
                    f"and must be a top-level column of the schema: {field!r}"
                )
        else:
            raise ValueError(
                "ingestion-time partitioning (timePartitioning without a field) is not supported by the local BigQuery"
            )
    for name in (body.get("clustering") or {}).get("fields") or []:
        if name.lower() not in by_name:
            raise ValueError(f"The field specified for clustering cannot be found in the schema: {name!r}")


STREAMING_PAST_DAYS, STREAMING_FUTURE_DAYS = 1825, 366
"""BigQuery streams into a column-partitioned table only rows whose partitioning value lies within 1825 days in the
past and 366 days in the future of the current date ("Streaming into partitioned tables",
https://cloud.google.com/bigquery/docs/streaming-data-into-bigquery#streaming_into_partitioned_tables)."""


def streaming_window_error(row: dict, partitioning: dict | None, today: Any) -> str | None:
    """Why a streamed row is refused by its table's time-unit column partitioning, or None."""
    field = (partitioning or {}).get("field")
    value = row.get(field) if field else None
    if not value:
        return None
    try:
        day = dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None
    if (today - day).days > STREAMING_PAST_DAYS or (day - today).days > STREAMING_FUTURE_DAYS:
        return (
            f"Value {value} for partitioning column {field} is outside the allowed bounds. You can only stream to "
            f"partitions within {STREAMING_PAST_DAYS} days in the past and {STREAMING_FUTURE_DAYS} days in the "
            "future relative to the current date."
        )
    return None


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Engine:
    def __init__(self, state_dir: str | os.PathLike, gcs: Any, extract_shard_rows: int = 1_000_000):
        self.root = Path(state_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(str(self.root / "meta.duckdb"))
        self.lock = threading.RLock()
        self.gcs = gcs
        self.extract_shard_rows = extract_shard_rows
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS datasets (project VARCHAR, dataset VARCHAR, body VARCHAR, "
            "PRIMARY KEY (project, dataset))"
        )
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS tables (project VARCHAR, dataset VARCHAR, tbl VARCHAR, "
            "body VARCHAR, PRIMARY KEY (project, dataset, tbl))"
        )
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS jobs (project VARCHAR, job_id VARCHAR, body VARCHAR, "
            "PRIMARY KEY (project, job_id))"
        )
        self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {_ANON}")
        for (project,) in self.con.execute("SELECT DISTINCT project FROM datasets").fetchall():
            self.attach(project)

    # --- catalogs --------------------------------------------------------------------------
    def attach(self, project: str) -> None:
        attached = {r[0] for r in self.con.execute("SELECT database_name FROM duckdb_databases()").fetchall()}
        if project not in attached:
            self.con.execute(f"ATTACH {self._lit(str(self.root / (project + '.duckdb')))} AS {q(project)}")

    @staticmethod
    def _lit(s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    # --- datasets --------------------------------------------------------------------------
    def get_dataset(self, project: str, dataset: str) -> dict | None:
        row = self.con.execute("SELECT body FROM datasets WHERE project=? AND dataset=?", [project, dataset]).fetchone()
        return json.loads(row[0]) if row else None

    def require_dataset(self, project: str, dataset: str) -> dict:
        ds = self.get_dataset(project, dataset)
        if ds is None:
            raise bq_error(404, "notFound", f"Not found: Dataset {project}:{dataset}")
        return ds

    def create_dataset(self, project: str, dataset: str, body: dict) -> dict:
        with self.lock:
            if self.get_dataset(project, dataset):
                raise bq_error(409, "duplicate", f"Already Exists: Dataset {project}:{dataset}")
            self.attach(project)
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {q(project)}.{q(dataset)}")
            now = str(int(time.time() * 1000))
            res = {
                "kind": "bigquery#dataset",
                "id": f"{project}:{dataset}",
                "datasetReference": {"projectId": project, "datasetId": dataset},
                "location": body.get("location") or "US",
                "creationTime": now,
                "lastModifiedTime": now,
                "etag": now,
                "labels": body.get("labels", {}),
            }
            if body.get("description"):
                res["description"] = body["description"]
            self.con.execute("INSERT INTO datasets VALUES (?,?,?)", [project, dataset, json.dumps(res)])
            return res

    def list_datasets(self, project: str) -> list[dict]:
        return [
            json.loads(r[0])
            for r in self.con.execute(
                "SELECT body FROM datasets WHERE project=? ORDER BY dataset", [project]
            ).fetchall()
        ]

    def delete_dataset(self, project: str, dataset: str, delete_contents: bool) -> None:
        with self.lock:
            self.require_dataset(project, dataset)
            n = self.con.execute(
                "SELECT COUNT(*) FROM tables WHERE project=? AND dataset=?", [project, dataset]
            ).fetchone()[0]
            if n and not delete_contents:
                raise bq_error(400, "resourceInUse", f"Dataset {project}:{dataset} is still in use")
            self.con.execute(f"DROP SCHEMA IF EXISTS {q(project)}.{q(dataset)} CASCADE")
            self.con.execute("DELETE FROM tables WHERE project=? AND dataset=?", [project, dataset])
            self.con.execute("DELETE FROM datasets WHERE project=? AND dataset=?", [project, dataset])

    # --- tables ----------------------------------------------------------------------------
    def _fq(self, project: str, dataset: str, table: str) -> str:
        return f"{q(project)}.{q(dataset)}.{q(table)}"

    def get_table(self, project: str, dataset: str, table: str) -> dict | None:
        row = self.con.execute(
            "SELECT body FROM tables WHERE project=? AND dataset=? AND tbl=?", [project, dataset, table]
        ).fetchone()
        if not row:
            return None
        body = json.loads(row[0])
        fq = self._fq(project, dataset, table)
        body["numRows"] = str(self.con.execute(f"SELECT COUNT(*) FROM {fq}").fetchone()[0])
        body["numBytes"] = str(self.column_bytes(project, dataset, table, None))
        return body

    def require_table(self, project: str, dataset: str, table: str) -> dict:
        self.require_dataset(project, dataset)
        t = self.get_table(project, dataset, table)
        if t is None:
            raise bq_error(404, "notFound", f"Not found: Table {project}:{dataset}.{table}")
        return t

    def schema(self, project: str, dataset: str, table: str) -> list[dict]:
        """A table's BigQuery schema, without the row and byte counts that ``get_table`` computes."""
        self.require_dataset(project, dataset)
        row = self.con.execute(
            "SELECT body FROM tables WHERE project=? AND dataset=? AND tbl=?", [project, dataset, table]
        ).fetchone()
        if not row:
            raise bq_error(404, "notFound", f"Not found: Table {project}:{dataset}.{table}")
        return json.loads(row[0])["schema"]["fields"]

    def create_table(self, project: str, dataset: str, table: str, body: dict) -> dict:
        with self.lock:
            self.require_dataset(project, dataset)
            if self.get_table(project, dataset, table):
                raise bq_error(409, "duplicate", f"Already Exists: Table {project}:{dataset}.{table}")
            schema = bqt.normalize_schema(body.get("schema", {}).get("fields", []))
            check_partitioning(body, schema)
            cols = ", ".join(f"{q(f['name'])} {bqt.duck_type(f)}" for f in schema)
            if not cols:
                cols = "_placeholder_no_columns VARCHAR"
            self.con.execute(f"CREATE TABLE {self._fq(project, dataset, table)} ({cols})")
            self._save_table(project, dataset, table, schema, body)
            return self.get_table(project, dataset, table)

    def _save_table(self, project: str, dataset: str, table: str, schema: list[dict], body: dict | None = None) -> None:
        now = str(int(time.time() * 1000))
        old = self.con.execute(
            "SELECT body FROM tables WHERE project=? AND dataset=? AND tbl=?", [project, dataset, table]
        ).fetchone()
        res = (
            json.loads(old[0])
            if old
            else {
                "kind": "bigquery#table",
                "id": f"{project}:{dataset}.{table}",
                "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
                "type": "TABLE",
                "location": (self.get_dataset(project, dataset) or {}).get("location") or "US",
                "creationTime": now,
            }
        )
        settable = ("description", "labels", "friendlyName", "expirationTime")
        for key in settable if old else (*settable, "timePartitioning", "clustering"):  # the latter only on insert
            if body and key in body:
                res[key] = body[key]
        res["schema"] = {"fields": schema}
        res["lastModifiedTime"] = now
        res["etag"] = now
        self.con.execute("INSERT OR REPLACE INTO tables VALUES (?,?,?,?)", [project, dataset, table, json.dumps(res)])

    def list_tables(self, project: str, dataset: str) -> list[dict]:
        self.require_dataset(project, dataset)
        out = []
        for (body,) in self.con.execute(
            "SELECT body FROM tables WHERE project=? AND dataset=? ORDER BY tbl", [project, dataset]
        ).fetchall():
            b = json.loads(body)
            out.append({k: b[k] for k in ("kind", "id", "tableReference", "type", "creationTime") if k in b})
        return out

    def delete_table(self, project: str, dataset: str, table: str) -> None:
        with self.lock:
            self.require_table(project, dataset, table)
            self.con.execute(f"DROP TABLE IF EXISTS {self._fq(project, dataset, table)}")
            self.con.execute("DELETE FROM tables WHERE project=? AND dataset=? AND tbl=?", [project, dataset, table])

    def patch_table(self, project: str, dataset: str, table: str, body: dict) -> dict:
        with self.lock:
            current = self.require_table(project, dataset, table)
            if "schema" in body:
                new = bqt.normalize_schema(body["schema"].get("fields", []))
                old = {f["name"]: f for f in current["schema"]["fields"]}
                for f in new:
                    if f["name"] not in old:
                        self.con.execute(
                            f"ALTER TABLE {self._fq(project, dataset, table)} ADD COLUMN "
                            f"{q(f['name'])} {bqt.duck_type(f)}"
                        )
                    elif bqt.duck_type(f) != bqt.duck_type(old[f["name"]]):
                        raise bq_error(
                            400,
                            "invalid",
                            f"Provided Schema does not match Table "
                            f"{project}:{dataset}.{table}. Field {f['name']} has changed type",
                        )
                missing = [n for n in old if n not in {f["name"] for f in new}]
                if missing:
                    raise bq_error(
                        400,
                        "invalid",
                        f"Provided Schema does not match Table {project}:{dataset}.{table}. "
                        f"Cannot add fields (field: {missing[0]})",
                    )
                self._save_table(project, dataset, table, new, body)
            else:
                self._save_table(project, dataset, table, current["schema"]["fields"], body)
            return self.get_table(project, dataset, table)

    def insert_rows(
        self,
        project: str,
        dataset: str,
        table: str,
        rows: list[dict],
        ignore_unknown: bool = False,
        skip_invalid: bool = False,
    ) -> list:
        """Insert JSON rows by name (tabledata.insertAll); return insertErrors for the rows refused.

        Refused: unknown fields, and rows outside a column-partitioned table's streaming window. Without
        ``skipInvalidRows`` one refused row stops the whole request, as on BigQuery; with it, the others go in.
        """
        with self.lock:
            schema = self.schema(project, dataset, table)
            names = {f["name"] for f in schema}
            stored = self.con.execute(
                "SELECT body FROM tables WHERE project=? AND dataset=? AND tbl=?", [project, dataset, table]
            ).fetchone()
            partitioning = json.loads(stored[0]).get("timePartitioning")
            today = dt.datetime.now(dt.UTC).date()
            errors, good = [], []
            for i, row in enumerate(rows):
                unknown = [k for k in row if k not in names]
                window = streaming_window_error(row, partitioning, today)
                if window:
                    errors.append({"index": i, "errors": [{"reason": "invalid", "message": window}]})
                elif unknown and not ignore_unknown:
                    errors.append(
                        {
                            "index": i,
                            "errors": [
                                {
                                    "reason": "invalid",
                                    "location": unknown[0],
                                    "message": f"no such field: {unknown[0]}.",
                                }
                            ],
                        }
                    )
                else:
                    good.append({k: v for k, v in row.items() if k in names})
            if errors and not skip_invalid:
                refused = {e["index"] for e in errors}
                stopped = [
                    {"index": i, "errors": [{"reason": "stopped", "message": ""}]}
                    for i in range(len(rows))
                    if i not in refused
                ]
                return sorted(errors + stopped, key=lambda e: e["index"])
            self._insert_json(self._fq(project, dataset, table), schema, good)
            return errors

    def _insert_json(self, fq: str, schema: list[dict], rows: list[dict]) -> None:
        if not rows:
            return
        json_cols = [f["name"] for f in schema if f["type"] == "JSON" and f["mode"] != "REPEATED"]
        for r in rows:  # the REST API carries JSON values as JSON-encoded strings
            for c in json_cols:
                if isinstance(r.get(c), str):
                    try:
                        r[c] = json.loads(r[c])
                    except ValueError:
                        pass
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
            path = fh.name
        try:
            cols = "{" + ", ".join(f"{self._lit(f['name'])}: {self._lit(bqt.duck_type(f))}" for f in schema) + "}"
            self.con.execute(
                f"INSERT INTO {fq} BY NAME SELECT * FROM read_json({self._lit(path)}, "
                f"format='newline_delimited', columns={cols})"
            )
        except duckdb.Error as exc:
            raise JobError("invalid", f"Error while reading data: {exc}") from None
        finally:
            os.unlink(path)

    def read_rows(
        self, fq: str, start: int = 0, limit: int | None = None, columns: list[str] | None = None
    ) -> list[tuple]:
        cols = ", ".join(q(c) for c in columns) if columns else "*"
        sql = (
            f"SELECT {cols} FROM {fq}" + (f" LIMIT {int(limit)}" if limit is not None else "") + f" OFFSET {int(start)}"
        )
        return self.con.execute(sql).fetchall()

    def column_bytes(
        self, project: str, dataset: str, table: str, columns: set[str] | None, partition_filter: str = ""
    ) -> int:
        """Logical bytes BigQuery would bill for reading these columns (all if None), in the partitions that
        ``partition_filter`` (a DuckDB condition, see :meth:`referenced_bytes`) leaves."""
        row = self.con.execute(
            "SELECT body FROM tables WHERE project=? AND dataset=? AND tbl=?", [project, dataset, table]
        ).fetchone()
        if not row:
            return 0
        fields = json.loads(row[0])["schema"]["fields"]
        parts = []
        for f in fields:
            if columns is not None and f["name"].lower() not in columns:
                continue
            c, t = q(f["name"]), f["type"]
            if f["mode"] == "REPEATED" or t in ("RECORD", "JSON"):
                parts.append(f"COALESCE(SUM(strlen(CAST({c} AS VARCHAR))), 0)")
            elif t == "STRING":
                parts.append(f"COALESCE(SUM(2 + strlen({c})), 0)")
            elif t == "BYTES":
                parts.append(f"COALESCE(SUM(2 + octet_length({c})), 0)")
            elif t == "BOOLEAN":
                parts.append(f"COUNT({c})")
            elif t in ("NUMERIC", "BIGNUMERIC"):
                parts.append(f"16 * COUNT({c})")
            else:
                parts.append(f"8 * COUNT({c})")
        if not parts:
            return 0
        where = f" WHERE {partition_filter}" if partition_filter else ""
        return int(
            self.con.execute(f"SELECT {' + '.join(parts)} FROM {self._fq(project, dataset, table)}{where}").fetchone()[
                0
            ]
        )

    # --- jobs --------------------------------------------------------------------------------
    def get_job(self, project: str, job_id: str) -> dict | None:
        row = self.con.execute("SELECT body FROM jobs WHERE project=? AND job_id=?", [project, job_id]).fetchone()
        return json.loads(row[0]) if row else None

    def save_job(self, project: str, job_id: str, job: dict) -> None:
        self.con.execute("INSERT OR REPLACE INTO jobs VALUES (?,?,?)", [project, job_id, json.dumps(job)])

    def translate(self, sql: str) -> tuple[str, exp.Expression]:
        if re.search(r"\[[\w.-]+:[\w.]+\]", sql):
            raise JobError(
                "invalidQuery",
                "Legacy SQL table references like [project:dataset.table] are not supported "
                "by the local BigQuery: use standard SQL (useLegacySql: false) and "
                "`project.dataset.table`.",
            )
        try:
            trees = sqlglot.parse(sql, read="bigquery")
        except sqlglot.errors.ParseError as exc:
            raise JobError("invalidQuery", f"Syntax error: {exc}") from None
        trees = [t for t in trees if t is not None]
        if len(trees) != 1:
            raise JobError("invalidQuery", "the local BigQuery runs exactly one statement per query job")
        return trees[0].sql(dialect="duckdb"), trees[0]

    def referenced_bytes(
        self, tree: exp.Expression, project: str, default_dataset: dict | None, params: Any = None
    ) -> int:
        """Bytes of the columns the query names, in the partitions its filters leave.

        A table partitioned on a column (``timePartitioning.field``) is pruned by each AND-ed condition of a WHERE
        that names that column and no other (query parameters and constants allowed), as BigQuery does for a
        filter that isolates the partitioning column. A partition counts whole once one of its rows passes.
        """
        star = any(True for _ in tree.find_all(exp.Star))
        cols = {c.name.lower() for c in tree.find_all(exp.Column)}
        total = 0
        for t in tree.find_all(exp.Table):
            p = t.catalog or project
            d = t.db or (default_dataset or {}).get("datasetId")
            if d:
                pruning = self._partition_filter(tree, p, d, t.name, params)
                total += self.column_bytes(p, d, t.name, None if star else cols, pruning)
        return total

    def _partition_filter(self, tree: exp.Expression, project: str, dataset: str, table: str, params: Any) -> str:
        row = self.con.execute(
            "SELECT body FROM tables WHERE project=? AND dataset=? AND tbl=?", [project, dataset, table]
        ).fetchone()
        partitioning = json.loads(row[0]).get("timePartitioning") if row else None
        if not partitioning or not partitioning.get("field"):
            return ""
        field = partitioning["field"]
        conditions = [
            c
            for where in tree.find_all(exp.Where)
            for c in (where.this.flatten() if isinstance(where.this, exp.And) else [where.this])
        ]
        isolating = []
        for condition in conditions:
            names = {c.name.lower() for c in condition.find_all(exp.Column)}
            if names == {field.lower()} and not any(True for _ in condition.find_all(exp.Select)):
                unqualified = condition.copy().transform(
                    lambda n: exp.column(n.name, quoted=True) if isinstance(n, exp.Column) else n
                )
                isolating.append(unqualified.sql(dialect="duckdb"))
        if not isolating:
            return ""
        unit = {"HOUR": "hour", "DAY": "day", "MONTH": "month", "YEAR": "year"}[partitioning.get("type", "DAY")]
        partition = f"date_trunc('{unit}', {q(field)})"
        predicate = " AND ".join(f"({c})" for c in isolating)
        sql = f"SELECT DISTINCT {partition} FROM {self._fq(project, dataset, table)} WHERE {predicate}"
        used = {k: v for k, v in params.items() if f"${k}" in sql} if isinstance(params, dict) else params
        try:
            kept = [r[0] for r in (self.con.execute(sql, used) if used else self.con.execute(sql)).fetchall()]
        except duckdb.Error:
            return ""
        if not kept:
            return "FALSE"
        listed = ", ".join(self._lit(str(v)) for v in kept if v is not None)
        null_kept = any(v is None for v in kept)
        parts = ([f"{partition} IN ({listed})"] if listed else []) + ([f"{q(field)} IS NULL"] if null_kept else [])
        return " OR ".join(parts)

    def run_query(self, project: str, sql: str, params: Any, default_dataset: dict | None, into: str | None) -> None:
        """Execute translated SQL; a SELECT is materialized into ``into`` (a fully quoted table name)."""
        self.attach(project)
        for t in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Table):
            if t.catalog:
                self.attach(t.catalog)
        target = q(project)
        if default_dataset and default_dataset.get("datasetId"):
            target += "." + q(default_dataset["datasetId"])
        self.con.execute(f"USE {target}")
        try:
            statement = f"CREATE OR REPLACE TABLE {into} AS {sql}" if into else sql
            self.con.execute(statement, params) if params else self.con.execute(statement)
        except duckdb.CatalogException as exc:
            msg = str(exc).split("\n")[0]
            m = re.search(r"Table with name (\S+) does not exist", msg)
            raise JobError("notFound", f"Not found: Table {m[1] if m else ''}: {msg}") from None
        except duckdb.Error as exc:
            raise JobError("invalidQuery", str(exc).split("\n")[0]) from None
        finally:
            self.con.execute("USE meta.main")  # the catalog database, whatever datasets are named

    def schema_of(self, fq: str) -> list[dict]:
        rel = self.con.table(fq)
        return [bqt.bq_field_from_duck(n, t) for n, t in zip(rel.columns, rel.types, strict=False)]

    def copy_into(self, source: str, dest: str, dest_parts: tuple[str, str, str], mode: str) -> None:
        """Write a materialized result into a destination table (replace or append)."""
        try:
            if mode == "append":
                self.con.execute(f"INSERT INTO {dest} BY NAME SELECT * FROM {source}")
            else:
                self.con.execute(f"CREATE OR REPLACE TABLE {dest} AS SELECT * FROM {source}")
                self._save_table(*dest_parts, self.schema_of(dest))
        except duckdb.Error as exc:
            raise JobError("invalid", str(exc).split("\n")[0]) from None

    # --- extract / load --------------------------------------------------------------------
    def extract(
        self,
        project: str,
        dataset: str,
        table: str,
        uris: list[str],
        fmt: str,
        header: bool,
        delimiter: str,
        compression: str,
    ) -> list[int]:
        schema = self.schema(project, dataset, table)
        rows = self.read_rows(self._fq(project, dataset, table))
        fmt = (fmt or "CSV").upper()
        if fmt == "CSV" and any(f["type"] == "RECORD" or f["mode"] == "REPEATED" for f in schema):
            raise JobError(
                "invalid",
                f"Operation cannot be performed on a nested schema. Field: "
                f"{next(f['name'] for f in schema if f['type'] == 'RECORD' or f['mode'] == 'REPEATED')}",
            )
        if fmt not in ("CSV", "NEWLINE_DELIMITED_JSON"):
            raise JobError(
                "invalid",
                f"destinationFormat {fmt} is not supported by the local BigQuery (use CSV or NEWLINE_DELIMITED_JSON)",
            )
        if len(uris) != 1:
            raise JobError("invalid", "the local BigQuery supports exactly one destination URI")
        uri = uris[0]
        sharded = "*" in uri
        shards = [rows[i : i + self.extract_shard_rows] for i in range(0, len(rows), self.extract_shard_rows)] or [[]]
        if not sharded and len(shards) > 1:
            raise JobError(
                "invalid",
                f"Table {project}:{dataset}.{table} is too large to be exported to a single file. "
                "Specify a uri including a * to shard export.",
            )
        counts = []
        for n, shard in enumerate(shards):
            buf = io.StringIO()
            if fmt == "CSV":
                w = csv.writer(buf, delimiter=delimiter or ",", lineterminator="\n")
                if header:
                    w.writerow([f["name"] for f in schema])
                for row in shard:
                    w.writerow([bqt.to_csv_cell(v, f) for v, f in zip(row, schema, strict=False)])
            else:
                for row in shard:
                    obj = {f["name"]: bqt.to_plain(v, f) for v, f in zip(row, schema, strict=False) if v is not None}
                    buf.write(json.dumps(obj) + "\n")
            data = buf.getvalue().encode()
            if (compression or "NONE").upper() == "GZIP":
                data = gzip.compress(data)
            target = uri.replace("*", f"{n:012d}") if sharded else uri
            bucket, _, name = target[len("gs://") :].partition("/")
            self.gcs.upload(bucket, name, data, "text/csv" if fmt == "CSV" else "application/json")
            counts.append(len(shard))
        return counts

    def load(self, project: str, dataset: str, table: str, uris: list[str], cfg: dict) -> int:
        from emulator.rules import listing_prefix, object_pattern

        fmt = (cfg.get("sourceFormat") or "CSV").upper()
        blobs = []
        for uri in uris:
            bucket, _, name = uri[len("gs://") :].partition("/")
            if "*" in name:
                rx = object_pattern(name.replace("*", "**") if name.count("*") == 1 else name)
                names = [o["name"] for o in self.gcs.list(bucket, listing_prefix(name)) if rx.fullmatch(o["name"])]
            else:
                names = [name]
            for n in names:
                data = self.gcs.download(bucket, n)
                blobs.append(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
        if not blobs:
            raise JobError("notFound", f"Not found: URI {uris[0]}")
        schema = bqt.normalize_schema((cfg.get("schema") or {}).get("fields", []))
        existing = self.get_table(project, dataset, table)
        if not schema and existing:
            schema = existing["schema"]["fields"]
        rows: list[dict] = []
        if fmt == "NEWLINE_DELIMITED_JSON":
            for blob in blobs:
                rows += [json.loads(line) for line in blob.decode().splitlines() if line.strip()]
            if not schema:
                keys: dict[str, None] = {}
                for r in rows:
                    keys.update(dict.fromkeys(r))
                schema = [{"name": k, "type": "STRING", "mode": "NULLABLE"} for k in keys]
        elif fmt == "CSV":
            skip = int(cfg.get("skipLeadingRows", 0) or 0)
            delim = cfg.get("fieldDelimiter") or ","
            for blob in blobs:
                lines = list(csv.reader(io.StringIO(blob.decode()), delimiter=delim))[skip:]
                if not schema:
                    schema = [
                        {"name": f"string_field_{i}", "type": "STRING", "mode": "NULLABLE"}
                        for i in range(len(lines[0]))
                    ]
                rows += [
                    {f["name"]: (v if v != "" else None) for f, v in zip(schema, line, strict=False)} for line in lines
                ]
        else:
            raise JobError("invalid", f"sourceFormat {fmt} is not supported by the local BigQuery")
        disposition = cfg.get("writeDisposition") or "WRITE_APPEND"
        if existing and disposition == "WRITE_TRUNCATE":
            self.delete_table(project, dataset, table)
            existing = None
        if existing and disposition == "WRITE_EMPTY" and int(existing["numRows"]):
            raise JobError("duplicate", f"Already Exists: Table {project}:{dataset}.{table}")
        if not existing:
            self.create_table(project, dataset, table, {"schema": {"fields": schema}})
        self._insert_json(self._fq(project, dataset, table), self.schema(project, dataset, table), rows)
        return len(rows)
