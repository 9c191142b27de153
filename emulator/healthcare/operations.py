"""Long-running operations of the local Healthcare API: import, export to GCS and to BigQuery.

Each operation runs on its own thread, never inside the request. Objects are read and rendered by a
small pool of I/O threads; one collector thread per operation updates the index, so duplicate
detection is exact. Counters live in memory while the operation runs and are flushed to SQLite
about once a second and at the end.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from emulator.gcs import GcsClient, GcsError
from emulator.healthcare import deidentify as deid
from emulator.healthcare import dicom
from emulator.healthcare.storage import Storage, now_rfc3339
from emulator.rules import (
    RequestError,
    ResourcePath,
    export_type,
    listing_prefix,
    object_pattern,
    resource_paths,
    storage_uri,
    table_uri,
)

log = logging.getLogger(__name__)

_TYPE_PREFIX = "type.googleapis.com/google.cloud.healthcare"


@dataclass
class Settings:
    """Behaviour knobs; the documented default comes first in each comment."""

    base_url: str = "http://127.0.0.1:0"
    latency_s: float = 0.0  # per-instance delay, to make operations last seconds to minutes
    io_threads: int = 8
    question_crosses_slash: bool = False  # '?' matches any character but '/'
    empty_import: str = "error"  # error (NOT_FOUND) | success
    unmatched_filter: str = "failure"  # failure (counted and logged) | ignore
    force_failure: int = 0  # the next N operations fail with INTERNAL
    dataset_create_s: float = 0.5  # how long datasets.create's operation runs before the dataset exists
    bigquery_endpoint: str = ""
    logging_endpoint: str = ""  # where per-instance errors are written (Cloud Logging); none: they are dropped
    allow_cross_project_bigquery: bool = True
    # Undocumented by Google, so settings that the product must handle at any value
    # (../shared/reference/healthcare-api.md §1.7: operations.list documents no filter and no freshness):
    clock_offset_s: float = 0.0  # the server's clock minus the client's: createTime/endTime are stamped with it
    operations_list_lag_s: float = 0.0  # a new operation shows in operations.list only this long after its creation
    # "There might be a delay between when you modify the data and when the modifications are shown in the DICOM
    # store metrics" (https://cloud.google.com/healthcare-api/docs/dicom-store-metrics), with no figure given:
    metrics_lag_s: float = 0.0  # getDICOMStoreMetrics counts an instance only this long after it was stored
    # The streamed row of a storage-class change has a Type the docs do not name ("e.g. INSERT, DELETE"):
    storage_class_change_type: str = "UPDATE"


class Cancelled(Exception):
    pass


class OpFailed(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class RunningOp:
    name: str
    version: str
    method: str
    created: float
    counter: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0, "pending": 0})
    cancel: threading.Event = field(default_factory=threading.Event)
    store: str = ""
    service: str = "dicom.DicomService"
    response: dict | None = None  # the operation's response when it succeeds; default: the method's empty one
    logs: list[dict] = field(default_factory=list)
    last_flush: float = 0.0


class OperationEngine:
    def __init__(self, storage: Storage, settings: Settings, gcs: GcsClient):
        self.storage = storage
        self.settings = settings
        self.gcs = gcs
        self.log_sink = CloudLoggingWriter(settings.logging_endpoint)
        self.running: dict[str, RunningOp] = {}
        self.synthetic: dict[str, tuple[RunningOp, float, float, int]] = {}
        self._lock = threading.Lock()
        self._abort_interrupted()

    # --- bookkeeping -----------------------------------------------------------------------
    def _abort_interrupted(self) -> None:
        """Operations that were running when the service stopped end with ABORTED (documented)."""
        for (body,) in self.storage.query("SELECT body FROM operations WHERE done = 0"):
            op = json.loads(body)
            counter = op["metadata"].get("counter", {})
            op["done"] = True
            op["metadata"]["endTime"] = now_rfc3339()
            op["error"] = {
                "code": 10,
                "message": (
                    "The local Healthcare API restarted while this operation was running; it was aborted after "
                    f"{counter.get('success', '0')} successes and {counter.get('failure', '0')} failures. Submit "
                    "it again: identical instances are ignored on import and exported objects are overwritten."
                ),
            }
            self.storage.save_operation(op)

    def new_operation(
        self, dataset: str, version: str, method: str, request: dict, store: str | None = None
    ) -> RunningOp:
        op_id = self.storage.next_id("operation") + 10_000_000_000
        run = RunningOp(f"{dataset}/operations/{op_id}", version, method, time.time(), store=store or "")
        self.storage.save_operation(self.snapshot(run), request)
        if store:
            self.storage.record_operation_store(run.name, store)
        with self._lock:
            self.running[run.name] = run
        return run

    def snapshot(self, run: RunningOp, done: bool = False, error: dict | None = None) -> dict:
        counter = {k: str(v) for k, v in run.counter.items() if v}  # proto3 JSON omits zeros
        metadata: dict[str, Any] = {
            "@type": f"{_TYPE_PREFIX}.{run.version}.OperationMetadata",
            "apiMethodName": f"google.cloud.healthcare.{run.version}.{run.service}.{run.method}",
            "createTime": now_rfc3339(run.created + self.settings.clock_offset_s),
            "logsUrl": console_logs_url(run.name),
            "counter": counter,
        }
        if run.cancel.is_set():
            metadata["cancelRequested"] = True
        op: dict[str, Any] = {"name": run.name, "metadata": metadata}
        if done:
            metadata["endTime"] = now_rfc3339(time.time() + self.settings.clock_offset_s)
            op["done"] = True
            if error:
                op["error"] = error
            else:
                op["response"] = run.response or {"@type": f"{_TYPE_PREFIX}.{run.version}.dicom.{run.method}Response"}
        return op

    def add_synthetic(self, dataset: str, count: int, duration_s: float, instances: int) -> list[str]:
        """Operations whose counters follow the clock, with no thread behind them (for scale benchmarks)."""
        names = []
        for _ in range(count):
            run = self.new_operation(dataset, "v1", "ImportDicomData", {"synthetic": True})
            with self._lock:
                self.running.pop(run.name, None)
            self.synthetic[run.name] = (run, time.time(), duration_s, instances)
            names.append(run.name)
        return names

    def _synthetic_snapshot(self, name: str) -> dict:
        run, started, duration, total = self.synthetic[name]
        elapsed = time.time() - started
        done_count = total if elapsed >= duration else int(total * elapsed / duration)
        run.counter.update(success=done_count, pending=total - done_count)
        if run.cancel.is_set() or elapsed >= duration:
            self.synthetic.pop(name)
            run.counter["pending"] = 0
            error = {"code": 1, "message": "Operation was cancelled."} if run.cancel.is_set() else None
            op = self.snapshot(run, done=True, error=error)
            self.storage.save_operation(op)
            return op
        return self.snapshot(run)

    def get(self, name: str) -> dict | None:
        if name in self.synthetic:
            return self._synthetic_snapshot(name)
        run = self.running.get(name)
        if run is not None:
            return self.snapshot(run)
        rows = self.storage.query("SELECT body FROM operations WHERE name = ?", (name,))
        return json.loads(rows[0][0]) if rows else None

    def age_s(self, name: str) -> float:
        """Seconds since the operation was created (on the server's clock, like its createTime)."""
        run = self.running.get(name)
        if run is not None:
            return time.time() - run.created
        op = self.get(name) or {}
        stamp = (op.get("metadata") or {}).get("createTime", "")
        try:
            created = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC)
        except ValueError:
            return float("inf")
        return time.time() + self.settings.clock_offset_s - created.timestamp()

    def cancel(self, name: str) -> bool:
        if name in self.synthetic:
            self.synthetic[name][0].cancel.set()
            return True
        run = self.running.get(name)
        if run is not None:
            run.cancel.set()
            return True
        return False

    def _flush(self, run: RunningOp, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - run.last_flush > 1.0:
            run.last_flush = now
            self.log_sink.write(run)
            self.storage.save_operation(self.snapshot(run))

    def _finish(self, run: RunningOp, error: dict | None) -> None:
        self.log_sink.write(run)
        self.storage.save_operation(self.snapshot(run, done=True, error=error))
        with self._lock:
            self.running.pop(run.name, None)

    def _instance_failed(
        self, run: RunningOp, entry_type: str, store: str, item: tuple, error: dicom.InstanceError
    ) -> None:
        """Count a stored instance that failed, and log it by its DICOMweb resource name."""
        run.counter["failure"] += 1
        path = f"{store}/dicomWeb/studies/{item[0]}/series/{item[1]}/instances/{item[2]}"
        self._log(run, entry_type, "resourceName", path, error.code, error.message)

    def _log(self, run: RunningOp, entry_type: str, key: str, value: str, code: int, message: str) -> None:
        run.logs.append(
            {"@type": f"{_TYPE_PREFIX}.logging.{entry_type}", key: value, "error": {"code": code, "message": message}}
        )

    def start(self, run: RunningOp, work: Callable[[RunningOp], None]) -> None:
        def main() -> None:
            error = None
            try:
                if self.settings.force_failure > 0 and run.service == "dicom.DicomService":
                    self.settings.force_failure -= 1
                    raise OpFailed(13, "injected operation failure (local emulator fault injection)")
                work(run)
                if run.counter["failure"]:
                    noun = {"ImportDicomData": "importing", "DeidentifyDicomStore": "de-identifying"}.get(
                        run.method, "exporting"
                    )
                    error = {
                        "code": 3,
                        "message": (
                            f"{noun} one or more DICOM instances failed ({run.counter['failure']} of "
                            f"{run.counter['failure'] + run.counter['success']}). Please use the link in the "
                            "metadata.logsUrl field to view the error logs for this operation."
                        ),
                    }
            except Cancelled:
                error = {"code": 1, "message": "Operation was cancelled."}
            except OpFailed as exc:
                error = {"code": exc.code, "message": exc.message}
            except Exception as exc:  # a bug or an unreachable dependency: end the LRO, never hang it
                log.exception("operation %s crashed", run.name)
                error = {"code": 13, "message": f"internal error: {type(exc).__name__}: {exc}"}
            run.counter["pending"] = 0
            self._finish(run, error)

        threading.Thread(target=main, name=f"op-{run.name.rsplit('/', 1)[1]}", daemon=True).start()

    def _process(
        self, run: RunningOp, items: list, worker: Callable[[Any], Any], collect: Callable[[Any, Any], None]
    ) -> None:
        """Run ``worker`` over items on the I/O pool; ``collect`` runs on this thread, in completion order."""
        run.counter["pending"] = len(items)
        with ThreadPoolExecutor(max_workers=self.settings.io_threads) as pool:
            futures = {pool.submit(worker, item): item for item in items}
            try:
                for fut in as_completed(futures):
                    if run.cancel.is_set():
                        raise Cancelled()
                    if self.settings.latency_s:
                        time.sleep(self.settings.latency_s)
                    collect(futures[fut], fut.result())
                    run.counter["pending"] -= 1
                    self._flush(run)
            finally:
                for f in futures:
                    f.cancel()
        if run.cancel.is_set():
            raise Cancelled()

    # --- import ------------------------------------------------------------------------------
    def run_import(self, run: RunningOp, store: str, uri: str) -> None:
        parsed = storage_uri(uri, "gcsSource.uri")
        regex = object_pattern(parsed.name, question_crosses_slash=self.settings.question_crosses_slash)
        has_wildcard = any(c in parsed.name for c in "*?")
        try:
            if has_wildcard:
                names = [
                    o["name"]
                    for o in self.gcs.list(parsed.bucket, listing_prefix(parsed.name))
                    if regex.fullmatch(o["name"])
                ]
            else:
                names = (
                    [parsed.name]
                    if any(o["name"] == parsed.name for o in self.gcs.list(parsed.bucket, parsed.name))
                    else []
                )
        except GcsError as exc:
            if exc.status == 404:
                raise OpFailed(5, f"bucket gs://{parsed.bucket} not found") from None
            raise OpFailed(7, "Healthcare API doesn't have required Cloud Storage permission: " + str(exc)) from None
        if not names and self.settings.empty_import == "error":
            raise OpFailed(5, f"no objects matched gcsSource.uri {uri!r}")

        def worker(name: str) -> Any:
            try:
                data = self.gcs.download(parsed.bucket, name)
                inst = dicom.parse_instance(data, with_metadata=False)
                return len(data), self.storage.put_blob(data), inst
            except dicom.InstanceError as exc:
                return exc
            except GcsError as exc:
                return dicom.InstanceError(5 if exc.status == 404 else 14, str(exc))

        added: list[str] = []

        def collect(name: str, result: Any) -> None:
            source = f"gs://{parsed.bucket}/{name}"
            if isinstance(result, dicom.InstanceError):
                run.counter["failure"] += 1
                self._log(run, "ImportDicomLogEntry", "source", source, result.code, result.message)
                return
            size, sha, inst = result
            with self.storage.lock:
                rows = self.storage.query(
                    "SELECT sha256 FROM instances WHERE store=? AND study=? AND series=? AND sop=?",
                    (store, inst.study, inst.series, inst.sop),
                )
                if rows and rows[0][0] != sha:
                    run.counter["failure"] += 1
                    self._log(
                        run,
                        "ImportDicomLogEntry",
                        "source",
                        source,
                        6,
                        "An instance already exists in this DICOM Store with the same Study/Series/SOPInstance "
                        "UID, but the DICOM files differ (checksum mismatch).",
                    )
                    return
                if not rows:
                    self._insert(store, inst, sha, size)
                    added.append(sha)
            run.counter["success"] += 1

        self._process(run, names, worker, collect)
        self.stream(store, added)

    def _insert(self, store: str, inst: Any, sha: str, size: int) -> None:
        """Index a stored blob as an instance of ``store``; its metadata is built on first read."""
        self.storage.execute(
            "INSERT INTO instances(store, study, series, sop, sha256, size, metadata, created) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (store, inst.study, inst.series, inst.sop, sha, size, "", time.time()),
        )

    STREAM_COLUMNS = [
        {"name": "LastUpdated", "type": "TIMESTAMP", "mode": "NULLABLE"},
        {"name": "Type", "type": "STRING", "mode": "NULLABLE"},
        {"name": "StorageClass", "type": "STRING", "mode": "NULLABLE"},
    ]
    """What a streamed row adds to the flattened metadata: when and how the instance changed (discovery document v1,
    ``SchemaJSON``: ``LastUpdated`` TIMESTAMP, ``Type`` STRING, e.g. INSERT, DELETE)."""

    def stream(self, store: str, shas: list[str], change: str = "INSERT") -> None:
        """Append a row per changed instance to the store's ``streamConfigs`` BigQuery tables, as Google does.

        The table is a change log: Google streams a row when an instance is stored (``INSERT``) and when it is
        deleted (``DELETE``), and "Instance deletions are not applied to the destination table" (``StreamConfig``,
        https://cloud.google.com/healthcare-api/docs/how-tos/dicom-bigquery-streaming). Rows have the flattened
        schema of the metadata export plus ``LastUpdated`` and ``Type``, and go in with streaming inserts
        (``tabledata.insertAll``), so BigQuery's streaming rules apply: a row it refuses (outside a partitioned
        table's window, say) is lost, and, as on Google, neither that nor a failing stream fails the import, the
        STOW or the delete that fed it: Google only logs it.
        """
        configs = (self.storage.get_json("stores", store) or {}).get("streamConfigs") or []
        if not shas or not configs:
            return
        stamp = now_rfc3339(time.time() + self.settings.clock_offset_s)
        classes = self.storage_classes(store)
        rows, schemas = [], []
        for sha in shas:
            row, fields = dicom.flatten(dicom.read_for_bigquery(self.storage.get_blob(sha)))
            uids = (row.get("StudyInstanceUID"), row.get("SeriesInstanceUID"), row.get("SOPInstanceUID"))
            row.update({"LastUpdated": stamp, "Type": change, "StorageClass": classes.get(uids, "STANDARD")})
            fields.update({f["name"]: f for f in self.STREAM_COLUMNS})
            rows.append(row)
            schemas.append(fields)
        schema = dicom.merge_schema(schemas)
        for config in configs:
            destination = config.get("bigqueryDestination") or {}
            try:
                table = table_uri(destination.get("tableUri"), "bigqueryDestination.tableUri")
                BigQueryWriter(self.settings.bigquery_endpoint, table).write(
                    schema, [dicom.conform_row(r, schema) for r in rows], "WRITE_APPEND", skip_invalid=True
                )
            except (OpFailed, RequestError) as exc:
                log.warning("stream to %r failed: %s", destination.get("tableUri"), exc)

    def storage_classes(self, store: str) -> dict[tuple, str]:
        """The instances whose blob storage class ``setBlobStorageSettings`` changed; the others are STANDARD."""
        rows = self.storage.query("SELECT study, series, sop, class FROM storage_classes WHERE store=?", (store,))
        return {(study, series, sop): cls for study, series, sop, cls in rows}

    def run_set_storage_class(self, run: RunningOp, store: str, storage_class: str, filter_uri: str | None) -> None:
        """``setBlobStorageSettings``: the instances selected (all, or those of the filter file) take the class; each
        one whose class changes is streamed with ``Type`` = ``storage_class_change_type``."""
        changed, classes = [], self.storage_classes(store)
        for study, series, sop, sha in self._select(run, store, filter_uri):
            if run.cancel.is_set():
                raise Cancelled()
            if classes.get((study, series, sop), "STANDARD") != storage_class:
                self.storage.execute(
                    "INSERT OR REPLACE INTO storage_classes VALUES (?,?,?,?,?)",
                    (store, study, series, sop, storage_class),
                )
                changed.append(sha)
            run.counter["success"] += 1
        self.stream(store, changed, change=self.settings.storage_class_change_type)

    # --- export ------------------------------------------------------------------------------
    def _select(
        self, run: RunningOp, store: str, filter_uri: str | None, entry_type: str = "ExportDicomLogEntry"
    ) -> list[tuple[str, str, str, str]]:
        rows = self.storage.query(
            "SELECT study, series, sop, sha256 FROM instances WHERE store=? ORDER BY study, series, sop", (store,)
        )
        if not filter_uri:
            return rows
        parsed = storage_uri(filter_uri, "filterConfig.resourcePathsGcsUri")
        try:
            text = self.gcs.download(parsed.bucket, parsed.name).decode("utf-8", errors="replace")
        except GcsError as exc:
            raise OpFailed(5 if exc.status == 404 else 7, f"cannot read filter file {filter_uri}: {exc}") from None
        try:
            paths: list[ResourcePath] = resource_paths(text)
        except RequestError as exc:
            raise OpFailed(3, f"invalid filter file {filter_uri}: {exc}") from None
        selected = [r for r in rows if any(p.matches(r[0], r[1], r[2]) for p in paths)]
        for p in paths:
            if not any(p.matches(r[0], r[1], r[2]) for r in rows) and self.settings.unmatched_filter == "failure":
                run.counter["failure"] += 1
                self._log(
                    run,
                    entry_type,
                    "resourceName",
                    f"{store}/dicomWeb{p}",
                    5,
                    "resource in the filter file was not found in the DICOM store",
                )
        return selected

    def run_export_gcs(
        self, run: RunningOp, store: str, uri_prefix: str, mime_type: str | None, filter_uri: str | None
    ) -> None:
        mime = export_type(mime_type, "gcsDestination.mimeType")
        dest = storage_uri(uri_prefix, "gcsDestination.uriPrefix", object_required=False)
        prefix = dest.name.rstrip("/") + "/" if dest.name else ""
        items = self._select(run, store, filter_uri)

        def worker(item: tuple) -> Any:
            study, series, sop, sha = item
            try:
                objects = dicom.render_export(self.storage.get_blob(sha), mime)
                for suffix, data, content_type in objects:
                    self.gcs.upload(dest.bucket, f"{prefix}{study}/{series}/{sop}{suffix}", data, content_type)
                return None
            except dicom.InstanceError as exc:
                return exc
            except GcsError as exc:
                return dicom.InstanceError(7 if exc.status == 403 else 14, str(exc))
            except Exception as exc:
                return dicom.InstanceError(13, f"cannot export instance: {type(exc).__name__}: {exc}")

        def collect(item: tuple, result: Any) -> None:
            if isinstance(result, dicom.InstanceError):
                self._instance_failed(run, "ExportDicomLogEntry", store, item, result)
            else:
                run.counter["success"] += 1

        self._process(run, items, worker, collect)

    def run_deidentify(
        self, run: RunningOp, store: str, destination: str, cfg: deid.DicomDeidConfig, filter_uri: str | None
    ) -> None:
        """De-identify the selected instances into ``destination``; one UID map for the whole operation."""
        items = self._select(run, store, filter_uri, "DeidentifyLogEntry")
        uids = deid.UidMap()

        def worker(item: tuple) -> Any:
            try:
                data = deid.deidentify(self.storage.get_blob(item[3]), cfg, uids)
                inst = dicom.parse_instance(data, with_metadata=False)
                return len(data), self.storage.put_blob(data), inst
            except dicom.InstanceError as exc:
                return exc
            except Exception as exc:
                return dicom.InstanceError(13, f"cannot de-identify instance: {type(exc).__name__}: {exc}")

        added: list[str] = []

        def collect(item: tuple, result: Any) -> None:
            if isinstance(result, dicom.InstanceError):
                self._instance_failed(run, "DeidentifyLogEntry", store, item, result)
                return
            size, sha, inst = result
            with self.storage.lock:
                exists = self.storage.query(
                    "SELECT 1 FROM instances WHERE store=? AND study=? AND series=? AND sop=?",
                    (destination, inst.study, inst.series, inst.sop),
                )
                if not exists:
                    self._insert(destination, inst, sha, size)
                    added.append(sha)
            run.counter["success"] += 1

        self._process(run, items, worker, collect)
        self.stream(destination, added)

    def run_export_bigquery(self, run: RunningOp, store: str, dest: dict, filter_uri: str | None) -> None:
        table = table_uri(dest.get("tableUri"), "bigqueryDestination.tableUri")
        disposition = dest.get("writeDisposition") or "WRITE_DISPOSITION_UNSPECIFIED"
        if disposition == "WRITE_DISPOSITION_UNSPECIFIED":
            disposition = "WRITE_TRUNCATE" if dest.get("force") else "WRITE_EMPTY"
        items = self._select(run, store, filter_uri)
        run.counter["pending"] = len(items)
        rows, schemas = [], []
        for *_uids, sha in items:
            if run.cancel.is_set():
                raise Cancelled()
            row, fields = dicom.flatten(dicom.read_for_bigquery(self.storage.get_blob(sha)))
            if dest.get("includeSourceStore"):
                row["SourceDicomStore"] = store
                fields["SourceDicomStore"] = {"name": "SourceDicomStore", "type": "STRING", "mode": "NULLABLE"}
            rows.append(row)
            schemas.append(fields)
        schema = dicom.merge_schema(schemas)
        BigQueryWriter(self.settings.bigquery_endpoint, table).write(
            schema, [dicom.conform_row(r, schema) for r in rows], disposition
        )
        run.counter["success"] += len(rows)


LOG_IDS = {"ImportDicomData": "import_dicom", "ExportDicomData": "export_dicom", "DeidentifyDicomStore": "deidentify"}


def operation_filter(operation_name: str) -> str:
    """The Cloud Logging query that selects an operation's error entries."""
    return f'resource.type="healthcare_dicom_store"\noperation.id="{operation_name}"'


def console_logs_url(operation_name: str) -> str:
    """A Logs Explorer link for the operation, the kind of ``logsUrl`` Google's operations carry."""
    project = operation_name.split("/")[1]
    return (
        "https://console.cloud.google.com/logs/query;query="
        + quote(operation_filter(operation_name), safe="")
        + f"?project={project}"
    )


class CloudLoggingWriter:
    """Writes an operation's per-instance errors to Cloud Logging (``entries:write``), as the service does.

    Entry shape, from "Viewing error logs in Cloud Logging": ``jsonPayload`` (the Healthcare log entry type,
    its ``source`` or ``resourceName``, and ``error``), ``operation`` (its ``id`` the operation's full name), and
    ``resource`` (``healthcare_dicom_store`` with its location, dataset and store). Without an endpoint the entries are
    dropped, which a caller sees as a failure count with no named files.
    """

    def __init__(self, endpoint: str):
        self.endpoint = endpoint.rstrip("/")
        self.http = requests.Session()

    def entry(self, run: RunningOp, payload: dict) -> dict:
        parts = run.store.split("/")
        labels = {"project_id": parts[1], "location": parts[3], "dataset_id": parts[5], "dicom_store_id": parts[7]}
        return {
            "logName": f"projects/{parts[1]}/logs/healthcare.googleapis.com%2F{LOG_IDS.get(run.method, 'dicom')}",
            "resource": {"type": "healthcare_dicom_store", "labels": labels},
            "severity": "ERROR",
            # the full operation name, as in the entries of "Viewing error logs in Cloud Logging"
            "operation": {"id": run.name, "producer": "healthcare.googleapis.com"},
            "jsonPayload": payload,
        }

    def write(self, run: RunningOp) -> None:
        pending, run.logs = run.logs, []
        if not pending or not self.endpoint or not run.store:
            return
        for start in range(0, len(pending), 1000):
            body = {"entries": [self.entry(run, p) for p in pending[start : start + 1000]]}
            try:
                resp = self.http.post(f"{self.endpoint}/v2/entries:write", json=body, timeout=30)
                resp.raise_for_status()
            except requests.RequestException as exc:
                log.warning("writing %d log entries of %s failed: %s", len(body["entries"]), run.name, exc)


class BigQueryWriter:
    """Writes rows to a table through the local BigQuery's REST API (never its files)."""

    def __init__(self, endpoint: str, table: Any):
        if not endpoint:
            raise OpFailed(9, "no BigQuery endpoint is configured for the local Healthcare API (--bigquery-endpoint)")
        self.base = f"{endpoint.rstrip('/')}/bigquery/v2/projects/{table.project}/datasets/{table.dataset}"
        self.table = table
        self.http = requests.Session()

    def _call(self, method: str, url: str, **kw: Any) -> requests.Response:
        resp = self.http.request(method, url, timeout=120, **kw)
        if resp.status_code >= 400 and resp.status_code != 404:
            raise OpFailed(13, f"BigQuery {method} {url.split('/bigquery/v2/')[-1]} failed: {resp.text[:300]}")
        return resp

    def write(self, schema: list[dict], rows: list[dict], disposition: str, skip_invalid: bool = False) -> None:
        """Create or extend the table, then insert the rows; ``skip_invalid`` keeps the rows BigQuery accepts."""
        if self._call("GET", self.base).status_code == 404:
            raise OpFailed(5, f"BigQuery dataset {self.table.project}.{self.table.dataset} not found")
        table_url = f"{self.base}/tables/{self.table.table}"
        existing = self._call("GET", table_url)
        if existing.status_code == 200:
            num_rows = int(existing.json().get("numRows", "0") or 0)
            if disposition == "WRITE_EMPTY" and num_rows:
                raise OpFailed(9, f"BigQuery table {self.table} is not empty and writeDisposition is WRITE_EMPTY")
            if disposition == "WRITE_TRUNCATE":
                self._call("DELETE", table_url)
                existing = None
        if existing is None or existing.status_code == 404:
            self._call(
                "POST",
                f"{self.base}/tables",
                json={
                    "tableReference": {
                        "projectId": self.table.project,
                        "datasetId": self.table.dataset,
                        "tableId": self.table.table,
                    },
                    "schema": {"fields": schema},
                },
            )
        else:
            known = {f["name"] for f in existing.json().get("schema", {}).get("fields", [])}
            merged = existing.json().get("schema", {}).get("fields", []) + [f for f in schema if f["name"] not in known]
            self._call("PATCH", table_url, json={"schema": {"fields": merged}})
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            resp = self._call(
                "POST",
                f"{table_url}/insertAll",
                json={"rows": [{"json": r} for r in chunk], "skipInvalidRows": skip_invalid},
            )
            errors = resp.json().get("insertErrors")
            if errors:
                raise OpFailed(13, f"BigQuery rejected rows: {json.dumps(errors)[:300]}")
