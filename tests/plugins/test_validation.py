"""Validation: each bad input is refused with an error naming the field, the value and the rule."""

from __future__ import annotations

import pytest

from dicom_pipelines.validation import (
    MIME_TYPES,
    ValidationError,
    literal_prefix,
    parse_bigquery_table_uri,
    parse_filter_file,
    parse_gcs_uri,
    parse_import_uri,
    parse_mime_type,
    resource_name,
    wildcard_regex,
)

BAD_IMPORT_URIS = [
    (None, "non-empty string"),
    ("", "non-empty string"),
    (42, "non-empty string"),
    ("s3://bucket/x.dcm", "start with gs://"),
    ("gs:/bucket/x.dcm", "start with gs://"),
    ("gs://bucket", "must name an object"),
    ("gs://bucket/", "must name an object"),
    ("gs://Bucket/x.dcm", "bucket name"),
    ("gs://b/x.dcm", "bucket name"),
    ("gs://buck*et/x.dcm", "not in the bucket"),
    ("gs://buck?t/x.dcm", "not in the bucket"),
    ("gs://bucket/a/**/b.dcm", "end of the path"),
    ("gs://bucket/**/", "end of the path"),
    ("gs://bucket/a/*/**", "only wildcard"),
    ("gs://bucket/a/**.dc?", "only wildcard"),
    ("gs://bucket/**a/**", "only once"),
    ("gs://bucket/a/***", "only once"),
    ("gs://bucket/folder/", "folder is not imported"),
    ("gs://bucket/a\nb.dcm", "line breaks"),
]


@pytest.mark.parametrize("uri,rule", BAD_IMPORT_URIS)
def test_bad_import_uris(uri, rule):
    with pytest.raises(ValidationError) as err:
        parse_import_uri(uri, "gcs_uri")
    assert err.value.field == "gcs_uri" and err.value.value == uri and rule in err.value.rule
    assert "gcs_uri=" in str(err.value)


@pytest.mark.parametrize(
    "uri",
    [
        "gs://bucket/x.dcm",
        "gs://bucket/day/**",
        "gs://bucket/day/**.dcm",
        "gs://bucket/day/*.dcm",
        "gs://bucket/d?y/img?.dcm",
        "gs://my.bucket_1/a b/c.dcm",
    ],
)
def test_good_import_uris(uri):
    assert str(parse_import_uri(uri)) == uri


@pytest.mark.parametrize(
    "pattern,name,matches",
    [
        ("day/*.dcm", "day/a.dcm", True),
        ("day/*.dcm", "day/sub/a.dcm", False),
        ("day/**", "day/sub/deep/a", True),
        ("day/**.dcm", "day/sub/a.dcm", True),
        ("day/**.dcm", "day/a.txt", False),
        ("day/img?.dcm", "day/img1.dcm", True),
        ("day/img?.dcm", "day/img12.dcm", False),
        ("day/?", "day//", False),
        ("a+b/[x].dcm", "a+b/[x].dcm", True),
    ],
)
def test_wildcard_regex(pattern, name, matches):
    assert bool(wildcard_regex(pattern).match(name)) is matches


def test_literal_prefix():
    assert literal_prefix("day/2026/**.dcm") == "day/2026/" and literal_prefix("a/b?c/*") == "a/b"


@pytest.mark.parametrize(
    "value",
    [
        "image/gif",
        "application/dicom; transfer-syntax=1.2.3",
        "image/png; q=1",
        "image/jpeg",
        "application/octet-stream",
        "text/plain; transfer-syntax=*",
        5,
        "application/dicom; charset=utf-8",
    ],
)
def test_bad_mime_types(value):
    with pytest.raises(ValidationError) as err:
        parse_mime_type(value, "mime_type")
    assert err.value.field == "mime_type" and err.value.value == value


def test_all_documented_mime_types_and_tolerant_spelling():
    assert len(MIME_TYPES) == 24
    for value in MIME_TYPES:
        assert parse_mime_type(value).canonical == value
    assert parse_mime_type("Image/JPEG;transfer-syntax=1.2.840.10008.1.2.4.50").extension == ".jpg"
    bare = parse_mime_type("application/dicom")  # not documented: sent as the conformance statement reads it
    assert (bare.transfer_syntax, bare.canonical) == (
        "1.2.840.10008.1.2.1",
        "application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
    )
    assert parse_mime_type("").media_type == "application/dicom"
    assert parse_mime_type("application/octet-stream; transfer-syntax=*").extension == ""


@pytest.mark.parametrize(
    "uri",
    [
        "bq://p.d",
        "bq://p.d.t.x",
        "bigquery://p.d.t",
        "bq://p.d-x.t",
        "bq://p.d.t t",
        "p.d.t",
        None,
        "bq://" + "p" * 2000 + ".d.t",
    ],
)
def test_bad_bigquery_table_uris(uri):
    with pytest.raises(ValidationError) as err:
        parse_bigquery_table_uri(uri, "table_uri")
    assert err.value.field == "table_uri"


def test_good_bigquery_table_uri():
    t = parse_bigquery_table_uri("bq://my-project.dicom_meta.meta_2026")
    assert (t.project, t.dataset, t.table) == ("my-project", "dicom_meta", "meta_2026")


@pytest.mark.parametrize(
    "text,line",
    [
        ("/studies/1.2\n/series/1.2.3\n", 2),
        ("studies/1.2", 1),
        ("/studies/", 1),
        ("/studies/1.2/series", 1),
        ("/studies/1.2/instances/3", 1),
        ("/studies/1.2/series/1.3/instances/1.4/frames/1", 1),
        ("\n\n/studies/abc", 3),
        ("/studies/1..2", 1),
        ("/studies/1.2/", 1),
    ],
)
def test_bad_filter_lines_name_the_line(text, line):
    with pytest.raises(ValidationError) as err:
        parse_filter_file(text, "filter")
    assert err.value.field == f"filter line {line}"


def test_filter_file_grammar():
    paths = parse_filter_file(
        "/studies/1.2\r\n\r\n/studies/1.2/series/1.3\n/studies/1.2\n/studies/1.2/series/1.3/instances/1.4\n"
    )
    assert [p.level for p in paths] == ["study", "series", "instance"]
    assert str(paths[2]) == "/studies/1.2/series/1.3/instances/1.4"
    assert paths[1].matches("1.2", "1.3", "9") and not paths[2].matches("1.2", "1.3", "9")


@pytest.mark.parametrize(
    "args,field",
    [
        (("p/x", "l", "d", "s"), "project_id"),
        (("p", "", "d", "s"), "location"),
        (("p", "l", "d d", "s"), "dataset_id"),
        (("p", "l", "d", "a/b"), "dicom_store_id"),
    ],
)
def test_bad_resource_ids(args, field):
    with pytest.raises(ValidationError) as err:
        resource_name(*args)
    assert err.value.field == field


def test_gcs_prefix_may_be_bucket_only():
    assert parse_gcs_uri("gs://bucket", allow_empty_object=True).name == ""
