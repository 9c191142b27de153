"""The local BigQuery through the official google-cloud-bigquery client (and raw REST for a few shapes)."""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import json
import os

import pytest
import requests
from google.api_core.exceptions import BadRequest, Conflict, NotFound
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from tests.helpers import PROJECT, new_bucket, unique

pytestmark = pytest.mark.usefixtures("stack")


@pytest.fixture()
def bq():
    return bigquery.Client(project=PROJECT, credentials=AnonymousCredentials())


@pytest.fixture()
def dataset(bq):
    name = unique("bq").replace("-", "_")
    bq.create_dataset(name)
    yield name
    bq.delete_dataset(name, delete_contents=True, not_found_ok=True)


ALL_TYPES = [
    bigquery.SchemaField("s", "STRING"),
    bigquery.SchemaField("i", "INTEGER"),
    bigquery.SchemaField("f", "FLOAT"),
    bigquery.SchemaField("n", "NUMERIC"),
    bigquery.SchemaField("b", "BOOLEAN"),
    bigquery.SchemaField("d", "DATE"),
    bigquery.SchemaField("t", "TIME"),
    bigquery.SchemaField("dt", "DATETIME"),
    bigquery.SchemaField("ts", "TIMESTAMP"),
    bigquery.SchemaField("j", "JSON"),
    bigquery.SchemaField(
        "r", "RECORD", fields=[bigquery.SchemaField("a", "STRING"), bigquery.SchemaField("b", "INTEGER")]
    ),
    bigquery.SchemaField("rep", "STRING", mode="REPEATED"),
]


def test_datasets_and_tables(bq, dataset):
    assert bq.get_dataset(dataset).dataset_id == dataset
    assert dataset in [d.dataset_id for d in bq.list_datasets()]
    with pytest.raises(Conflict):
        bq.create_dataset(dataset)
    t = bq.create_table(bigquery.Table(f"{PROJECT}.{dataset}.t", schema=ALL_TYPES[:2]))
    assert [f.name for f in bq.get_table(t).schema] == ["s", "i"]
    assert [x.table_id for x in bq.list_tables(dataset)] == ["t"]
    t.schema = ALL_TYPES[:3]
    assert [f.name for f in bq.update_table(t, ["schema"]).schema] == ["s", "i", "f"]
    bq.delete_table(t)
    with pytest.raises(NotFound):
        bq.get_table(f"{PROJECT}.{dataset}.t")
    with pytest.raises(NotFound):
        bq.get_dataset("does_not_exist")


def test_types_round_trip_through_insert_all_and_list_rows(bq, dataset):
    table = bq.create_table(bigquery.Table(f"{PROJECT}.{dataset}.types", schema=ALL_TYPES))
    row = {
        "s": "héllo",
        "i": 42,
        "f": 1.5,
        "n": decimal.Decimal("12.345"),
        "b": True,
        "d": dt.date(2026, 11, 20),
        "t": dt.time(10, 15, 30),
        "dt": dt.datetime(2026, 11, 20, 10, 15),
        "ts": dt.datetime(2026, 11, 20, 10, 15, tzinfo=dt.UTC),
        "j": {"k": [1, 2]},
        "r": {"a": "x", "b": 7},
        "rep": ["p", "q"],
    }
    assert bq.insert_rows(table, [row]) == []
    assert bq.insert_rows(table, [{"nope": 1}])[0]["errors"][0]["reason"] == "invalid"
    got = list(bq.list_rows(table))[0]
    for key in ("s", "i", "f", "n", "b", "d", "t", "dt", "ts", "rep"):
        assert got[key] == row[key], key
    assert got["r"] == {"a": "x", "b": 7} and got["j"] == {"k": [1, 2]}


def test_query_parameters_destination_and_dispositions(bq, dataset):
    table = bq.create_table(bigquery.Table(f"{PROJECT}.{dataset}.src", schema=ALL_TYPES[:2]))
    bq.insert_rows(table, [{"s": "a", "i": 1}, {"s": "b", "i": 2}, {"s": "c", "i": 3}])
    cfg = bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter("min", "INT64", 2),
            bigquery.ArrayQueryParameter("names", "STRING", ["b", "c", "z"]),
        ]
    )
    rows = bq.query(
        f"SELECT s FROM `{PROJECT}.{dataset}.src` WHERE i >= @min AND s IN UNNEST(@names) ORDER BY s", job_config=cfg
    ).result()
    assert [r.s for r in rows] == ["b", "c"]
    pos = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter(None, "INT64", 3)])
    assert [r.i for r in bq.query(f"SELECT i FROM `{PROJECT}.{dataset}.src` WHERE i = ?", job_config=pos).result()] == [
        3
    ]
    dest = f"{PROJECT}.{dataset}.dest"
    for disposition, expected in (("WRITE_TRUNCATE", 3), ("WRITE_APPEND", 6), ("WRITE_TRUNCATE", 3)):
        job = bq.query(
            f"SELECT * FROM `{PROJECT}.{dataset}.src`",
            job_config=bigquery.QueryJobConfig(destination=dest, write_disposition=disposition),
        )
        job.result()
        assert bq.get_table(dest).num_rows == expected
    with pytest.raises(Conflict):
        bq.query(
            "SELECT 1 AS x", job_config=bigquery.QueryJobConfig(destination=dest, write_disposition="WRITE_EMPTY")
        ).result()
    with pytest.raises(NotFound):
        bq.query(
            "SELECT 1 AS x",
            job_config=bigquery.QueryJobConfig(
                destination=f"{PROJECT}.{dataset}.never", create_disposition="CREATE_NEVER"
            ),
        ).result()


def test_dry_run_counts_bytes_of_the_columns_read(bq, dataset):
    table = bq.create_table(bigquery.Table(f"{PROJECT}.{dataset}.dry", schema=ALL_TYPES[:2]))
    bq.insert_rows(table, [{"s": "abcd", "i": 1}, {"s": "ef", "i": 2}])
    cfg = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False)
    only_i = bq.query(f"SELECT i FROM `{PROJECT}.{dataset}.dry`", job_config=cfg).total_bytes_processed
    both = bq.query(f"SELECT * FROM `{PROJECT}.{dataset}.dry`", job_config=cfg).total_bytes_processed
    assert only_i == 16 and both == 16 + (2 + 4) + (2 + 2)


def _month_partitioned(bq, dataset: str, name: str) -> bigquery.Table:
    table = bigquery.Table(
        f"{PROJECT}.{dataset}.{name}",
        schema=[bigquery.SchemaField("d", "DATE"), bigquery.SchemaField("i", "INTEGER")],
    )
    table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.MONTH, field="d")
    table.clustering_fields = ["d"]
    table = bq.create_table(table)
    days = ["2026-01-05", "2026-01-20", "2026-02-01", "2026-03-09", None]
    bq.insert_rows(table, [{"d": day, "i": n} for n, day in enumerate(days)])
    return table


def test_a_filter_on_the_partitioning_column_prunes_the_bytes_billed(bq, dataset):
    """Five rows in three month partitions and the NULL partition, 16 bytes each (DATE and INTEGER): a filter that
    isolates the partitioning column bills only the partitions it can match, and a whole partition at that."""
    table = _month_partitioned(bq, dataset, "parts")
    got = bq.get_table(table)
    assert got.time_partitioning.field == "d" and got.time_partitioning.type_ == "MONTH"
    assert got.clustering_fields == ["d"]
    fq = f"`{PROJECT}.{dataset}.parts`"

    def billed(where: str, params: dict | None = None) -> int:
        cfg = bigquery.QueryJobConfig(
            dry_run=True,
            query_parameters=[bigquery.ScalarQueryParameter(k, "STRING", v) for k, v in (params or {}).items()],
        )
        return bq.query(f"SELECT d, i FROM {fq} {where}", job_config=cfg).total_bytes_processed

    assert billed("") == 16 * 4 + 8
    assert billed("WHERE d = '2026-01-20'") == 16 * 2
    assert billed("WHERE d >= CAST(@since AS DATE) AND i >= 0", {"since": "2026-02-15"}) == 16
    assert billed("WHERE d > '2027-01-01'") == 0
    assert billed("WHERE d IS NULL") == 8
    assert billed("WHERE d = '2026-01-20' OR i = 3") == 16 * 4 + 8, "a condition on another column prunes nothing"
    rows = bq.query(f"SELECT i FROM {fq} WHERE d BETWEEN '2026-01-01' AND '2026-01-31' ORDER BY i").result()
    assert [r.i for r in rows] == [0, 1]


def test_partitioning_on_a_column_that_cannot_partition_is_refused(bq, dataset):
    table = bigquery.Table(f"{PROJECT}.{dataset}.bad", schema=[bigquery.SchemaField("s", "STRING")])
    table.time_partitioning = bigquery.TimePartitioning(field="s")
    with pytest.raises(BadRequest, match="TIMESTAMP, DATE or DATETIME"):
        bq.create_table(table)


def test_maximum_bytes_billed_fails_a_query_that_would_bill_more(bq, dataset):
    from google.api_core.exceptions import GoogleAPICallError

    table = bq.create_table(bigquery.Table(f"{PROJECT}.{dataset}.capped", schema=ALL_TYPES[1:2]))
    bq.insert_rows(table, [{"i": 1}, {"i": 2}])
    sql = f"SELECT i FROM `{PROJECT}.{dataset}.capped` ORDER BY i"
    with pytest.raises(GoogleAPICallError) as err:
        bq.query(sql, job_config=bigquery.QueryJobConfig(maximum_bytes_billed=15)).result()
    assert "Query exceeded limit for bytes billed: 15. 16 or higher required." in str(err.value)
    assert [r.i for r in bq.query(sql, job_config=bigquery.QueryJobConfig(maximum_bytes_billed=16)).result()] == [1, 2]


def test_paging_with_query_and_get_query_results(bq, dataset):
    table = bq.create_table(bigquery.Table(f"{PROJECT}.{dataset}.many", schema=ALL_TYPES[1:2]))
    bq.insert_rows(table, [{"i": n} for n in range(250)])
    job = bq.query(f"SELECT i FROM `{PROJECT}.{dataset}.many` ORDER BY i")
    assert [r.i for r in job.result(page_size=40)] == list(range(250))
    assert [
        r.i for r in bq.query_and_wait(f"SELECT i FROM `{PROJECT}.{dataset}.many` ORDER BY i", page_size=60)
    ] == list(range(250))


def test_failed_queries_fail(bq, dataset):
    with pytest.raises(NotFound):
        bq.query(f"SELECT * FROM `{PROJECT}.{dataset}.missing`").result()
    with pytest.raises(BadRequest) as err:
        bq.query("SELEC nonsense FROM").result()
    assert "invalidQuery" in str(err.value.errors) or "Syntax" in str(err.value)
    with pytest.raises(BadRequest) as err:
        bq.query(
            f"SELECT * FROM [{PROJECT}:{dataset}.x]", job_config=bigquery.QueryJobConfig(use_legacy_sql=True)
        ).result()
    assert "standard SQL" in str(err.value)


def test_job_ids_are_honoured_and_duplicates_conflict(bq, dataset):
    job = bq.query("SELECT 1 AS x", job_id="fixed_job_1", job_retry=None)
    job.result()
    assert bq.get_job("fixed_job_1").state == "DONE"
    with pytest.raises(Conflict):
        bq.query("SELECT 1 AS x", job_id="fixed_job_1", job_retry=None).result()
    bq.cancel_job("fixed_job_1")


def test_extract_csv_json_gzip_and_shards(bq, dataset):
    table = bq.create_table(bigquery.Table(f"{PROJECT}.{dataset}.ex", schema=ALL_TYPES[:2]))
    bq.insert_rows(table, [{"s": "a,b", "i": 1}, {"s": "c", "i": 2}])
    bucket = new_bucket("ex")
    bq.extract_table(
        table, f"gs://{bucket.name}/plain.csv", job_config=bigquery.ExtractJobConfig(print_header=False)
    ).result()
    assert bucket.blob("plain.csv").download_as_bytes() == b'"a,b",1\nc,2\n'
    bq.extract_table(
        table, f"gs://{bucket.name}/head.tsv", job_config=bigquery.ExtractJobConfig(field_delimiter="\t")
    ).result()
    assert bucket.blob("head.tsv").download_as_bytes() == b"s\ti\na,b\t1\nc\t2\n"
    bq.extract_table(
        table,
        f"gs://{bucket.name}/rows-*.json.gz",
        job_config=bigquery.ExtractJobConfig(destination_format="NEWLINE_DELIMITED_JSON", compression="GZIP"),
    ).result()
    data = gzip.decompress(bucket.blob("rows-000000000000.json.gz").download_as_bytes())
    assert [json.loads(line) for line in data.splitlines()] == [{"s": "a,b", "i": 1}, {"s": "c", "i": 2}]


def test_load_ndjson_and_csv_from_gcs(bq, dataset):
    bucket = new_bucket("ld")
    bucket.blob("in/a.json").upload_from_string('{"s": "x", "i": 1}\n{"s": "y", "i": 2}\n')
    bucket.blob("in/b.csv").upload_from_string("s,i\nz,3\n")
    dest = f"{PROJECT}.{dataset}.loaded"
    bq.load_table_from_uri(
        f"gs://{bucket.name}/in/a.json",
        dest,
        job_config=bigquery.LoadJobConfig(source_format="NEWLINE_DELIMITED_JSON", schema=ALL_TYPES[:2]),
    ).result()
    bq.load_table_from_uri(
        f"gs://{bucket.name}/in/b.csv",
        dest,
        job_config=bigquery.LoadJobConfig(source_format="CSV", skip_leading_rows=1, write_disposition="WRITE_APPEND"),
    ).result()
    assert sorted((r.s, r.i) for r in bq.list_rows(dest)) == [("x", 1), ("y", 2), ("z", 3)]


def test_error_shape_is_google_json(dataset):
    base = os.environ["BIGQUERY_EMULATOR_HOST"]
    resp = requests.get(f"{base}/bigquery/v2/projects/{PROJECT}/datasets/{dataset}/tables/missing", timeout=30)
    err = resp.json()["error"]
    assert resp.status_code == 404 and err["errors"][0]["reason"] == "notFound" and err["status"] == "NOT_FOUND"


def test_a_dataset_may_share_the_name_of_the_emulator_catalog(bq):
    """A dataset called ``meta`` (the emulator's own catalog database is ``meta``) keeps working across jobs."""
    bq.create_dataset("meta", exists_ok=True)
    for n in range(2):
        job = bq.query(f"SELECT {n} AS n", job_config=bigquery.QueryJobConfig(destination=f"{PROJECT}.meta.t{n}"))
        assert [row.n for row in job.result()] == [n]
    assert {t.table_id for t in bq.list_tables("meta")} >= {"t0", "t1"}


def test_streamed_rows_outside_a_partitioned_tables_window_are_refused(bq, dataset):
    """BigQuery streams into a column-partitioned table only within 1825 days past and 366 days future; without
    skipInvalidRows one refused row stops the request, with it the others go in."""
    table = bigquery.Table(f"{PROJECT}.{dataset}.parted", schema=[bigquery.SchemaField("StudyDate", "DATE")])
    table.time_partitioning = bigquery.TimePartitioning(type_="MONTH", field="StudyDate")
    table = bq.create_table(table)
    today = dt.date.today()
    rows = [
        {"StudyDate": "2010-03-01"},
        {"StudyDate": (today - dt.timedelta(days=1800)).isoformat()},
        {"StudyDate": (today + dt.timedelta(days=400)).isoformat()},
    ]
    errors = bq.insert_rows(table, rows)
    assert [(e["index"], e["errors"][0]["reason"]) for e in errors] == [(0, "invalid"), (1, "stopped"), (2, "invalid")]
    assert "outside the allowed bounds" in errors[0]["errors"][0]["message"]
    assert bq.get_table(table).num_rows == 0
    assert [e["index"] for e in bq.insert_rows(table, rows, skip_invalid_rows=True)] == [0, 2]
    assert bq.get_table(table).num_rows == 1
    flat = bq.create_table(bigquery.Table(f"{PROJECT}.{dataset}.flat", schema=table.schema))
    assert bq.insert_rows(flat, rows) == []


def test_a_job_runs_where_its_dataset_is(bq):
    """A dataset keeps its location; a job given another location does not find it (BigQuery's 404); a job given
    none runs in its dataset's location."""
    name = unique("eu").replace("-", "_")
    made = bigquery.Dataset(f"{PROJECT}.{name}")
    made.location = "europe-west2"
    bq.create_dataset(made)
    try:
        table = bq.create_table(bigquery.Table(f"{PROJECT}.{name}.t", schema=[bigquery.SchemaField("x", "INTEGER")]))
        assert bq.get_dataset(f"{PROJECT}.{name}").location == "europe-west2"
        assert table.location == "europe-west2"
        with pytest.raises(NotFound, match="was not found in location US"):
            bq.query(f"SELECT x FROM `{PROJECT}.{name}.t`", location="US").result()
        job = bq.query(f"SELECT x FROM `{PROJECT}.{name}.t`")
        job.result()
        assert job.location == "europe-west2"
    finally:
        bq.delete_dataset(name, delete_contents=True, not_found_ok=True)
