"""Pure validation functions shared by the operators, the DAG params and the local emulator.

Every error is a :class:`ValidationError` that names the field, the offending value and the rule
it broke, so a user can fix the input without reading code. Nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "BUCKET_PATTERN",
    "GCS_URI_PATTERN",
    "ID_PATTERN",
    "UID_PATTERN",
    "ValidationError",
    "GcsUri",
    "MimeType",
    "BigQueryTable",
    "FilterPath",
    "MIME_TYPES",
    "parse_gcs_uri",
    "parse_import_uri",
    "wildcard_regex",
    "literal_prefix",
    "parse_mime_type",
    "parse_bigquery_table_uri",
    "parse_filter_file",
    "parse_filter_line",
    "parse_bool",
    "resource_name",
]


class ValidationError(ValueError):
    """Bad user input: carries the field name, the value and the rule that was broken."""

    def __init__(self, field: str, value: object, rule: str):
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"{field}={value!r} is invalid: {rule}")


# Bucket names: 3-63 chars (222 with dots), lowercase letters, digits, dashes, underscores, dots.
# The patterns are also the DAG params' JSON-schema patterns (dag_params.py): one rule, two places it is checked.
# Here they are matched with fullmatch, so a trailing newline (which `$` lets through) is refused.
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$"
UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
ID_PATTERN = r"^[\w\-.]{1,256}$"
GCS_URI_PATTERN = r"^gs://" + BUCKET_PATTERN[1:-1] + r"(/.*)?$"
_BUCKET_RE = re.compile(BUCKET_PATTERN)
_UID_RE = re.compile(UID_PATTERN)
_BQ_TABLE_RE = re.compile(
    r"^bq://(?P<project>(?:[a-z0-9.-]+:)?[a-zA-Z0-9_-]{1,63})\.(?P<dataset>[A-Za-z0-9_]{1,1024})\.(?P<table>[^.\s/]{1,1024})$"
)


@dataclass(frozen=True)
class GcsUri:
    bucket: str
    name: str

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.name}"


def parse_gcs_uri(uri: object, field: str = "uri", *, allow_empty_object: bool = False) -> GcsUri:
    """Split ``gs://bucket/object`` into its parts; no wildcards are interpreted here."""
    if not isinstance(uri, str) or not uri:
        raise ValidationError(field, uri, "must be a non-empty string of the form gs://BUCKET/OBJECT")
    if not uri.startswith("gs://"):
        raise ValidationError(field, uri, "must start with gs://")
    rest = uri[len("gs://") :]
    bucket, _, name = rest.partition("/")
    if any(ch in bucket for ch in "*?[]"):
        raise ValidationError(field, uri, "wildcards are allowed only in the object part, not in the bucket name")
    if not _BUCKET_RE.fullmatch(bucket):
        raise ValidationError(
            field, uri, "bucket name must be 3-222 characters of lowercase letters, digits, '-', '_' or '.'"
        )
    if not name and not allow_empty_object:
        raise ValidationError(field, uri, "must name an object (or a pattern) after the bucket: gs://BUCKET/OBJECT")
    if "\n" in name or "\r" in name:
        raise ValidationError(field, uri, "must not contain line breaks")
    return GcsUri(bucket, name)


def parse_import_uri(uri: object, field: str = "gcs_uri") -> GcsUri:
    """Validate a ``gcsSource.uri`` for ``dicomStores.import`` against the documented wildcard rules.

    ``*`` matches within one path segment, ``?`` matches one character, and ``**`` matches across
    ``/`` but must be the last wildcard, used alone, optionally followed by a literal suffix such as
    ``.dcm``.
    """
    parsed = parse_gcs_uri(uri, field)
    name = parsed.name
    if "**" in name:
        if name.count("**") > 1 or "***" in name:
            raise ValidationError(field, uri, "'**' may appear only once")
        head, _, tail = name.partition("**")
        if "*" in head or "?" in head or "*" in tail or "?" in tail:
            raise ValidationError(field, uri, "'**' must be the only wildcard in the path")
        if "/" in tail:
            raise ValidationError(
                field, uri, "'**' must be at the end of the path (only a literal suffix such as '.dcm' may follow)"
            )
    if name.endswith("/"):
        raise ValidationError(
            field, uri, "a folder is not imported by itself; end it with '*' (one level) or '**' (recursive)"
        )
    return parsed


def wildcard_regex(pattern: str, *, question_crosses_slash: bool = False) -> re.Pattern[str]:
    """Compile an object-name pattern (already validated) into an anchored regex."""
    out = []
    i = 0
    any_one = "." if question_crosses_slash else "[^/]"
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append(any_one)
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("^" + "".join(out) + "$", re.DOTALL)


def literal_prefix(pattern: str) -> str:
    """The longest prefix with no wildcard: what can be sent to a GCS list call as ``prefix``."""
    cut = len(pattern)
    for ch in "*?":
        pos = pattern.find(ch)
        if pos != -1:
            cut = min(cut, pos)
    return pattern[:cut]


# --- MIME types / transfer syntaxes (discovery document, verbatim list) -----------------------

_DICOM_SYNTAXES = [
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
]
MIME_TYPES: tuple[str, ...] = tuple(
    [f"application/dicom; transfer-syntax={ts}" for ts in _DICOM_SYNTAXES]
    + [
        "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1",
        "application/octet-stream; transfer-syntax=*",
        "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50",
        "image/png",
    ]
)
_EXTENSIONS = {"application/dicom": ".dcm", "image/jpeg": ".jpg", "image/png": ".png", "application/octet-stream": ""}


@dataclass(frozen=True)
class MimeType:
    """A documented export MIME type. ``transfer_syntax`` is None when the original is kept."""

    media_type: str
    transfer_syntax: str | None
    canonical: str

    @property
    def extension(self) -> str:
        return _EXTENSIONS[self.media_type]

    @property
    def per_frame(self) -> bool:
        """Image and raw types are written one object per frame for multi-frame instances."""
        return self.media_type != "application/dicom"


def parse_mime_type(value: object, field: str = "mime_type") -> MimeType:
    """Accept one of the 24 documented values (case and spacing tolerant), or bare ``application/dicom``.

    An empty value means "as stored" (``application/dicom``, original transfer syntax).
    """
    if value is None or value == "":
        return MimeType("application/dicom", None, "")
    if not isinstance(value, str):
        raise ValidationError(field, value, "must be a string such as 'application/dicom; transfer-syntax=*'")
    parts = [p.strip() for p in value.split(";")]
    media = parts[0].lower()
    params = {}
    for p in parts[1:]:
        key, eq, val = p.partition("=")
        if not eq or key.strip().lower() != "transfer-syntax":
            raise ValidationError(field, value, "the only parameter allowed is 'transfer-syntax=<UID or *>'")
        params["transfer-syntax"] = val.strip()
    syntax = params.get("transfer-syntax")
    if media == "application/dicom" and syntax is None:
        return MimeType(media, None, "application/dicom")
    canonical = media if syntax is None else f"{media}; transfer-syntax={syntax}"
    if canonical not in MIME_TYPES:
        raise ValidationError(
            field,
            value,
            "must be one of the 24 documented export MIME types, e.g. 'application/dicom; transfer-syntax=*', "
            "'image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50', 'image/png'",
        )
    return MimeType(media, None if syntax == "*" else syntax, canonical)


# --- BigQuery table URIs -----------------------------------------------------------------------


@dataclass(frozen=True)
class BigQueryTable:
    project: str
    dataset: str
    table: str

    def __str__(self) -> str:
        return f"bq://{self.project}.{self.dataset}.{self.table}"


def parse_bigquery_table_uri(uri: object, field: str = "table_uri") -> BigQueryTable:
    """Validate ``bq://PROJECT.DATASET.TABLE`` (at most 2,000 characters)."""
    if not isinstance(uri, str) or not uri:
        raise ValidationError(field, uri, "must be a string of the form bq://PROJECT.DATASET.TABLE")
    if len(uri) > 2000:
        raise ValidationError(field, uri[:40] + "...", "must be at most 2000 characters")
    m = _BQ_TABLE_RE.fullmatch(uri)
    if not m:
        raise ValidationError(
            field,
            uri,
            "must be bq://PROJECT.DATASET.TABLE (dataset: letters, digits and '_'; no extra dots or spaces)",
        )
    return BigQueryTable(m["project"], m["dataset"], m["table"])


# --- filter files -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FilterPath:
    study: str
    series: str | None = None
    instance: str | None = None

    def __str__(self) -> str:
        out = f"/studies/{self.study}"
        if self.series:
            out += f"/series/{self.series}"
        if self.instance:
            out += f"/instances/{self.instance}"
        return out

    @property
    def level(self) -> str:
        return "instance" if self.instance else "series" if self.series else "study"

    def matches(self, study: str, series: str, instance: str) -> bool:
        return (
            self.study == study
            and (self.series is None or self.series == series)
            and (self.instance is None or self.instance == instance)
        )


def parse_filter_line(line: str, line_number: int, field: str = "filter file") -> FilterPath:
    """Parse one ``/studies/UID[/series/UID[/instances/UID]]`` line."""
    where = f"{field} line {line_number}"
    parts = line.split("/")
    if len(parts) < 3 or parts[0] != "" or parts[1] != "studies":
        raise ValidationError(where, line, "must start with /studies/{StudyInstanceUID}")
    names = ("studies", "series", "instances")
    uids = []
    body = parts[1:]
    if len(body) % 2 or len(body) > 6:
        raise ValidationError(where, line, "must be /studies/UID[/series/UID[/instances/UID]] with nothing after")
    for i in range(0, len(body), 2):
        if body[i] != names[i // 2]:
            raise ValidationError(where, line, f"segment {i // 2 + 1} must be '{names[i // 2]}'")
        uid = body[i + 1]
        if not uid or len(uid) > 64 or not _UID_RE.fullmatch(uid):
            raise ValidationError(where, line, "each UID must be 1-64 digits and dots, like 1.2.840.113619.2.1")
        uids.append(uid)
    return FilterPath(*uids)


def parse_filter_file(text: str, field: str = "filter file") -> list[FilterPath]:
    """Parse a whole filter file: ``\\n`` or ``\\r\\n`` separated, blank lines ignored, duplicates dropped."""
    seen: dict[FilterPath, None] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r").strip()
        if not line:
            continue
        seen.setdefault(parse_filter_line(line, number, field), None)
    return list(seen)


_ID_RE = re.compile(ID_PATTERN)


def resource_name(project: str, location: str, dataset: str, store: str | None = None) -> str:
    """Build a dataset or DICOM store resource name, checking each id against the API's pattern."""
    for field, value in (("project_id", project), ("location", location), ("dataset_id", dataset)) + (
        (("dicom_store_id", store),) if store is not None else ()
    ):
        if not isinstance(value, str) or not _ID_RE.fullmatch(value):
            raise ValidationError(field, value, "must be 1-256 letters, digits, '_', '-' or '.'")
    name = f"projects/{project}/locations/{location}/datasets/{dataset}"
    return name + (f"/dicomStores/{store}" if store is not None else "")


_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")


def parse_bool(value: object, field: str) -> bool:
    """A flag given directly or rendered from a template: ``True``/``False`` or the words for them.

    Python's truthiness would read the rendered string ``"False"`` as true, so words are matched exactly.
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValidationError(field, value, "must be true or false")
