"""BigQuery steps of the filtered export that hold patient data: the criteria query and its work tables.

The criteria (PatientIDs among them) are query parameters, as the guide's query wants them. The provider's
``BigQueryInsertJobOperator`` logs its whole configuration ("Executing: ...") and shows it as a rendered field,
so the criteria must not be in it: :class:`BigQueryCriteriaQueryOperator` reads them from the run's params
only when it sends the job, through the provider's public hook and trigger. The work tables hold PatientName and
PatientID, so they get an expiry as soon as they exist and are dropped once the export has succeeded.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException
from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook
from airflow.providers.google.cloud.operators.cloud_base import GoogleCloudBaseOperator
from airflow.providers.google.cloud.triggers.bigquery import BigQueryInsertJobTrigger
from airflow.providers.google.common.hooks.base_google import PROVIDE_PROJECT_ID
from google.api_core.exceptions import Conflict, NotFound
from google.cloud import bigquery

from dicom_pipelines.dag_params import DEFAULT_MAXIMUM_BYTES_BILLED
from dicom_pipelines.settings import GCP_CONN_ID


def criteria_parameters(values: dict[str, Any]) -> list[dict]:
    """Named STRING parameters for the criteria given (a list joined with commas: the rules refuse commas inside a
    value). A criterion not given is not sent: the query names only the columns of the criteria given."""
    return [
        {
            "name": name,
            "parameterType": {"type": "STRING"},
            "parameterValue": {"value": ",".join(value) if isinstance(value, list) else str(value)},
        }
        for name, value in values.items()
        if value
    ]


class BigQueryCriteriaQueryOperator(GoogleCloudBaseOperator):
    """A BigQuery query job whose parameters may identify patients, on the Google provider's public API only.

    The provider's ``BigQueryInsertJobOperator`` logs its whole configuration and shows it as a rendered field,
    so this operator sends the job itself through ``BigQueryHook.insert_job`` and waits with the provider's
    ``BigQueryInsertJobTrigger``: the criteria are read from the run's params when the job is sent and are in
    no log line, rendered field, XCom or job id (a job id is visible in BigQuery's job list and in our logs).

    A retry looks up the previous try's job before sending another: a job still running is waited for, a
    finished one is taken as it is, and only a failed one is sent again (BigQuery's jobs are idempotent per id).

    :param configuration: the job's ``configuration`` (``query`` with ``destinationTable``...), templated.
    :param criteria: names of the run's params sent as query parameters.
    :param maximum_bytes_billed: the query fails rather than bill more (``maximumBytesBilled``); the dry run's
        estimate is logged first.
    :param expire_tables: ``project.dataset.table`` work tables to give an expiry once the query has run.
    :param expiration_hours: how long those tables may live if the run never gets to drop them.
    :param deferrable: wait in the triggerer (the shipped DAGs always do); else poll from the worker.
    """

    template_fields: Sequence[str] = (
        "configuration",
        "project_id",
        "location",
        "gcp_conn_id",
        "impersonation_chain",
        "maximum_bytes_billed",
        "expire_tables",
        "expiration_hours",
    )
    template_fields_renderers = {"configuration": "json"}

    def __init__(
        self,
        *,
        configuration: dict[str, Any],
        criteria: Sequence[str],
        project_id: str = PROVIDE_PROJECT_ID,
        location: str | None = None,
        gcp_conn_id: str = GCP_CONN_ID,
        impersonation_chain: str | Sequence[str] | None = None,
        maximum_bytes_billed: int | str = DEFAULT_MAXIMUM_BYTES_BILLED,
        expire_tables: Sequence[str] = (),
        expiration_hours: float | str = 24,
        deferrable: bool = True,
        poll_interval: float = 4.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.configuration = configuration
        self.criteria = tuple(criteria)
        self.project_id = project_id
        self.location = location
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain
        self.maximum_bytes_billed = maximum_bytes_billed
        self.expire_tables = expire_tables
        self.expiration_hours = expiration_hours
        self.deferrable = deferrable
        self.poll_interval = poll_interval

    def _hook(self) -> BigQueryHook:
        return BigQueryHook(gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain)

    def job_id(self, context: Any, try_number: int) -> str:
        """Letters, digits and underscores from the DAG, task and run ids, and the try: no criterion in it."""
        base = f"dicom_{self.dag_id}_{self.task_id}_{context['run_id']}"
        return re.sub(r"[^A-Za-z0-9_]", "_", base)[:900] + f"_try{try_number}"

    def with_criteria(self, params: Any) -> dict:
        configuration = copy.deepcopy(self.configuration)
        configuration["query"]["queryParameters"] = criteria_parameters({n: params.get(n) for n in self.criteria})
        configuration["query"]["maximumBytesBilled"] = str(int(self.maximum_bytes_billed))
        configuration["labels"] = {
            **configuration.get("labels", {}),
            "airflow-dag": re.sub(r"[^a-z0-9_-]", "-", self.dag_id.lower())[:63],
            "airflow-task": re.sub(r"[^a-z0-9_-]", "-", self.task_id.lower())[:63],
        }
        return configuration

    def execute(self, context: Any) -> str:
        hook = self._hook()
        project = self.project_id or hook.project_id
        try_number = int(context["ti"].try_number)
        job = self._previous_job(hook, project, context, try_number)
        if job is None:
            job = self._submit(hook, project, context, self.job_id(context, try_number))
        if not job.done():
            if self.deferrable:
                self.defer(
                    trigger=BigQueryInsertJobTrigger(
                        conn_id=self.gcp_conn_id,
                        job_id=job.job_id,
                        project_id=project,
                        location=job.location or self.location,
                        poll_interval=self.poll_interval,
                        impersonation_chain=self.impersonation_chain,
                    ),
                    method_name="execute_complete",
                )
            job.result()
        if job.error_result:
            raise AirflowException(f"BigQuery job {job.job_id} failed: {job.error_result.get('message')}")
        self._expire(hook)
        return str(job.job_id)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> str:
        """The trigger's event: ``status`` ``success`` or ``error`` with a ``message`` (the provider's schema)."""
        if event.get("status") != "success":
            raise AirflowException(f"BigQuery job {event.get('job_id')} failed: {event.get('message')}")
        self._expire(self._hook())
        return str(event["job_id"])

    def _previous_job(self, hook: BigQueryHook, project: str, context: Any, try_number: int) -> Any:
        """The job of an earlier try to wait for or to take as it is; None when a new one must be sent."""
        for earlier in range(try_number - 1, 0, -1):
            try:
                job = hook.get_job(job_id=self.job_id(context, earlier), project_id=project, location=self.location)
            except NotFound:
                continue
            if job.done() and job.error_result:
                self.log.info("The job of try %d failed; sending a new one", earlier)
                return None
            self.log.info("Re-attaching to the job of try %d (%s), not sending another", earlier, job.state)
            return job
        return None

    def _submit(self, hook: BigQueryHook, project: str, context: Any, job_id: str) -> Any:
        configuration = self.with_criteria(context["params"])
        dry = hook.insert_job(
            configuration={**configuration, "dryRun": True},
            project_id=project,
            location=self.location,
            job_id=f"{job_id}_dry_run",
            nowait=True,
        )
        self.log.info(
            "Sending %s: the filter query will process %s bytes (limit %s)",
            job_id,
            getattr(dry, "total_bytes_processed", None),
            configuration["query"]["maximumBytesBilled"],
        )
        try:
            return hook.insert_job(
                configuration=configuration, project_id=project, location=self.location, job_id=job_id, nowait=True
            )
        except Conflict:  # sent by this try before a crash: the same job, looked up
            return hook.get_job(job_id=job_id, project_id=project, location=self.location)

    def _expire(self, hook: BigQueryHook) -> None:
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=float(self.expiration_hours))
        for table in self.expire_tables:
            project, dataset, table_id = table.split(".")
            try:
                hook.update_table(
                    table_resource={"expirationTime": str(int(expires.timestamp() * 1000))},
                    fields=["expirationTime"],
                    dataset_id=dataset,
                    table_id=table_id,
                    project_id=project,
                )
            except NotFound:  # no per-run metadata table when the store streams its metadata
                continue
        if self.expire_tables:
            self.log.info("Work tables %s expire at %s", ", ".join(self.expire_tables), expires.isoformat())


def bigquery_location(healthcare_location: str) -> str:
    """The BigQuery location that keeps a Healthcare dataset's data in its region.

    Healthcare regions (``europe-west2``) are BigQuery regions of the same name; the Healthcare multi-regions
    ``us`` and ``eu`` are BigQuery's ``US`` and ``EU``.
    """
    return healthcare_location.upper() if healthcare_location.lower() in ("us", "eu") else healthcare_location.lower()


def same_location(a: str | None, b: str) -> bool:
    return (a or "US").lower() == b.lower()


def location_refusal(dataset: str, found: str | None, wanted: str, purpose: str) -> str:
    return (
        f"BigQuery dataset {dataset} is in location {found or 'US'}, but {purpose} must stay in {wanted}, the "
        f"Healthcare dataset's region: it would hold PatientName and PatientID outside that region. Use a dataset "
        f"in {wanted}, or set bigquery_location to {found or 'US'} to accept that location explicitly."
    )


def ensure_dataset_in(client: bigquery.Client, dataset: str, location: str, *, create: bool, purpose: str) -> bool:
    """Make sure ``project.dataset`` exists in ``location`` (created there when missing and ``create``); returns
    whether it was created. A dataset elsewhere raises :class:`ValueError` naming both locations."""
    try:
        found = client.get_dataset(dataset)
    except NotFound:
        if not create:
            raise ValueError(f"BigQuery dataset {dataset} does not exist, and creating it is not allowed") from None
        try:
            resource = bigquery.Dataset(dataset)
            resource.location = location
            client.create_dataset(resource)
            return True
        except Conflict:  # made meanwhile by another run
            found = client.get_dataset(dataset)
    if not same_location(found.location, location):
        raise ValueError(location_refusal(dataset, found.location, location, purpose))
    return False


def check_stream_table(
    gcp_conn_id: str,
    table: str,
    *,
    location: str,
    create_dataset: bool,
    impersonation_chain: str | Sequence[str] | None = None,
) -> None:
    """Prepare ``project.dataset.table`` for a DICOM store's metadata stream without making the table.

    The Healthcare API creates the table itself and evolves its schema; Google recommends against a custom schema
    in it (``StreamConfig.bigqueryDestination``). It writes with streaming inserts, which BigQuery refuses for a
    column-partitioned table when the row's partitioning value is over 1825 days in the past or 366 in the future;
    the API then only logs the refusal. So an existing table partitioned on a column (``StudyDate``, say) is
    refused: every study older than five years would silently never reach it. The dataset is created in
    ``location`` when missing (and allowed); one in another location is refused.
    Raises :class:`ValueError` with the reason.
    """
    project, dataset, _ = table.split(".")
    client = BigQueryHook(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain).get_client(
        project_id=project
    )
    ensure_dataset_in(
        client, f"{project}.{dataset}", location, create=create_dataset, purpose="the metadata stream table"
    )
    try:
        existing = client.get_table(table)
    except NotFound:
        return
    field = existing.time_partitioning.field if existing.time_partitioning else None
    if field:
        raise ValueError(
            f"stream table {table} is partitioned on the column {field}: BigQuery refuses streamed rows whose "
            f"{field} is more than 1825 days in the past or 366 days in the future, and the Healthcare API only "
            "logs the refusal, so older studies would silently be missing from it. Let the Healthcare API create "
            "the table: name a table that does not exist yet (or drop this one; the API streams from then on)."
        )


def drop_work_tables(
    gcp_conn_id: str, tables: Sequence[str], impersonation_chain: str | Sequence[str] | None = None
) -> list[str]:
    """Drop the work tables of a run (missing ones are fine); returns those given."""
    hook = BigQueryHook(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain)
    for table in tables:
        hook.delete_table(table_id=table, not_found_ok=True)
    return list(tables)


def table_age_hours(
    gcp_conn_id: str, table: str, impersonation_chain: str | Sequence[str] | None = None
) -> float | None:
    """Hours since ``project.dataset.table`` was last modified; None when it does not exist."""
    project, dataset, table_id = table.split(".")
    try:
        hook = BigQueryHook(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain)
        found = hook.get_client(project_id=project).get_table(table)
    except NotFound:
        return None
    if found.modified is None:
        return None
    return (dt.datetime.now(dt.UTC) - found.modified).total_seconds() / 3600
