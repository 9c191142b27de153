"""BigQuery steps of the filtered export that hold patient data: the criteria query and its work tables.

The criteria (PatientIDs among them) are query parameters, as the guide's query wants them. The provider's
``BigQueryInsertJobOperator`` logs its whole configuration ("Executing: ...") and shows it as a rendered field,
so the criteria must not be in it: :class:`BigQueryCriteriaQueryOperator` reads them from the run's params
only when it sends the job. The work tables hold PatientName and PatientID, so they get an expiry as soon as
they exist and are dropped once the export has succeeded.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Sequence
from typing import Any

from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook
from airflow.providers.google.cloud.operators.bigquery import BigQueryInsertJobOperator
from google.api_core.exceptions import Conflict, NotFound
from google.cloud import bigquery

from dicom_pipelines.dag_params import DEFAULT_MAXIMUM_BYTES_BILLED


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


class BigQueryCriteriaQueryOperator(BigQueryInsertJobOperator):
    """The provider's job operator for a query whose parameters may identify patients.

    :param criteria: names of the run's params sent as query parameters; they are read when the job is sent,
        so they appear in no log line, rendered field or XCom.
    :param maximum_bytes_billed: the query fails rather than bill more (``maximumBytesBilled``); the dry run's
        estimate is logged first.
    :param expire_tables: ``project.dataset.table`` work tables to give an expiry once the query has run.
    :param expiration_hours: how long those tables may live if the run never gets to drop them.
    """

    template_fields: Sequence[str] = (
        *BigQueryInsertJobOperator.template_fields,
        "maximum_bytes_billed",
        "expire_tables",
        "expiration_hours",
    )

    def __init__(
        self,
        *,
        criteria: Sequence[str],
        maximum_bytes_billed: int | str = DEFAULT_MAXIMUM_BYTES_BILLED,
        expire_tables: Sequence[str] = (),
        expiration_hours: float | str = 24,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.criteria = tuple(criteria)
        self.maximum_bytes_billed = maximum_bytes_billed
        self.expire_tables = expire_tables
        self.expiration_hours = expiration_hours
        self._criteria_values: dict[str, Any] = {}

    def execute(self, context: Any) -> Any:
        self._criteria_values = {name: context["params"].get(name) for name in self.criteria}
        result = super().execute(context)
        self._expire(BigQueryHook(gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain))
        return result

    def _with_criteria(self) -> dict:
        configuration = copy.deepcopy(self.configuration)
        configuration["query"]["queryParameters"] = criteria_parameters(self._criteria_values)
        configuration["query"]["maximumBytesBilled"] = str(int(self.maximum_bytes_billed))
        return configuration

    def _submit_job(self, hook: BigQueryHook, job_id: str) -> Any:
        self._add_job_labels()
        configuration = self._with_criteria()
        dry = hook.insert_job(
            configuration={**configuration, "dryRun": True},
            project_id=self.project_id,
            location=self.location,
            job_id=f"{job_id}_dry_run",
            nowait=True,
        )
        self.log.info(
            "The filter query will process %s bytes (limit %s)",
            getattr(dry, "total_bytes_processed", None),
            configuration["query"]["maximumBytesBilled"],
        )
        return hook.insert_job(
            configuration=configuration,
            project_id=self.project_id,
            location=self.location,
            job_id=job_id,
            timeout=self.result_timeout,
            retry=self.result_retry,
            nowait=True,
        )

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


def drop_work_tables(gcp_conn_id: str, tables: Sequence[str]) -> list[str]:
    """Drop the work tables of a run (missing ones are fine); returns those given."""
    hook = BigQueryHook(gcp_conn_id=gcp_conn_id)
    for table in tables:
        hook.delete_table(table_id=table, not_found_ok=True)
    return list(tables)


def table_age_hours(gcp_conn_id: str, table: str) -> float | None:
    """Hours since ``project.dataset.table`` was last modified; None when it does not exist."""
    project, dataset, table_id = table.split(".")
    try:
        found = BigQueryHook(gcp_conn_id=gcp_conn_id).get_client(project_id=project).get_table(table)
    except NotFound:
        return None
    if found.modified is None:
        return None
    return (dt.datetime.now(dt.UTC) - found.modified).total_seconds() / 3600
