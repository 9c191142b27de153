"""Request rules of the local stand-ins, written from Google's documentation, not from the pipelines' code.

The stand-ins are oracles for the pipelines under test: if they shared the pipelines' validation, a wrong
rule there would be accepted here too and no test could catch it. So this module imports nothing from
``plugins/``, and each rule cites where Google states it:

- Cloud Storage URIs: ``gs://BUCKET/OBJECT`` ("Cloud Storage URIs", Request URIs and bucket naming).
- ``dicomStores.import`` ``gcsSource.uri`` wildcards (REST reference, GcsSource): ``*`` matches 0 or more
  non-separator characters, ``**`` matches 0 or more characters including separators and must be the
  last wildcard, used alone, optionally followed by a file extension; ``?`` matches 1 character.
- ``gcsDestination.mimeType``: the MIME types and transfer syntaxes of the DICOM conformance statement.
- ``bigqueryDestination.tableUri``: ``bq://PROJECT_ID.BIGQUERY_DATASET_ID.BIGQUERY_TABLE_ID``.
- ``filterConfig.resourcePathsGcsUri``: one ``/studies/UID[/series/UID[/instances/UID]]`` per line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class RequestError(ValueError):
    """A request field the API refuses with INVALID_ARGUMENT; ``field`` is the request's field path."""

    def __init__(self, field: str, value: object, problem: str):
        self.field = field
        self.value = value
        super().__init__(f"Invalid value for {field} ({str(value)[:200]!r}): {problem}")


@dataclass(frozen=True)
class StorageObject:
    bucket: str
    name: str

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.name}"


_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]*[a-z0-9]")


def storage_uri(uri: object, field: str, *, object_required: bool = True) -> StorageObject:
    if not isinstance(uri, str) or not uri.startswith("gs://"):
        raise RequestError(field, uri, "a Cloud Storage URI of the form gs://BUCKET/OBJECT is required")
    bucket, _, name = uri[5:].partition("/")
    if not (3 <= len(bucket) <= 222 and _BUCKET.fullmatch(bucket)) or ("." not in bucket and len(bucket) > 63):
        raise RequestError(field, uri, f"{bucket!r} is not a valid bucket name")
    if object_required and not name:
        raise RequestError(field, uri, "the URI names no object")
    if "\n" in name or "\r" in name or len(name.encode()) > 1024:
        raise RequestError(field, uri, "object names are at most 1024 bytes, without carriage returns or line feeds")
    return StorageObject(bucket, name)


def import_source(uri: object, field: str) -> StorageObject:
    """``gcsSource.uri`` with the documented wildcards; a bare folder (trailing '/') matches nothing to import."""
    source = storage_uri(uri, field)
    name = source.name
    if "**" in name:
        before, _, after = name.partition("**")
        if "*" in before + after or "?" in before + after:
            raise RequestError(field, uri, "'**' must be the only wildcard in the path")
        if "/" in after:
            raise RequestError(field, uri, "'**' must be at the end of the path, optionally followed by an extension")
    if name.endswith("/"):
        raise RequestError(field, uri, "the URI names a folder, not files; end it with '*' or '**'")
    return source


def object_pattern(name: str, *, question_crosses_slash: bool = False) -> re.Pattern[str]:
    """The documented wildcards as a regular expression over whole object names."""
    one = "." if question_crosses_slash else "[^/]"
    parts = re.split(r"(\*\*|\*|\?)", name)
    table = {"**": ".*", "*": "[^/]*", "?": one}
    return re.compile("".join(table.get(p, re.escape(p)) for p in parts), re.DOTALL)


def listing_prefix(name: str) -> str:
    """The part before the first wildcard, to list candidates with."""
    return re.split(r"[*?]", name, maxsplit=1)[0]


_SYNTAXES = (
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.110",
    "1.2.840.10008.1.2.4.111",
    "1.2.840.10008.1.2.4.112",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.8.1",
    "*",
)
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_EXPORT_TYPES = {
    **{("application/dicom", s): ".dcm" for s in _SYNTAXES},
    ("application/dicom", None): ".dcm",
    ("application/octet-stream", "1.2.840.10008.1.2.1"): "",
    ("application/octet-stream", "*"): "",
    ("image/jpeg", "1.2.840.10008.1.2.4.50"): ".jpg",
    ("image/png", None): ".png",
}


@dataclass(frozen=True)
class ExportType:
    """What an export writes: ``transfer_syntax`` None keeps the stored one."""

    media_type: str
    transfer_syntax: str | None
    extension: str


def export_type(value: object, field: str) -> ExportType:
    if value in (None, ""):
        return ExportType("application/dicom", None, ".dcm")
    if not isinstance(value, str):
        raise RequestError(field, value, "a MIME type string is required")
    media, *params = [p.strip() for p in value.split(";")]
    syntax = None
    for param in params:
        key, _, val = param.partition("=")
        if key.strip().lower() != "transfer-syntax":
            raise RequestError(field, value, f"unsupported MIME type parameter {key.strip()!r}")
        syntax = val.strip()
    key = (media.lower(), syntax)
    if key not in _EXPORT_TYPES:
        raise RequestError(field, value, "unsupported MIME type or transfer syntax for export")
    if key == ("application/dicom", None):
        # Bare application/dicom is not among the documented export types; the conformance statement makes
        # Explicit VR Little Endian the transfer syntax when none is asked for, as the local DICOMweb does.
        return ExportType("application/dicom", EXPLICIT_VR_LITTLE_ENDIAN, ".dcm")
    return ExportType(key[0], None if syntax in (None, "*") else syntax, _EXPORT_TYPES[key])


@dataclass(frozen=True)
class TableRef:
    project: str
    dataset: str
    table: str

    def __str__(self) -> str:
        return f"bq://{self.project}.{self.dataset}.{self.table}"


_TABLE_URI = re.compile(r"bq://((?:[a-z0-9.-]+:)?[a-zA-Z0-9_-]{1,63})\.([A-Za-z0-9_]{1,1024})\.([^.\s/]{1,1024})")


def table_uri(uri: object, field: str) -> TableRef:
    match = _TABLE_URI.fullmatch(uri) if isinstance(uri, str) and len(uri) <= 2000 else None
    if not match:
        raise RequestError(field, uri, "the format is bq://PROJECT_ID.BIGQUERY_DATASET_ID.BIGQUERY_TABLE_ID")
    return TableRef(*match.groups())


@dataclass(frozen=True)
class ResourcePath:
    study: str
    series: str | None = None
    instance: str | None = None

    def matches(self, study: str, series: str, instance: str) -> bool:
        return self.study == study and self.series in (None, series) and self.instance in (None, instance)

    def __str__(self) -> str:
        series = f"/series/{self.series}" if self.series else ""
        return f"/studies/{self.study}{series}" + (f"/instances/{self.instance}" if self.instance else "")


_PATH = re.compile(r"/studies/([0-9.]{1,64})(?:/series/([0-9.]{1,64})(?:/instances/([0-9.]{1,64}))?)?")


def resource_paths(text: str) -> list[ResourcePath]:
    """A filter file; a line that is no resource path fails the whole export, naming the line."""
    paths = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        match = _PATH.fullmatch(line)
        if not match:
            raise RequestError(
                f"filter file line {number}", line, "not a /studies/UID[/series/UID[/instances/UID]] path"
            )
        paths.append(ResourcePath(*match.groups()))
    return paths
