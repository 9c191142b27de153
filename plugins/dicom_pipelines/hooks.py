"""Cloud Healthcare API (DICOM) hooks: every call to the API lives here.

:class:`CloudHealthcareDicomHook` (sync) builds the discovery client from the document bundled with
``google-api-python-client`` (``static_discovery=True``), so it works offline and against any
endpoint. :class:`CloudHealthcareDicomAsyncHook` is what the trigger uses: plain ``aiohttp`` calls,
no blocking I/O in the event loop. Both parse what the API answers with :mod:`dicom_pipelines.responses`.

The endpoint comes from the connection extra ``healthcare_endpoint`` or the environment variable
``HEALTHCARE_API_ENDPOINT``; unset means Google (``https://healthcare.googleapis.com/``). That is
how the local stack is reached, with the same code path as production. Per-instance errors are read
from Cloud Logging (connection extra ``logging_endpoint`` or ``LOGGING_API_ENDPOINT``; unset means Google).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httplib2
import yarl
from airflow.providers.google.common.hooks.base_google import PROVIDE_PROJECT_ID, GoogleBaseAsyncHook, GoogleBaseHook
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from dicom_pipelines.arrivals import IMPORTED_MARKER, ArrivedObject, staged_name
from dicom_pipelines.decisions import ADOPT, FAIL, SUBMIT, Adoption, adoption, ambiguous_message
from dicom_pipelines.polling import PollPlanner
from dicom_pipelines.responses import (
    DEFAULT_ENDPOINT,
    SUBMIT_CLOCK_SKEW_S,
    SUBMIT_QUIET_S,
    SUBMIT_SETTLE_S,
    SUBMIT_TIMEOUT_S,
    AmbiguousSubmissionError,
    HealthcareApiError,
    OperationDeadlineExceeded,
    OperationStatus,
    logging_read_advice,
    operation_log_filter,
    parse_log_entry,
    parse_operation,
    resolve_endpoint,
    resolve_logging_endpoint,
)
from dicom_pipelines.settings import GCP_CONN_ID
from dicom_pipelines.validation import literal_prefix, wildcard_regex

ACK_BATCH = 500
"""Ack ids per Pub/Sub acknowledge request (each id is a few hundred bytes; a request takes up to 512 KB)."""
GCS_PARALLELISM = 16
"""Concurrent Cloud Storage calls when staging, marking or deleting a run's files (each is one small request)."""


@dataclass
class StagedArrivals:
    """What :meth:`CloudHealthcareDicomHook.stage_arrivals` did with each arrived file."""

    staged: list[ArrivedObject] = field(default_factory=list)
    already_imported: list[ArrivedObject] = field(default_factory=list)
    superseded: list[ArrivedObject] = field(default_factory=list)
    missing: list[ArrivedObject] = field(default_factory=list)


def imported_content(blob: Any) -> bool:
    """Whether an arrival run imported this object's current content (:data:`IMPORTED_MARKER`)."""
    return bool(blob.crc32c) and (blob.metadata or {}).get(IMPORTED_MARKER) == blob.crc32c


class CloudHealthcareDicomHook(GoogleBaseHook):
    """Sync hook for DICOM stores, their import/export operations and DICOMweb metrics.

    :param gcp_conn_id: Airflow connection for Google Cloud (``is_anonymous`` works for the local stack).
    :param impersonation_chain: service account(s) to impersonate, as in every Google provider hook.
    :param api_version: ``v1`` (default) or ``v1beta1``.
    """

    conn_name_attr = "gcp_conn_id"
    default_conn_name = GCP_CONN_ID
    conn_type = "google_cloud_platform"
    hook_name = "Google Cloud Healthcare (DICOM)"

    def __init__(
        self,
        gcp_conn_id: str = default_conn_name,
        impersonation_chain: str | Sequence[str] | None = None,
        api_version: str = "v1",
        **kwargs: Any,
    ):
        if api_version not in ("v1", "v1beta1"):
            raise ValueError(f"api_version={api_version!r} is invalid: must be 'v1' or 'v1beta1'")
        super().__init__(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain, **kwargs)
        self.api_version = api_version
        self._conn = None
        self._requests: Any = None

    @property
    def endpoint(self) -> str | None:
        return resolve_endpoint(self.extras)

    @property
    def logging_endpoint(self) -> str | None:
        return resolve_logging_endpoint(self.extras)

    @property
    def api_root(self) -> str:
        return self.endpoint or DEFAULT_ENDPOINT

    def get_conn(self) -> Any:
        if self._conn is None:
            endpoint = self.endpoint
            self._conn = build(
                "healthcare",
                self.api_version,
                http=self._authorize(),
                cache_discovery=False,
                static_discovery=True,
                client_options={"api_endpoint": endpoint} if endpoint else None,
            )
        return self._conn

    def _datasets(self) -> Any:
        return self.get_conn().projects().locations().datasets()

    def _execute(self, request: Any, method: str, num_retries: int | None = None) -> dict:
        try:
            return request.execute(num_retries=self.num_retries if num_retries is None else num_retries)
        except HttpError as exc:
            raise HealthcareApiError.from_body(exc.resp.status, exc.content, method) from None
        except (TimeoutError, OSError, httplib2.HttpLib2Error) as exc:
            raise HealthcareApiError(503, "UNAVAILABLE", f"{type(exc).__name__}: {exc}", method) from None

    def _send(self, http_method: str, url: str, api_method: str, **kwargs: Any) -> Any:
        """One HTTP request over an ``AuthorizedSession`` (this connection's credentials), parsed as JSON.

        requests never resends a request by itself, unlike httplib2 under the discovery client, which reconnects and
        resends any request, a POST too, when the connection drops before the answer's status line, with no log
        line: for ``deidentify`` that is a second copy of the cohort. No answer (a dropped connection, a timeout)
        is raised as a 503: for a POST that is ambiguous, and :meth:`_start_operation` resolves it by a lookup.
        """
        import requests

        if self._requests is None:
            from google.auth.transport.requests import AuthorizedSession

            self._requests = AuthorizedSession(self.get_credentials())
            self._requests.trust_env = self.endpoint is None
        try:
            resp = self._requests.request(http_method, url, timeout=SUBMIT_TIMEOUT_S, **kwargs)
        except requests.RequestException as exc:
            raise HealthcareApiError(
                503, "UNAVAILABLE", f"no answer ({type(exc).__name__}); the server may have acted", api_method
            ) from None
        if resp.status_code >= 400:
            raise HealthcareApiError.from_body(resp.status_code, resp.content, api_method)
        return resp.json() if resp.content.strip() else None

    def _post_once(self, request: Any, method: str) -> dict:
        """Send a request that starts an operation exactly once on the wire: the discovery client only builds it (URL,
        body and headers from the bundled document), and :meth:`_send` sends it."""
        return self._send(request.method, request.uri, method, data=request.body, headers=request.headers) or {}

    def _start_operation(
        self,
        request: Any,
        method: str,
        store_name: str,
        api_method: str,
        before_resend: Callable[[], None] | None = None,
    ) -> dict:
        """POST a request that starts an operation, at most once in effect.

        The request carries no request id, so a blind retry after a 5xx or a lost connection could start a
        second, untracked operation. After such an ambiguous failure the dataset's operations are looked up
        (:meth:`locate_submission`): the one operation that can be shown ours is adopted; none means the server
        never started it, and the POST is sent again (after ``before_resend``, which may refuse); otherwise
        :class:`AmbiguousSubmissionError` names the candidates. A 429 is a refusal, so it is simply resent.
        """
        dataset = store_name.split("/dicomStores/")[0]
        before = self.list_operations(dataset_name=dataset)
        since = time.time()
        delay = 1.0
        for attempt in range(self.num_retries + 1):
            try:
                return self._post_once(request, method)
            except HealthcareApiError as exc:
                if not exc.retryable or attempt == self.num_retries:
                    raise
                if exc.maybe_accepted:
                    found = self.locate_submission(
                        dataset_name=dataset, api_method=api_method, since=since, until=time.time(), before=before
                    )
                    if found.action == ADOPT:
                        self.log.warning(
                            "%s answered HTTP %s, but operation %s was started: adopting it",
                            method,
                            exc.http_status,
                            found.name,
                        )
                        return self.get_operation(name=found.name)
                    if found.action == FAIL:
                        raise AmbiguousSubmissionError(
                            exc.http_status,
                            "ABORTED",
                            ambiguous_message(found, api_method, f"the request failed ambiguously ({exc.api_message})"),
                            method,
                        ) from None
                    if before_resend is not None:
                        before_resend()
                self.log.warning(
                    "%s failed with HTTP %s (%s); sending it again in %.0fs",
                    method,
                    exc.http_status,
                    exc.api_message,
                    delay,
                )
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def locate_submission(
        self,
        *,
        dataset_name: str,
        api_method: str,
        since: float,
        until: float,
        before: list[dict] | None = None,
        settle_s: float = SUBMIT_SETTLE_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Adoption:
        """Which operation a request sent between ``since`` and ``until`` (epoch seconds, our clock) started, if any.

        Decided by :func:`~dicom_pipelines.decisions.adoption`, with ``before``, the dataset's operations listed
        just before the request, when there is one (the submission lists them first: one call). A request can
        still be in flight after our client gave up, and ``operations.list`` can lag, so "none" is concluded only
        after listing again over ``settle_s`` seconds; the window grows with the time waited.
        """
        waited, delay = 0.0, 1.0
        while True:
            found = adoption(
                self.list_operations(dataset_name=dataset_name),
                api_method=api_method,
                since=since,
                until=until + waited,
                skew=SUBMIT_CLOCK_SKEW_S,
                quiet=SUBMIT_QUIET_S,
                before=before,
            )
            if found.action != SUBMIT or waited >= settle_s:
                return found
            delay = min(delay, settle_s - waited)
            sleep(delay)
            waited += delay
            delay *= 2

    # --- datasets and stores -----------------------------------------------------------------
    @GoogleBaseHook.fallback_to_default_project_id
    def ensure_dicom_store(
        self,
        *,
        location: str,
        dataset_id: str,
        dicom_store_id: str,
        project_id: str = PROVIDE_PROJECT_ID,
        stream_table_uri: str | None = None,
        create_if_missing: bool = True,
        dataset_timeout_s: float = 300.0,
    ) -> str:
        """Make sure the store exists and return its name: ``get`` first, create only what is missing and allowed.

        An existing store needs only ``healthcare.dicomStores.get`` (and ``.update`` to add a stream), which
        ``roles/healthcare.dicomStoreAdmin`` grants. A missing dataset is created only with ``create_if_missing``;
        its ``datasets.create`` operation is waited for (up to ``dataset_timeout_s``) before the store is created.
        Google answers 403 for a dataset that does not exist, so a 403 is told apart from a missing permission
        by trying the creation; every 403 raised here names the permission and the role that grants it.

        ``project_id`` defaults to the connection's project. With ``stream_table_uri`` (``bq://PROJECT.DATASET.TABLE``)
        the store streams the metadata of every instance it receives to that table; an existing store gets the
        stream added (``streamConfigs``; the instances already in it are not streamed, as on Google).
        """
        parent = f"projects/{project_id}/locations/{location}"
        dataset = f"{parent}/datasets/{dataset_id}"
        store = f"{dataset}/dicomStores/{dicom_store_id}"
        stream = {"bigqueryDestination": {"tableUri": stream_table_uri}} if stream_table_uri else None
        try:
            existing = self.get_dicom_store(store_name=store)
        except HealthcareApiError as exc:
            if exc.http_status not in (403, 404):
                raise
            if not create_if_missing:
                raise self._missing(exc, store, dataset) from None
            if exc.http_status == 403:
                self._create_dataset(parent, dataset_id, dataset, dataset_timeout_s, exc)
            self._create_store(dataset, dicom_store_id, store, stream)
            return store
        if stream:
            self._add_stream(store, existing, stream)
        return store

    @staticmethod
    def _missing(exc: HealthcareApiError, store: str, dataset: str) -> HealthcareApiError:
        where = f"the DICOM store {store}" if exc.http_status == 404 else f"the dataset {dataset}"
        return HealthcareApiError(
            exc.http_status,
            exc.google_status,
            f"{where} does not exist{' or this identity may not read it' if exc.http_status == 403 else ''}, and "
            "create_if_missing is off: create it, or allow its creation (needs healthcare.datasets.create, "
            "roles/healthcare.datasetAdmin, for a dataset; healthcare.dicomStores.create, "
            f"roles/healthcare.dicomStoreAdmin, for a store). The API said: {exc.api_message}",
            "dicomStores.get",
        )

    def _create_dataset(
        self, parent: str, dataset_id: str, dataset: str, timeout_s: float, get_error: HealthcareApiError
    ) -> None:
        try:
            op = self._execute(self._datasets().create(parent=parent, datasetId=dataset_id, body={}), "datasets.create")
        except HealthcareApiError as exc:
            if exc.http_status == 409:  # the dataset exists: the 403 on the store was a missing permission
                raise HealthcareApiError(
                    403,
                    "PERMISSION_DENIED",
                    f"the dataset {dataset} exists, but this identity may not read its DICOM stores: it needs "
                    "healthcare.dicomStores.get (roles/healthcare.dicomStoreAdmin, or dicomStoreViewer to only "
                    f"read). The API said: {get_error.api_message}",
                    "dicomStores.get",
                ) from None
            if exc.http_status == 403:
                raise HealthcareApiError(
                    403,
                    "PERMISSION_DENIED",
                    f"the dataset {dataset} does not exist (or may not be read), and this identity may not create "
                    "it: creating it needs healthcare.datasets.create (roles/healthcare.datasetAdmin). Create the "
                    "dataset once by hand, or grant that role. The API said: "
                    f"{exc.api_message}",
                    "datasets.create",
                ) from None
            raise
        if not op.get("done"):
            status = self.wait_for_operation(
                name=op["name"], planner=PollPlanner(0.5, 5.0), deadline=time.time() + timeout_s
            )
        else:
            status = parse_operation(op)
        if status.error_code:
            raise HealthcareApiError(
                500,
                status.error_name,
                f"creating the dataset {dataset} failed: {status.error_message}",
                "datasets.create",
            )
        self.log.info("Created dataset %s", dataset)

    def _create_store(self, dataset: str, store_id: str, store: str, stream: dict | None) -> None:
        body = {"streamConfigs": [stream]} if stream else {}
        try:
            self._execute(
                self._datasets().dicomStores().create(parent=dataset, dicomStoreId=store_id, body=body),
                "dicomStores.create",
            )
            self.log.info("Created DICOM store %s", store)
        except HealthcareApiError as exc:
            if exc.http_status == 409:  # created meanwhile by another run: the same outcome
                if stream:
                    self._add_stream(store, self.get_dicom_store(store_name=store), stream)
                return
            if exc.http_status == 403:
                raise HealthcareApiError(
                    403,
                    "PERMISSION_DENIED",
                    f"this identity may not create the DICOM store {store}: it needs healthcare.dicomStores.create "
                    f"(roles/healthcare.dicomStoreAdmin). The API said: {exc.api_message}",
                    "dicomStores.create",
                ) from None
            raise

    def _add_stream(self, store: str, existing: dict, stream: dict) -> None:
        configs = existing.get("streamConfigs") or []
        table = stream["bigqueryDestination"]["tableUri"]
        if table in [(c.get("bigqueryDestination") or {}).get("tableUri") for c in configs]:
            return
        self._execute(
            self._datasets()
            .dicomStores()
            .patch(name=store, updateMask="streamConfigs", body={"streamConfigs": [*configs, stream]}),
            "dicomStores.patch",
        )
        self.log.info("DICOM store %s now streams its metadata to %s", store, table)

    def get_dicom_store(self, *, store_name: str) -> dict:
        return self._execute(self._datasets().dicomStores().get(name=store_name), "dicomStores.get")

    def get_store_metrics(self, *, store_name: str) -> dict[str, int]:
        raw = self._execute(
            self._datasets().dicomStores().getDICOMStoreMetrics(name=store_name), "dicomStores.getDICOMStoreMetrics"
        )
        return {
            k: int(raw.get(k, 0) or 0)
            for k in (
                "studyCount",
                "seriesCount",
                "instanceCount",
                "structuredStorageSizeBytes",
                "blobStorageSizeBytes",
            )
        }

    def store_has_instances(self, *, store_name: str) -> bool:
        """Whether the store holds any instance, by a DICOMweb search (``limit=1``), which does not lag.

        Store metrics can: "There might be a delay between when you modify the data and when the modifications
        are shown in the DICOM store metrics" (Google, DICOM store metrics), so they never decide emptiness.
        """
        url = f"{self.api_root}{self.api_version}/{store_name}/dicomWeb/instances"
        return bool(self._send("GET", url, "dicomWeb.searchForInstances", params={"limit": "1"}))

    # --- operations that start LROs -------------------------------------------------------------
    def import_dicom(self, *, store_name: str, gcs_uri: str, blob_storage_class: str | None = None) -> dict:
        body: dict[str, Any] = {"gcsSource": {"uri": gcs_uri}}
        if blob_storage_class:
            body["blobStorageSettings"] = {"blobStorageClass": blob_storage_class}
        return self._start_operation(
            self._datasets().dicomStores().import_(name=store_name, body=body),
            "dicomStores.import",
            store_name,
            "ImportDicomData",
        )

    def export_dicom_to_gcs(
        self, *, store_name: str, uri_prefix: str, mime_type: str | None = None, filter_uri: str | None = None
    ) -> dict:
        dest: dict[str, Any] = {"uriPrefix": uri_prefix}
        if mime_type:
            dest["mimeType"] = mime_type
        return self._export(store_name, {"gcsDestination": dest}, filter_uri)

    def export_dicom_to_bigquery(
        self,
        *,
        store_name: str,
        table_uri: str,
        write_disposition: str = "WRITE_EMPTY",
        filter_uri: str | None = None,
        include_source_store: bool = False,
    ) -> dict:
        dest: dict[str, Any] = {"tableUri": table_uri, "writeDisposition": write_disposition}
        if include_source_store:
            dest["includeSourceStore"] = True
        return self._export(store_name, {"bigqueryDestination": dest}, filter_uri)

    def deidentify_dicom_store(
        self, *, store_name: str, destination_store: str, config: dict[str, Any], filter_uri: str | None = None
    ) -> dict:
        """Start ``dicomStores.deidentify`` from ``store_name`` into ``destination_store`` (which must exist)."""
        body: dict[str, Any] = {"destinationStore": destination_store, "config": config}
        if filter_uri:
            body["filterConfig"] = {"resourcePathsGcsUri": filter_uri}

        def destination_still_empty() -> None:
            if self.store_has_instances(store_name=destination_store):
                raise AmbiguousSubmissionError(
                    503,
                    "ABORTED",
                    f"the de-identification request failed ambiguously and no operation was found, but the "
                    f"destination {destination_store} is no longer empty: not sending it again, to avoid a second "
                    "copy with new UIDs",
                    "dicomStores.deidentify",
                )

        return self._start_operation(
            self._datasets().dicomStores().deidentify(sourceStore=store_name, body=body),
            "dicomStores.deidentify",
            store_name,
            "DeidentifyDicomStore",
            before_resend=destination_still_empty,
        )

    def _export(self, store_name: str, body: dict[str, Any], filter_uri: str | None) -> dict:
        if filter_uri:
            body["filterConfig"] = {"resourcePathsGcsUri": filter_uri}
        return self._start_operation(
            self._datasets().dicomStores().export(name=store_name, body=body),
            "dicomStores.export",
            store_name,
            "ExportDicomData",
        )

    # --- operations -------------------------------------------------------------------------
    def get_operation(self, *, name: str, num_retries: int | None = None) -> dict:
        """The operation; ``num_retries=0`` for polling loops, which retry transient errors with their own backoff."""
        return self._execute(self._datasets().operations().get(name=name), "operations.get", num_retries)

    def list_operations(self, *, dataset_name: str, filter: str | None = None) -> list[dict]:
        ops, token = [], None
        while True:
            kwargs: dict[str, Any] = {"name": dataset_name, "pageSize": 1000}
            if filter:
                kwargs["filter"] = filter
            if token:
                kwargs["pageToken"] = token
            page = self._execute(self._datasets().operations().list(**kwargs), "operations.list")
            ops += page.get("operations", [])
            token = page.get("nextPageToken")
            if not token:
                return ops

    def cancel_operation(self, *, name: str) -> None:
        self._execute(self._datasets().operations().cancel(name=name, body={}), "operations.cancel")

    def wait_for_operation(
        self,
        *,
        name: str,
        planner: PollPlanner,
        deadline: float | None = None,
        on_progress: Callable[[OperationStatus], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> OperationStatus:
        """Poll until done; transient errors are retried, 4xx raise.

        ``deadline`` is epoch seconds. It is checked after every poll, successful or not, so an outage cannot
        outlast it, and a finished operation is reported as such even when the deadline has just passed.
        Raises :class:`OperationDeadlineExceeded` with the last status seen.
        """
        last: OperationStatus | None = None
        while True:
            try:
                last = parse_operation(self.get_operation(name=name, num_retries=0))
            except HealthcareApiError as exc:
                if not exc.retryable:
                    raise
                delay = planner.retry_delay()
                self.log.warning("Transient error polling %s (%s); retrying in %.1fs", name, exc, delay)
            else:
                if last.done:
                    return last
                if on_progress:
                    on_progress(last)
                delay = planner.next_delay(time.time(), last.processed, last.pending, last.created_at)
            if deadline is not None:
                if time.time() >= deadline:
                    raise OperationDeadlineExceeded(name, last)
                delay = min(delay, max(0.0, deadline - time.time()))
            sleep(delay)

    def failed_entries(
        self,
        *,
        status: OperationStatus,
        limit: int,
        settle_s: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> list[dict]:
        """Up to ``limit`` per-instance errors of a finished operation, read from Cloud Logging.

        Cloud Logging is where the Healthcare API writes them, on Google and on the local stack alike (this is
        the only code path). Entries can reach it a few seconds after the operation ends, so while fewer than
        expected are found, the read is repeated for up to ``settle_s`` seconds. Reading needs
        ``roles/logging.viewer`` on the project; without it the task log says so and names no file, and the
        task's outcome is unchanged. Google logs only a limited number of errors when there are many: the
        caller says when fewer entries than failures were found.
        """
        if not status.failure or limit <= 0:
            return []
        wanted = min(status.failure, limit)
        waited, delay = 0.0, 1.0
        while True:
            try:
                entries = self.list_operation_errors(operation_name=status.name, since=status.create_time, limit=limit)
            except Exception as exc:  # the report is best effort: the outcome comes from the counters
                self.log.warning(
                    "Could not read the errors of %s from Cloud Logging (%s: %s). %s The Console link is %s",
                    status.name,
                    type(exc).__name__,
                    exc,
                    logging_read_advice(exc),
                    status.logs_url or "n/a",
                )
                return []
            if len(entries) >= wanted or waited >= settle_s:
                return entries
            delay = min(delay, settle_s - waited)
            sleep(delay)
            waited += delay
            delay *= 2

    def _gcs(self) -> Any:
        from airflow.providers.google.cloud.hooks.gcs import GCSHook

        return GCSHook(gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain)

    @staticmethod
    def _location(uri: str) -> tuple[str, str]:
        """(bucket, object) of a ``gs://`` URI."""
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        return bucket, name

    def write_failure_report(self, *, uri: str, entries: list[dict]) -> None:
        """Newline-delimited JSON, one ``{source, code, message}`` per failed source, at ``uri`` (overwritten)."""
        bucket, name = self._location(uri)
        data = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
        self._gcs().upload(bucket, name, data=data, mime_type="application/x-ndjson")

    def read_failure_report(self, *, uri: str) -> list[dict]:
        """The entries of an earlier failure report at ``uri``, or ``[]`` when there is none."""
        bucket, name = self._location(uri)
        gcs = self._gcs()
        if not gcs.exists(bucket, name):
            return []
        text = gcs.download(bucket, name).decode()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def delete_failure_report(self, *, uri: str) -> None:
        """Delete the report at ``uri`` (one that :meth:`read_failure_report` found)."""
        self._gcs().delete(*self._location(uri))

    @classmethod
    def quarantined_name(cls, source: str, prefix: str) -> tuple[str, str]:
        """(bucket, object) of the quarantined copy of ``source``: ``gs://src/a/b.dcm`` → ``<prefix>/src/a/b.dcm``."""
        dest_bucket, dest_folder = cls._location(prefix)
        src_bucket, src_name = cls._location(source)
        return dest_bucket, "/".join(p for p in (dest_folder.rstrip("/"), src_bucket, src_name) if p)

    def release_quarantined(self, *, sources: set[str], prefix: str) -> int:
        """Delete the quarantined copies of ``sources`` (an earlier attempt's, which this one no longer failed)."""
        gcs, removed = self._gcs(), 0
        for source in sorted(s for s in sources if s.startswith("gs://")):
            copy = self.quarantined_name(source, prefix)
            if gcs.exists(*copy):
                gcs.delete(*copy)
                removed += 1
        return removed

    def quarantine_sources(self, *, entries: list[dict], prefix: str) -> int:
        """Copy each failed ``gs://`` source under ``prefix``, keeping bucket and path; returns how many."""
        gcs = self._gcs()
        copied = 0
        for source in sorted({e["source"] for e in entries if e["source"].startswith("gs://")}):
            gcs.copy(*self._location(source), *self.quarantined_name(source, prefix))
            copied += 1
        return copied

    def stage_arrivals(
        self, *, objects: Sequence[ArrivedObject], staging_bucket: str, staging_folder: str, run_key: str
    ) -> StagedArrivals:
        """Copy each arrived generation under ``<staging_folder>/<run_key>/`` so one import reads exactly them.

        ``dicomStores.import`` reads one ``gcsSource.uri``, never a list: the run's files are gathered by a
        server-side copy (``objects.rewrite``, no download) at the generation the notification named. A file that
        no longer exists, was overwritten since (its newer generation has a notification of its own) or whose content
        carries :data:`IMPORTED_MARKER` (an earlier run imported it: a redelivery) is not staged.
        """
        client = self._gcs().get_conn()
        destination = client.bucket(staging_bucket)

        def stage(arrived: ArrivedObject) -> str:
            source = client.bucket(arrived.bucket)
            blob = source.get_blob(arrived.name)
            if blob is None:
                return "missing"
            if imported_content(blob):
                return "already_imported"
            if blob.generation != arrived.generation:
                return "superseded"
            source.copy_blob(
                blob, destination, staged_name(staging_folder, run_key, arrived), source_generation=arrived.generation
            )
            return "staged"

        with ThreadPoolExecutor(max_workers=GCS_PARALLELISM) as pool:
            outcomes = list(pool.map(stage, objects))
        result = StagedArrivals()
        for arrived, outcome in zip(objects, outcomes, strict=True):
            getattr(result, outcome).append(arrived)
        return result

    def mark_imported(self, *, objects: Sequence[ArrivedObject]) -> int:
        """Set :data:`IMPORTED_MARKER` on each imported source generation (only if it is still the live one); how
        many were marked. The nightly import counts the marks; a redelivered notification finds one."""
        from google.api_core.exceptions import NotFound, PreconditionFailed

        client = self._gcs().get_conn()

        def mark(arrived: ArrivedObject) -> bool:
            blob = client.bucket(arrived.bucket).get_blob(arrived.name)
            if blob is None or blob.generation != arrived.generation:
                return False
            blob.metadata = {IMPORTED_MARKER: blob.crc32c}
            try:
                blob.patch(if_generation_match=arrived.generation)
            except (NotFound, PreconditionFailed):
                return False
            return True

        with ThreadPoolExecutor(max_workers=GCS_PARALLELISM) as pool:
            return sum(pool.map(mark, objects))

    def delete_staged(self, *, staging_bucket: str, folder: str) -> int:
        """Delete a run's staged copies (everything under ``folder/``); how many."""
        from google.api_core.exceptions import NotFound

        client = self._gcs().get_conn()
        blobs = list(client.list_blobs(staging_bucket, prefix=folder.strip("/") + "/"))

        def delete(blob: Any) -> int:
            try:
                blob.delete()
            except NotFound:
                return 0
            return 1

        with ThreadPoolExecutor(max_workers=GCS_PARALLELISM) as pool:
            return sum(pool.map(delete, blobs))

    def acknowledge_notifications(self, *, subscription: str, ack_ids: Sequence[str]) -> int:
        """Acknowledge a run's Pub/Sub messages (``projects/P/subscriptions/S``), through the Google provider's
        PubSubHook, 500 ids per request; how many were sent. An ack id past the subscription's acknowledgement
        deadline acknowledges nothing: that message comes again, and finds its files marked."""
        from airflow.providers.google.cloud.hooks.pubsub import PubSubHook

        _, project, _, subscription_id = subscription.split("/", 3)
        pubsub = PubSubHook(gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain)
        ids = list(ack_ids)
        for start in range(0, len(ids), ACK_BATCH):
            pubsub.acknowledge(subscription=subscription_id, project_id=project, ack_ids=ids[start : start + ACK_BATCH])
        return len(ids)

    def count_imported_by_arrival(self, *, gcs_uri: str) -> tuple[int, int]:
        """(files matching an import pattern, how many of them an arrival run already imported, by their marker)."""
        bucket, pattern = self._location(gcs_uri)
        matches = wildcard_regex(pattern).match
        matched = marked = 0
        for blob in self._gcs().get_conn().list_blobs(bucket, prefix=literal_prefix(pattern)):
            if matches(blob.name):
                matched += 1
                marked += imported_content(blob)
        return matched, marked

    def logging_client(self, project: str) -> Any:
        """The official Cloud Logging client, over HTTP, with this connection's credentials and endpoint."""
        from google.cloud.logging_v2 import Client

        endpoint = self.logging_endpoint
        return Client(
            project=project,
            credentials=self.get_credentials(),
            _use_grpc=False,
            client_options={"api_endpoint": endpoint} if endpoint else None,
        )

    def list_operation_errors(self, *, operation_name: str, since: str = "", limit: int = 1000) -> list[dict]:
        """The error entries (``entries.list``) of one operation, oldest first, parsed by :func:`parse_log_entry`.

        Listed newest first (``timestamp desc``), as the ``entries.list`` reference recommends for recently ingested
        entries, then put back in time order.
        """
        project = operation_name.split("/")[1]
        client = self.logging_client(project)
        found = client.list_entries(
            resource_names=[f"projects/{project}"],
            filter_=operation_log_filter(operation_name, since),
            order_by="timestamp desc",
            page_size=min(max(limit, 1), 1000),
            max_results=limit,
        )
        return [parse_log_entry(entry.to_api_repr()) for entry in found][::-1]


class CloudHealthcareDicomAsyncHook(GoogleBaseAsyncHook):
    """Async access to operations for the trigger: aiohttp, no blocking call in the event loop.

    Credentials are the provider's: the sync hook is built off the loop (``get_sync_hook``) and tokens come
    from its ``get_token``, so impersonation and every connection type work as in the provider's triggers.
    Many triggers share one triggerer process, so they share what can be shared: one HTTP session per
    event loop (reference-counted), and per connection the endpoint and the token
    (``bench/triggerer_scale.py`` measures what that saves).
    """

    sync_hook_class = CloudHealthcareDicomHook
    _sessions: dict[int, tuple[aiohttp.ClientSession, int]] = {}
    _setups: dict[tuple, tuple[str, Any]] = {}
    _setup_locks: dict[tuple, asyncio.Lock] = {}

    def __init__(
        self,
        gcp_conn_id: str = GCP_CONN_ID,
        impersonation_chain: str | Sequence[str] | None = None,
        api_version: str = "v1",
        request_timeout: float = 60.0,
    ):
        super().__init__(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain, api_version=api_version)
        self.api_version = api_version
        self.request_timeout = request_timeout
        self._setup_key = (gcp_conn_id, json.dumps(impersonation_chain), api_version)
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, yarl.URL] = {}

    async def _setup(self) -> tuple[str, Any]:
        """(API root, token or None for an anonymous connection), resolved once per connection.

        A triggerer that starts with thousands of deferred tasks starts their triggers at once: they wait for the
        one resolution in progress rather than each building the sync hook (a thread and a connection lookup).
        """
        cached = self._setups.get(self._setup_key)
        if cached is None:
            lock = self._setup_locks.setdefault((id(asyncio.get_running_loop()), self._setup_key), asyncio.Lock())
            async with lock:
                cached = self._setups.get(self._setup_key)
                if cached is None:
                    hook = await self.get_sync_hook()
                    token = None if hook.extras.get("is_anonymous") else await self.get_token()
                    cached = self._setups[self._setup_key] = (hook.api_root, token)
        return cached

    def _acquire_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            key = id(asyncio.get_running_loop())
            session, refs = self._sessions.get(key, (None, 0))
            if session is None or session.closed:
                session, refs = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.request_timeout)), 0
            self._sessions[key] = (session, refs + 1)
            self._session = session
        return self._session

    async def _request(self, method: str, path: str, api_method: str, body: dict | None = None) -> dict:
        root, token = await self._setup()
        session = self._acquire_session()
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = yarl.URL(f"{root}{self.api_version}/{path}")
        headers = {"Authorization": f"Bearer {await token.get()}"} if token is not None else {}
        try:
            async with session.request(method, url, json=body, headers=headers) as resp:
                data = await resp.read()
                if resp.status >= 400:
                    raise HealthcareApiError.from_body(resp.status, data, api_method)
                return json.loads(data) if data else {}
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise HealthcareApiError(503, "UNAVAILABLE", f"{type(exc).__name__}: {exc}", api_method) from None

    async def get_operation(self, *, name: str) -> dict:
        return await self._request("GET", name, "operations.get")

    async def cancel_operation(self, *, name: str) -> None:
        await self._request("POST", f"{name}:cancel", "operations.cancel", {})

    async def close(self) -> None:
        """Release this hook's share of the loop's session; the last one closes it."""
        if self._session is None:
            return
        key = id(asyncio.get_running_loop())
        session, refs = self._sessions.get(key, (None, 0))
        if session is self._session:
            if refs <= 1:
                self._sessions.pop(key, None)
                await session.close()
            else:
                self._sessions[key] = (session, refs - 1)
        self._session = None
