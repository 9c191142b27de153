"""HTTP routes of the local Cloud Healthcare API (DICOM subset), v1 and v1beta1.

Run with ``python -m emulator.healthcare --port 18402 --state-dir .stack/healthcare``.
"""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from dataclasses import fields as dc_fields
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import pydicom
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from emulator.gcs import GcsError
from emulator.healthcare import deidentify as deid
from emulator.healthcare import dicom
from emulator.healthcare.operations import OperationEngine, RunningOp, Settings
from emulator.healthcare.storage import Storage
from emulator.httpbase import ApiError, App, Request, Response, bad_request, check_fields
from emulator.rules import RequestError, export_type, import_source, storage_uri, table_uri

_V = r"/(?P<v>v1|v1beta1)"
_LOC = _V + r"/projects/(?P<p>[^/:]+)/locations/(?P<l>[^/:]+)"
_DS = _LOC + r"/datasets/(?P<d>[^/:]+)"
_ST = _DS + r"/dicomStores/(?P<s>[^/:]+)"
_WEB = _ST + r"/dicomWeb"
_ID_RE = re.compile(r"^[\w\-.]{1,256}$")
_DEFAULT_SYNTAX = "1.2.840.10008.1.2.1"
"""Explicit VR Little Endian: what WADO-RS returns when no transfer syntax is asked for (conformance statement)."""

_DATASET_FIELDS = {"name", "timeZone", "encryptionSpec"}
_STORE_FIELDS = {"name", "labels", "notificationConfig", "notificationConfigs", "streamConfigs"}
_BQ_DEST_FIELDS = {"tableUri", "force", "writeDisposition", "includeSourceStore", "schemaFlattened", "schemaJSON"}
_WRITE_DISPOSITIONS = {"WRITE_DISPOSITION_UNSPECIFIED", "WRITE_EMPTY", "WRITE_TRUNCATE", "WRITE_APPEND"}

# QIDO attributes returned by default at each level (tag → keyword), as DICOM JSON.
_STUDY_ATTRS = [
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "PatientName",
    "PatientID",
    "StudyID",
    "StudyDescription",
]
_SERIES_ATTRS = ["SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription"]
_INSTANCE_ATTRS = ["SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames"]


def _tag_of(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return f"{tag:08X}" if tag is not None else keyword


def _value(meta: dict, keyword: str) -> Any:
    el = meta.get(_tag_of(keyword))
    if not el or "Value" not in el or not el["Value"]:
        return None
    v = el["Value"][0]
    if isinstance(v, dict) and "Alphabetic" in v:
        return v["Alphabetic"]
    return v


def validation_error(exc: RequestError) -> ApiError:
    return bad_request(str(exc), exc.field)


class HealthcareApi:
    def __init__(self, storage: Storage, settings: Settings, engine: OperationEngine):
        self.storage = storage
        self.settings = settings
        self.engine = engine
        self.creating: set[str] = set()
        self.app = App("healthcare")
        self._routes()

    # --- lookups -----------------------------------------------------------------------------
    def _dataset(self, req: Request) -> str:
        g = req.match.groupdict()
        name = f"projects/{g['p']}/locations/{g['l']}/datasets/{g['d']}"
        if self.storage.get_json("datasets", name) is None:
            # The real API answers 403 rather than 404 for a missing dataset.
            raise ApiError(
                403,
                f"Permission healthcare.datasets.get denied on resource {name} (or it may not exist).",
                "PERMISSION_DENIED",
            )
        return name

    def _store(self, req: Request) -> str:
        dataset = self._dataset(req)
        name = f"{dataset}/dicomStores/{req.match['s']}"
        if self.storage.get_json("stores", name) is None:
            raise ApiError(404, f"DICOM store {name} not found.", "NOT_FOUND")
        return name

    def _op_response(self, run: RunningOp) -> dict:
        return self.engine.snapshot(run)

    # --- routes ------------------------------------------------------------------------------
    def _routes(self) -> None:
        r = self.app.route
        r("POST", _LOC + r"/datasets", "datasets.create")(self.create_dataset)
        r("GET", _LOC + r"/datasets", "datasets.list")(self.list_datasets)
        r("GET", _DS, "datasets.get")(lambda req: self.storage.get_json("datasets", self._dataset(req)))
        r("DELETE", _DS, "datasets.delete")(self.delete_dataset)
        r("PATCH", _DS, "datasets.patch")(self.patch_dataset)
        r("POST", _DS + r"/dicomStores", "dicomStores.create")(self.create_store)
        r("GET", _DS + r"/dicomStores", "dicomStores.list")(self.list_stores)
        r("GET", _ST, "dicomStores.get")(lambda req: self.storage.get_json("stores", self._store(req)))
        r("PATCH", _ST, "dicomStores.patch")(self.patch_store)
        r("DELETE", _ST, "dicomStores.delete")(self.delete_store)
        r("GET", _ST + r":getDICOMStoreMetrics", "dicomStores.getDICOMStoreMetrics")(self.metrics)
        r("POST", _ST + r":import", "dicomStores.import")(self.import_)
        r("POST", _ST + r":export", "dicomStores.export")(self.export)
        r("POST", _ST + r":deidentify", "dicomStores.deidentify")(self.deidentify)
        r("POST", _ST + r":setBlobStorageSettings", "dicomStores.setBlobStorageSettings")(self.set_storage_class)
        r("GET", _DS + r"/operations", "operations.list")(self.list_operations)
        r("GET", _DS + r"/operations/(?P<o>[^/:]+)", "operations.get")(self.get_operation)
        r("POST", _DS + r"/operations/(?P<o>[^/:]+):cancel", "operations.cancel")(self.cancel_operation)
        r("GET", r"/admin/operations", "admin.operations")(self.operations_received)
        r("GET", r"/admin/settings", "admin.settings")(lambda req: self._settings_dict())
        r("POST", r"/admin/settings", "admin.settings")(self.set_settings)
        r("POST", _DS + r"/admin/syntheticOperations", "admin.synthetic")(self.synthetic_operations)
        # DICOMweb
        r("POST", _WEB + r"/studies(?:/(?P<study>[^/]+))?", "dicomWeb.storeInstances")(self.stow)
        for level, pattern in (
            ("studies", r"/studies"),
            ("series", r"/series"),
            ("series", r"/studies/(?P<study>[^/]+)/series"),
            ("instances", r"/instances"),
            ("instances", r"/studies/(?P<study>[^/]+)/instances"),
            ("instances", r"/studies/(?P<study>[^/]+)/series/(?P<series>[^/]+)/instances"),
        ):
            r("GET", _WEB + pattern, f"dicomWeb.search.{level}")(lambda req, level=level: self.qido(req, level))
        inst = _WEB + r"/studies/(?P<study>[^/]+)/series/(?P<series>[^/]+)/instances/(?P<sop>[^/]+)"
        r("GET", inst, "dicomWeb.retrieveInstance")(self.wado)
        r("GET", _WEB + r"/studies/(?P<study>[^/]+)", "dicomWeb.retrieveStudy")(self.wado)
        r("GET", _WEB + r"/studies/(?P<study>[^/]+)/series/(?P<series>[^/]+)", "dicomWeb.retrieveSeries")(self.wado)
        r("GET", inst + r"/rendered", "dicomWeb.retrieveRenderedInstance")(self.rendered)
        r("GET", inst + r"/frames/(?P<frame>[0-9]+)/rendered", "dicomWeb.retrieveRenderedFrames")(self.rendered)
        r("GET", inst + r"/frames/(?P<frames>[0-9]+(?:,[0-9]+)*)", "dicomWeb.retrieveFrames")(self.frames)
        r("GET", inst + r"/bulkdata/(?P<tag>[0-9A-Fa-f]{8})", "dicomWeb.retrieveBulkdata")(self.bulkdata)
        r(
            "GET",
            _WEB + r"/studies/(?P<study>[^/]+)(?:/series/(?P<series>[^/]+)(?:/instances/(?P<sop>[^/]+))?)?/metadata",
            "dicomWeb.retrieveMetadata",
        )(self.wado_metadata)
        r("DELETE", inst, "dicomWeb.deleteInstance")(self.delete_instance)
        r("DELETE", _WEB + r"/studies/(?P<study>[^/]+)(?:/series/(?P<series>[^/]+))?", "dicomWeb.delete")(
            self.delete_study_or_series
        )

    # --- datasets ---------------------------------------------------------------------------
    def create_dataset(self, req: Request) -> dict:
        """``datasets.create`` answers with an operation that runs for a moment, as on Google: the dataset exists
        (and takes stores) only once it is done, so a caller has to wait for it."""
        g = req.match.groupdict()
        dataset_id = req.param("datasetId") or ""
        if not _ID_RE.match(dataset_id):
            raise bad_request(f"datasetId {dataset_id!r} must match [\\p{{L}}\\p{{N}}_\\-\\.]{{1,256}}", "datasetId")
        body = req.json()
        check_fields(body, _DATASET_FIELDS)
        parent = f"projects/{g['p']}/locations/{g['l']}"
        name = f"{parent}/datasets/{dataset_id}"
        dataset = {"name": name, "timeZone": body.get("timeZone", "UTC")}
        with self.storage.lock:
            if self.storage.get_json("datasets", name) is not None or name in self.creating:
                raise ApiError(409, f"Dataset {name} already exists.", "ALREADY_EXISTS")
            self.creating.add(name)
        run = self.engine.new_operation(name, g["v"], "CreateDataset", {})
        run.service = "dataset.DatasetService"
        run.response = {"@type": f"type.googleapis.com/google.cloud.healthcare.{g['v']}.Dataset", **dataset}

        def work(r: RunningOp) -> None:
            try:
                r.cancel.wait(self.settings.dataset_create_s)
                self.storage.execute(
                    "INSERT INTO datasets(name, parent, body) VALUES (?,?,?)", (name, parent, json.dumps(dataset))
                )
            finally:
                self.creating.discard(name)

        self.engine.start(run, work)
        return self._op_response(run)

    def patch_dataset(self, req: Request) -> dict:
        name = self._dataset(req)
        body = req.json()
        check_fields(body, _DATASET_FIELDS)
        dataset = self.storage.get_json("datasets", name)
        for path in [m.strip() for m in (req.param("updateMask") or "").split(",") if m.strip()]:
            if path != "timeZone":
                raise bad_request(f"updateMask path {path!r} cannot be updated: only timeZone can", "updateMask")
            if path in body:
                dataset[path] = body[path]
        self.storage.execute("UPDATE datasets SET body = ? WHERE name = ?", (json.dumps(dataset), name))
        return dataset

    def list_datasets(self, req: Request) -> dict:
        g = req.match.groupdict()
        items = self.storage.list_json("datasets", "parent", f"projects/{g['p']}/locations/{g['l']}")
        return self._page(req, items, "datasets")

    def delete_dataset(self, req: Request) -> dict:
        name = self._dataset(req)
        with self.storage.lock:
            for store in self.storage.list_json("stores", "dataset", name):
                self.storage.execute("DELETE FROM instances WHERE store = ?", (store["name"],))
            self.storage.execute("DELETE FROM stores WHERE dataset = ?", (name,))
            self.storage.execute("DELETE FROM datasets WHERE name = ?", (name,))
        return {}

    @staticmethod
    def _page(req: Request, items: list, key: str) -> dict:
        size = min(int(req.param("pageSize") or 100), 1000)
        start = int(req.param("pageToken") or 0)
        out: dict[str, Any] = {key: items[start : start + size]}
        if start + size < len(items):
            out["nextPageToken"] = str(start + size)
        return out

    # --- stores ------------------------------------------------------------------------------
    def create_store(self, req: Request) -> dict:
        dataset = self._dataset(req)
        store_id = req.param("dicomStoreId") or ""
        if not store_id or len(store_id) > 256 or "/" in store_id:
            raise bad_request(f"dicomStoreId {store_id!r} must be 1-256 characters without '/'", "dicomStoreId")
        body = req.json()
        check_fields(body, _STORE_FIELDS)
        name = f"{dataset}/dicomStores/{store_id}"
        store = {k: v for k, v in body.items() if k != "name"}
        store["name"] = name
        with self.storage.lock:
            if self.storage.get_json("stores", name) is not None:
                raise ApiError(409, f"DICOM store {name} already exists.", "ALREADY_EXISTS")
            self.storage.execute(
                "INSERT INTO stores(name, dataset, body) VALUES (?,?,?)", (name, dataset, json.dumps(store))
            )
        return store

    def list_stores(self, req: Request) -> dict:
        items = self.storage.list_json("stores", "dataset", self._dataset(req))
        flt = req.param("filter") or ""
        m = re.match(r"^labels\.([\w-]+)\s*=\s*\"?([\w-]*)\"?$", flt.strip())
        if flt and m:
            items = [s for s in items if s.get("labels", {}).get(m[1]) == m[2]]
        return self._page(req, items, "dicomStores")

    def patch_store(self, req: Request) -> dict:
        name = self._store(req)
        body = req.json()
        check_fields(body, _STORE_FIELDS)
        mask = [m.strip() for m in (req.param("updateMask") or "").split(",") if m.strip()]
        store = self.storage.get_json("stores", name)
        for path in mask:
            if path not in _STORE_FIELDS - {"name"}:
                raise bad_request(
                    f"updateMask path {path!r} is not a DicomStore field that can be updated", "updateMask"
                )
            if path in body:
                store[path] = body[path]
            else:
                store.pop(path, None)
        self.storage.execute("UPDATE stores SET body = ? WHERE name = ?", (json.dumps(store), name))
        return store

    def delete_store(self, req: Request) -> dict:
        name = self._store(req)
        with self.storage.lock:
            self.storage.execute("DELETE FROM instances WHERE store = ?", (name,))
            self.storage.execute("DELETE FROM stores WHERE name = ?", (name,))
        return {}

    def metrics(self, req: Request) -> dict:
        """getDICOMStoreMetrics, lagging by ``metrics_lag_s``: instances stored since then are not counted yet."""
        name = self._store(req)
        studies, series, instances, size, meta = self.storage.query(
            "SELECT COUNT(DISTINCT study), COUNT(DISTINCT study || '/' || series), COUNT(*), "
            "COALESCE(SUM(size), 0), COALESCE(SUM(LENGTH(metadata)), 0) FROM instances WHERE store = ? "
            "AND created <= ?",
            (name, time.time() - self.settings.metrics_lag_s),
        )[0]
        meta = meta or 0
        out = {"name": name}
        for key, value in (
            ("studyCount", studies),
            ("seriesCount", series),
            ("instanceCount", instances),
            ("structuredStorageSizeBytes", meta),
            ("blobStorageSizeBytes", size),
        ):
            if value:
                out[key] = str(value)
        return out

    # --- import / export ---------------------------------------------------------------------
    def import_(self, req: Request) -> dict:
        store = self._store(req)
        body = req.json()
        check_fields(body, {"gcsSource", "blobStorageSettings"})
        if "gcsSource" not in body:
            raise bad_request("gcsSource is required", "gcsSource")
        check_fields(body["gcsSource"], {"uri"}, "gcsSource")
        check_fields(body.get("blobStorageSettings", {}), {"blobStorageClass"}, "blobStorageSettings")
        try:
            uri = import_source(body["gcsSource"].get("uri"), "gcsSource.uri")
        except RequestError as exc:
            raise validation_error(exc) from None
        run = self.engine.new_operation(store.split("/dicomStores/")[0], req.match["v"], "ImportDicomData", body, store)
        self.engine.start(run, lambda r: self.engine.run_import(r, store, str(uri)))
        return self._op_response(run)

    def set_storage_class(self, req: Request) -> dict:
        """``dicomStores.setBlobStorageSettings`` on a whole store, or on the instances of a filter file (v1
        reference): an operation that changes the instances' blob storage class."""
        store = self._store(req)
        body = req.json()
        check_fields(body, {"blobStorageSettings", "filterConfig"})
        check_fields(body.get("blobStorageSettings") or {}, {"blobStorageClass"}, "blobStorageSettings")
        check_fields(body.get("filterConfig") or {}, {"resourcePathsGcsUri"}, "filterConfig")
        storage_class = (body.get("blobStorageSettings") or {}).get("blobStorageClass")
        if storage_class not in ("STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"):
            raise bad_request(
                f"blobStorageSettings.blobStorageClass {storage_class!r} must be STANDARD, NEARLINE, COLDLINE or "
                "ARCHIVE",
                "blobStorageSettings.blobStorageClass",
            )
        filter_uri = (body.get("filterConfig") or {}).get("resourcePathsGcsUri")
        dataset = store.split("/dicomStores/")[0]
        run = self.engine.new_operation(dataset, req.match["v"], "SetBlobStorageSettings", body, store)
        self.engine.start(run, lambda r: self.engine.run_set_storage_class(r, store, storage_class, filter_uri))
        return self._op_response(run)

    def deidentify(self, req: Request) -> dict:
        """``dicomStores.deidentify`` into an existing store of the same location (the v1 reference)."""
        store = self._store(req)
        body = req.json()
        check_fields(body, {"destinationStore", "config", "filterConfig", "gcsConfigUri"})
        dest = body.get("destinationStore") or ""
        m = re.fullmatch(r"projects/([^/]+)/locations/([^/]+)/datasets/([^/]+)/dicomStores/([^/]+)", dest)
        if not m:
            raise bad_request(
                f"destinationStore {dest!r} must be projects/P/locations/L/datasets/D/dicomStores/S",
                "destinationStore",
            )
        if (m[1], m[2]) != (req.match["p"], req.match["l"]):
            raise bad_request("the source and destination must reside in the same project and location")
        if dest == store:
            raise bad_request("destinationStore must differ from the source store", "destinationStore")
        if self.storage.get_json("datasets", dest.split("/dicomStores/")[0]) is None:
            raise ApiError(403, f"Permission healthcare.datasets.get denied on {dest} (or it may not exist).")
        if self.storage.get_json("stores", dest) is None:
            raise ApiError(404, f"destination DICOM store {dest} not found: it must exist", "NOT_FOUND")
        if ("config" in body) == ("gcsConfigUri" in body):
            raise bad_request("exactly one of config and gcsConfigUri must be set", "config")
        config = body.get("config")
        if "gcsConfigUri" in body:
            try:
                uri = storage_uri(body["gcsConfigUri"], "gcsConfigUri")
                config = json.loads(self.engine.gcs.download(uri.bucket, uri.name))
            except RequestError as exc:
                raise validation_error(exc) from None
            except (GcsError, ValueError) as exc:
                raise bad_request(f"cannot read the config at {body['gcsConfigUri']}: {exc}", "gcsConfigUri") from None
        try:
            cfg = deid.parse_config(config)
        except deid.ConfigError as exc:
            if exc.unsupported:
                raise ApiError(
                    501, f"{exc} is not supported by the local stack: it has no text inspection", "UNIMPLEMENTED"
                ) from None
            raise bad_request(str(exc), exc.field) from None
        filter_uri = None
        if "filterConfig" in body:
            check_fields(body["filterConfig"], {"resourcePathsGcsUri"}, "filterConfig")
            filter_uri = body["filterConfig"].get("resourcePathsGcsUri")
            try:
                storage_uri(filter_uri, "filterConfig.resourcePathsGcsUri")
            except RequestError as exc:
                raise validation_error(exc) from None
        dataset = store.split("/dicomStores/")[0]
        run = self.engine.new_operation(dataset, req.match["v"], "DeidentifyDicomStore", body, store)
        run.response = {
            "@type": f"type.googleapis.com/google.cloud.healthcare.{req.match['v']}.dicom.DeidentifyDicomStoreSummary"
        }
        self.engine.start(run, lambda r: self.engine.run_deidentify(r, store, dest, cfg, filter_uri))
        return self._op_response(run)

    def export(self, req: Request) -> dict:
        store = self._store(req)
        body = req.json()
        check_fields(body, {"gcsDestination", "bigqueryDestination", "filterConfig"})
        gcs, bq = body.get("gcsDestination"), body.get("bigqueryDestination")
        if (gcs is None) == (bq is None):
            raise bad_request("exactly one of gcsDestination or bigqueryDestination must be set", "destination")
        filter_uri = None
        if "filterConfig" in body:
            check_fields(body["filterConfig"], {"resourcePathsGcsUri"}, "filterConfig")
            filter_uri = body["filterConfig"].get("resourcePathsGcsUri")
        try:
            if filter_uri is not None:
                storage_uri(filter_uri, "filterConfig.resourcePathsGcsUri")
            if gcs is not None:
                check_fields(gcs, {"uriPrefix", "mimeType"}, "gcsDestination")
                storage_uri(gcs.get("uriPrefix"), "gcsDestination.uriPrefix", object_required=False)
                export_type(gcs.get("mimeType"), "gcsDestination.mimeType")
            else:
                allowed = _BQ_DEST_FIELDS | ({"changeDataCaptureConfig"} if req.match["v"] == "v1beta1" else set())
                check_fields(bq, allowed, "bigqueryDestination")
                table = table_uri(bq.get("tableUri"), "bigqueryDestination.tableUri")
                wd = bq.get("writeDisposition", "WRITE_DISPOSITION_UNSPECIFIED")
                if wd not in _WRITE_DISPOSITIONS:
                    raise bad_request(
                        f"bigqueryDestination.writeDisposition {wd!r} must be one of {sorted(_WRITE_DISPOSITIONS)}",
                        "bigqueryDestination.writeDisposition",
                    )
                if table.project != req.match["p"] and not self.settings.allow_cross_project_bigquery:
                    raise bad_request(
                        "You can only export to a BigQuery dataset that's in the same project as the DICOM store",
                        "bigqueryDestination.tableUri",
                    )
        except RequestError as exc:
            raise validation_error(exc) from None
        run = self.engine.new_operation(store.split("/dicomStores/")[0], req.match["v"], "ExportDicomData", body, store)

        def work(r: RunningOp) -> None:
            if gcs is not None:
                self.engine.run_export_gcs(r, store, gcs["uriPrefix"], gcs.get("mimeType"), filter_uri)
            else:
                self.engine.run_export_bigquery(r, store, bq, filter_uri)

        self.engine.start(run, work)
        return self._op_response(run)

    # --- operations ---------------------------------------------------------------------------
    def _op_name(self, req: Request) -> str:
        """An operation's name; a dataset being created has no dataset yet, but its operation can be read."""
        g = req.match.groupdict()
        name = f"projects/{g['p']}/locations/{g['l']}/datasets/{g['d']}/operations/{g['o']}"
        if self.engine.get(name) is None:
            self._dataset(req)
        return name

    def get_operation(self, req: Request) -> dict:
        name = self._op_name(req)
        op = self.engine.get(name)
        if op is None:
            raise ApiError(404, f"Operation {name} not found.", "NOT_FOUND")
        return op

    def cancel_operation(self, req: Request) -> dict:
        name = self._op_name(req)
        if self.engine.get(name) is None:
            raise ApiError(404, f"Operation {name} not found.", "NOT_FOUND")
        self.engine.cancel(name)
        return {}

    def list_operations(self, req: Request) -> dict:
        dataset = self._dataset(req)
        ops = [
            self.engine.get(n)
            for (n,) in self.storage.query("SELECT name FROM operations WHERE dataset = ? ORDER BY seq", (dataset,))
        ]
        lag = self.settings.operations_list_lag_s
        if lag:  # operations.list promises no freshness; listed only once old enough (a stand-in setting)
            ops = [o for o in ops if self.engine.age_s(o["name"]) >= lag]
        flt = (req.param("filter") or "").strip()
        m = re.match(r"^done\s*=\s*(true|false)$", flt)
        if m:
            want = m[1] == "true"
            ops = [o for o in ops if bool(o.get("done")) == want]
        m = re.match(r'^metadata\.apiMethodName\s*=\s*"?([^"]+)"?$', flt)
        if m:
            ops = [o for o in ops if m[1] in o["metadata"].get("apiMethodName", "")]
        return self._page(req, ops, "operations")

    def operations_received(self, req: Request) -> dict:
        """Every operation started on one store (``?store=<resource name>``), for tests and drills to count."""
        store = req.param("store")
        if not store:
            raise bad_request("the store query parameter is required", "store")
        ops = []
        for name, op, request in self.storage.operations_of_store(store):
            op = self.engine.get(name) or op
            ops.append(
                {
                    "name": name,
                    "method": op["metadata"].get("apiMethodName", "").rsplit(".", 1)[-1],
                    "request": request,
                    "done": bool(op.get("done")),
                    "error": op.get("error"),
                    "counter": op["metadata"].get("counter", {}),
                    "cancelRequested": bool(op["metadata"].get("cancelRequested")),
                }
            )
        return {"store": store, "count": len(ops), "operations": ops}

    def synthetic_operations(self, req: Request) -> dict:
        body = req.json()
        check_fields(body, {"count", "durationSeconds", "instances"})
        names = self.engine.add_synthetic(
            self._dataset(req),
            int(body.get("count", 1)),
            float(body.get("durationSeconds", 60)),
            int(body.get("instances", 100)),
        )
        return {"operations": names}

    def _settings_dict(self) -> dict:
        return {f.name: getattr(self.settings, f.name) for f in dc_fields(self.settings)}

    def set_settings(self, req: Request) -> dict:
        body = req.json()
        check_fields(body, {f.name for f in dc_fields(self.settings)})
        for key, value in body.items():
            setattr(self.settings, key, type(getattr(self.settings, key))(value))
        return self._settings_dict()

    # --- DICOMweb ------------------------------------------------------------------------------
    def _store_instance(self, store: str, data: bytes) -> tuple[dict, bool, str]:
        """Store one instance as STOW does. An instance whose Study, Series and SOP Instance UIDs are already in the
        store is a failure for that instance, whatever its bytes (the response's status is then 409): Google's
        conformance statement, "Store transaction"."""
        try:
            inst = dicom.parse_instance(data)
        except dicom.InstanceError as exc:
            return {}, False, exc.message
        with self.storage.lock:
            rows = self.storage.query(
                "SELECT sha256 FROM instances WHERE store=? AND study=? AND series=? AND sop=?",
                (store, inst.study, inst.series, inst.sop),
            )
            sha = self.storage.put_blob(data)
            ref = {
                "study": inst.study,
                "series": inst.series,
                "sop": inst.sop,
                "class": _value(inst.metadata, "SOPClassUID") or "",
            }
            if rows:
                differs = " and different content" if rows[0][0] != sha else ""
                return ref, False, f"an instance with the same Study, Series and SOP Instance UIDs{differs} exists"
            self.storage.execute(
                "INSERT INTO instances(store, study, series, sop, sha256, size, metadata, created) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (store, inst.study, inst.series, inst.sop, sha, len(data), json.dumps(inst.metadata), time.time()),
            )
        self.engine.stream(store, [sha])
        return ref, True, ""

    def stow(self, req: Request) -> Response:
        store = self._store(req)
        ctype = req.headers.get("Content-Type", "")
        if ctype.lower().startswith("multipart/related"):
            msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + req.body)
            parts = [p.get_payload(decode=True) or b"" for p in msg.iter_parts()]
        elif ctype.lower().startswith("application/dicom"):
            parts = [req.body]
        else:
            raise ApiError(
                415,
                f"unsupported Content-Type {ctype!r}: use application/dicom or multipart/related",
                "INVALID_ARGUMENT",
            )
        if not parts or not any(parts):
            raise ApiError(400, "the request carries no DICOM instance: nothing was stored", "INVALID_ARGUMENT")
        ok, failed = [], []
        stored_studies: list[str] = []
        for data in parts:
            ref, stored, reason = self._store_instance(store, data)
            if stored:
                stored_studies.append(ref["study"])
            item = {
                "00081150": {"vr": "UI", "Value": [ref.get("class", "")]} if ref.get("class") else {"vr": "UI"},
                "00081155": {"vr": "UI", "Value": [ref["sop"]]} if ref else {"vr": "UI"},
            }
            if stored:
                item["00081190"] = {
                    "vr": "UR",
                    "Value": [
                        f"{req.path.split('/dicomWeb')[0]}/dicomWeb/studies/{ref['study']}/series/{ref['series']}/instances/{ref['sop']}"
                    ],
                }
                ok.append(item)
            else:
                item["00081197"] = {"vr": "US", "Value": [272]}
                item["00091097"] = {"vr": "LO", "Value": [reason]}
                failed.append(item)
        result: dict[str, Any] = {}
        studies = set(stored_studies)
        if len(studies) == 1:
            base = req.path.split("/dicomWeb")[0]
            result["00081190"] = {"vr": "UR", "Value": [f"{base}/dicomWeb/studies/{studies.pop()}"]}
        if ok:
            result["00081199"] = {"vr": "SQ", "Value": ok}
        if failed:
            result["00081198"] = {"vr": "SQ", "Value": failed}
        return Response(409 if failed else 200, json.dumps(result).encode(), {"Content-Type": "application/dicom+json"})

    def _instances(self, store: str, study: str | None = None, series: str | None = None, sop: str | None = None):
        sql, args = "SELECT study, series, sop, sha256, metadata FROM instances WHERE store=?", [store]
        for col, val in (("study", study), ("series", series), ("sop", sop)):
            if val:
                sql += f" AND {col}=?"
                args.append(val)
        rows = self.storage.query(sql + " ORDER BY rowid", args)
        out = []
        for s, se, so, sha, m in rows:
            if not m:  # bulk import leaves the metadata to be built on first read
                meta = dicom.metadata_from_blob(self.storage.get_blob(sha))
                m = json.dumps(meta)
                self.storage.execute(
                    "UPDATE instances SET metadata=? WHERE store=? AND study=? AND series=? AND sop=?",
                    (m, store, s, se, so),
                )
            out.append((s, se, so, sha, json.loads(m)))
        return out

    @staticmethod
    def _matches(meta: dict, key: str, wanted: str, fuzzy: bool = False) -> bool:
        """One QIDO match. With ``fuzzymatching=true`` a PatientName query matches when each of its words is the
        start of a word of the name, case ignored (Google's conformance statement, "Search transaction")."""
        if fuzzy and key == "PatientName":
            name = [w for w in re.split(r"[\s^=]+", str(_value(meta, key) or "").lower()) if w]
            words = [w for w in re.split(r"[\s^=]+", wanted.lower()) if w]
            return bool(words) and all(any(n.startswith(w) for n in name) for w in words)
        if key == "StudyDate" and "-" in wanted:
            lo, _, hi = wanted.partition("-")
            v = _value(meta, "StudyDate") or ""
            return bool(v) and (not lo or v >= lo) and (not hi or v <= hi)
        v = _value(meta, key)
        if v is None:
            return False
        if "*" in wanted or "?" in wanted:
            rx = "^" + re.escape(wanted).replace(r"\*", ".*").replace(r"\?", ".") + "$"
            return re.match(rx, str(v)) is not None
        return str(v) == wanted

    def qido(self, req: Request, level: str) -> Response:
        store = self._store(req)
        g = req.match.groupdict()
        rows = self._instances(store, g.get("study"), g.get("series"))
        include = set()
        filters = []
        for key, values in req.query.items():
            if key in ("limit", "offset", "fuzzymatching", "alt"):
                continue
            if key == "includefield":
                for v in values:
                    include.update(x for x in v.split(",") if x)
                continue
            kw = key
            if re.fullmatch(r"[0-9A-Fa-f]{8}", key):
                kw = keyword_for_tag(int(key, 16)) or key
            filters.append((kw, values[0]))
        groups: dict[tuple, list[dict]] = {}
        fuzzy = (req.param("fuzzymatching") or "").lower() == "true"
        for study, series, sop, _, meta in rows:
            if not all(self._matches(meta, k, v, fuzzy) for k, v in filters):
                continue
            key = {"studies": (study,), "series": (study, series), "instances": (study, series, sop)}[level]
            groups.setdefault(key, []).append(meta)
        attrs = {
            "studies": _STUDY_ATTRS,
            "series": _STUDY_ATTRS[:1] + _SERIES_ATTRS,
            "instances": _STUDY_ATTRS[:1] + _SERIES_ATTRS[:2] + _INSTANCE_ATTRS,
        }[level]
        out = []
        for metas in groups.values():
            first = metas[0]
            if "all" in include:
                item = {k: v for k, v in first.items() if level == "instances" or k in {_tag_of(a) for a in attrs}}
            else:
                wanted = attrs + [k for k in include]
                item = {}
                for kw in wanted:
                    tag = kw if re.fullmatch(r"[0-9A-Fa-f]{8}", kw) else _tag_of(kw)
                    if tag in first:
                        item[tag] = first[tag]
            if level == "studies":
                mods = sorted({_value(m, "Modality") for m in metas if _value(m, "Modality")})
                item["00080061"] = {"vr": "CS", "Value": mods}
                item["00201206"] = {"vr": "IS", "Value": [len({_value(m, "SeriesInstanceUID") for m in metas})]}
                item["00201208"] = {"vr": "IS", "Value": [len(metas)]}
            elif level == "series":
                item["00201209"] = {"vr": "IS", "Value": [len(metas)]}
            out.append(item)
        offset = int(req.param("offset") or 0)
        limit = req.param("limit")
        out = out[offset : offset + int(limit)] if limit else out[offset:]
        if not out:  # PS3.18: a search that matches nothing answers 204 No Content
            return Response(204, b"", {})
        return Response(200, json.dumps(out).encode(), {"Content-Type": "application/dicom+json"})

    def _in_syntax(self, data: bytes, wanted: str) -> tuple[bytes, str]:
        """The instance in the transfer syntax asked for (``*``: as stored), transcoded when needed."""
        stored = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID)
        if wanted in ("*", stored):
            return data, stored
        try:
            return dicom.render_export(
                data, export_type(f"application/dicom; transfer-syntax={wanted}", "transfer-syntax")
            )[0][1], wanted
        except (dicom.InstanceError, RequestError) as exc:
            raise ApiError(406, f"cannot return transfer syntax {wanted}: {exc}", "FAILED_PRECONDITION") from None

    def wado(self, req: Request) -> Response:
        """Retrieve a study, a series or an instance (WADO-RS). Without a ``transfer-syntax`` in ``Accept`` the
        instances come as Explicit VR Little Endian, as Google's conformance statement says; ``*`` keeps the
        stored syntax. A single instance may be asked for as ``application/dicom`` (one part)."""
        store = self._store(req)
        g = req.match.groupdict()
        rows = self._instances(store, g.get("study"), g.get("series"), g.get("sop"))
        if not rows:
            raise ApiError(404, "resource not found", "NOT_FOUND")
        accept = (req.headers.get("Accept") or "").lower()
        m = re.search(r"transfer-syntax=\"?([0-9.*]+)", accept)
        wanted = m[1] if m else _DEFAULT_SYNTAX
        parts = [self._in_syntax(self.storage.get_blob(row[3]), wanted) for row in rows]
        if accept.startswith("application/dicom"):
            if len(parts) > 1:
                raise ApiError(
                    406, "a study or series has several instances: ask for multipart/related", "FAILED_PRECONDITION"
                )
            return Response(200, parts[0][0], {"Content-Type": f"application/dicom; transfer-syntax={parts[0][1]}"})
        return self._multipart([(data, f"application/dicom; transfer-syntax={syntax}") for data, syntax in parts])

    def rendered(self, req: Request) -> Response:
        """An instance or one of its frames as an image: JPEG unless ``Accept`` asks for PNG."""
        store = self._store(req)
        rows = self._instances(store, req.match["study"], req.match["series"], req.match["sop"])
        if not rows:
            raise ApiError(404, "instance not found", "NOT_FOUND")
        accept = (req.headers.get("Accept") or "image/jpeg").lower()
        if "image/png" in accept:
            mime = "image/png"
        elif "image/jpeg" in accept or "*/*" in accept or "image/*" in accept:
            mime = "image/jpeg"
        else:
            raise ApiError(406, f"rendered images are image/jpeg or image/png, not {accept!r}", "FAILED_PRECONDITION")
        kind = export_type(mime if mime == "image/png" else "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50", "")
        try:
            frames = dicom.render_export(self.storage.get_blob(rows[0][3]), kind)
        except dicom.InstanceError as exc:
            raise ApiError(400, f"cannot render this instance: {exc.message}", "INVALID_ARGUMENT") from None
        number = int(req.match.groupdict().get("frame") or 1)
        if not 1 <= number <= len(frames):
            raise ApiError(400, f"frame {number} does not exist: the instance has {len(frames)}", "INVALID_ARGUMENT")
        return Response(200, frames[number - 1][1], {"Content-Type": mime})

    def wado_metadata(self, req: Request) -> Response:
        """Metadata of a study, series or instance. Bulk data (Pixel Data, and any value over 1 KB) is listed with
        a ``BulkDataURI`` that the bulk data route answers, as Google's conformance statement ("Metadata resources",
        "Bulkdata") and PS3.18 §8.7.3 describe."""
        store = self._store(req)
        g = req.match.groupdict()
        rows = self._instances(store, g.get("study"), g.get("series"), g.get("sop"))
        if not rows:
            raise ApiError(404, "resource not found", "NOT_FOUND")
        base = f"{req.path.split('/dicomWeb')[0]}/dicomWeb"
        out = []
        for study, series, sop, sha, meta in rows:
            uri = f"{self.settings.base_url}{base}/studies/{study}/series/{series}/instances/{sop}/bulkdata/"
            meta = {tag: ({**el, "BulkDataURI": uri + tag} if "BulkDataURI" in el else el) for tag, el in meta.items()}
            pixels = dicom.pixel_data_vr(self.storage.get_blob(sha))
            if pixels:
                meta["7FE00010"] = {"vr": pixels, "BulkDataURI": uri + "7FE00010"}
            out.append(meta)
        return Response(200, json.dumps(out).encode(), {"Content-Type": "application/dicom+json"})

    def _one_instance(self, req: Request) -> bytes:
        rows = self._instances(self._store(req), req.match["study"], req.match["series"], req.match["sop"])
        if not rows:
            raise ApiError(404, "instance not found", "NOT_FOUND")
        return self.storage.get_blob(rows[0][3])

    @staticmethod
    def _multipart(parts: list[tuple[bytes, str]]) -> Response:
        """A ``multipart/related`` answer of ``(bytes, content type)`` parts; its ``type`` is the parts' media type."""
        boundary = uuid.uuid4().hex
        body = b"".join(
            f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
            for data, content_type in parts
        )
        body += f"--{boundary}--\r\n".encode()
        media = parts[0][1].split(";")[0]
        return Response(200, body, {"Content-Type": f'multipart/related; type="{media}"; boundary={boundary}'})

    def frames(self, req: Request) -> Response:
        """Frames of an instance (1-based), uncompressed Explicit VR Little Endian by default, or as stored with
        ``transfer-syntax=*`` (conformance statement, "DICOM frames")."""
        data = self._one_instance(req)
        accept = (req.headers.get("Accept") or "").lower()
        keep = "transfer-syntax=*" in accept.replace('"', "")
        try:
            frames = dicom.raw_frames(data, keep_syntax=keep)
        except dicom.InstanceError as exc:
            raise ApiError(400, exc.message, "INVALID_ARGUMENT") from None
        numbers = [int(n) for n in req.match["frames"].split(",")]
        if any(n < 1 or n > len(frames) for n in numbers):
            raise ApiError(404, f"the instance has {len(frames)} frames; frame numbers start at 1", "NOT_FOUND")
        content_type = f"application/octet-stream; transfer-syntax={'*' if keep else _DEFAULT_SYNTAX}"
        return self._multipart([(frames[n - 1], content_type) for n in numbers])

    def bulkdata(self, req: Request) -> Response:
        """The value of one bulk data element of an instance, as its metadata's ``BulkDataURI`` names it."""
        value = dicom.element_bytes(self._one_instance(req), int(req.match["tag"], 16))
        if value is None:
            raise ApiError(404, f"the instance has no bulk data element {req.match['tag']}", "NOT_FOUND")
        return self._multipart([(value, "application/octet-stream")])

    def delete_instance(self, req: Request) -> dict:
        """Delete one instance; a store that streams its metadata appends a ``DELETE`` row for it."""
        store = self._store(req)
        where, args = "store=? AND study=? AND series=? AND sop=?", (store, *req.match.group("study", "series", "sop"))
        shas = [sha for (sha,) in self.storage.query("SELECT sha256 FROM instances WHERE " + where, args)]
        if not shas or not self.storage.execute("DELETE FROM instances WHERE " + where, args):
            raise ApiError(404, "instance not found", "NOT_FOUND")
        self.engine.stream(store, shas, change="DELETE")
        return {}

    def delete_study_or_series(self, req: Request) -> dict:
        store = self._store(req)
        g = req.match.groupdict()
        rows = self._instances(store, g["study"], g.get("series"))
        if not rows:
            raise ApiError(404, "resource not found", "NOT_FOUND")
        method = "DeleteSeries" if g.get("series") else "DeleteStudy"
        run = self.engine.new_operation(store.split("/dicomStores/")[0], req.match["v"], method, {})

        def work(r: RunningOp) -> None:
            where = "store=? AND study=?" + (" AND series=?" if g.get("series") else "")
            args = (store, g["study"]) + ((g["series"],) if g.get("series") else ())
            shas = [sha for (sha,) in self.storage.query("SELECT sha256 FROM instances WHERE " + where, args)]
            r.counter["success"] = self.storage.execute("DELETE FROM instances WHERE " + where, args)
            self.engine.stream(store, shas, change="DELETE")

        self.engine.start(run, work)
        return self._op_response(run)
