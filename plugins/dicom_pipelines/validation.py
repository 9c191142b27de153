"""Pure validation functions shared by the operators, the DAG params and the local emulator.

Every error is a :class:`ValidationError` that names the field, the offending value and the rule
it broke, so a user can fix the input without reading code. Nothing here does I/O.
"""

from __future__ import annotations

import datetime as dt
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
    """Bad user input: carries the field name, the value and the rule that was broken.

    A long value is shortened in the message (a 100 KB prefix helps no one in a log), and a value that may
    identify a patient (``withhold=True``) is not repeated at all: the field says which entry it was.
    """

    def __init__(self, field: str, value: object, rule: str, *, withhold: bool = False):
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"{field}={shown_value(value, withhold=withhold)} is invalid: {rule}")


SHOWN_CHARACTERS = 80


def shown_value(value: object, *, withhold: bool = False) -> str:
    """How a bad value appears in a message: its repr, cut to a readable length, or withheld."""
    if withhold:
        return "(value withheld: it may identify a patient)"
    text = repr(value)
    if len(text) <= SHOWN_CHARACTERS:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, (str, list)) else ""
    return text[: SHOWN_CHARACTERS - 3] + "..." + size


# Bucket names: 3-63 chars (222 with dots), lowercase letters, digits, dashes, underscores, dots.
# The patterns are also the DAG params' JSON-schema patterns (dag_params.py): one rule, two places it is checked.
# Here they are matched with fullmatch, so a trailing newline (which `$` lets through) is refused.
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$"
UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
ID_PATTERN = r"^[\w\-.]{1,256}$"
GCS_URI_PATTERN = r"^gs://" + BUCKET_PATTERN[1:-1] + r"(/.*)?$"
MAX_OBJECT_NAME_BYTES = 1024
"""Cloud Storage's limit for an object name (UTF-8 bytes); a longer prefix or pattern can match nothing."""
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
    if len(name.encode()) > MAX_OBJECT_NAME_BYTES:
        raise ValidationError(
            field, uri, f"the object part must be at most {MAX_OBJECT_NAME_BYTES} bytes (Cloud Storage's limit)"
        )
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
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
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

    An empty value means "as stored" (no ``mimeType`` is sent: the original transfer syntax). Bare
    ``application/dicom`` is not one of the documented values; Google's conformance statement makes Explicit VR
    Little Endian the syntax when none is named, so it is sent in that explicit form.
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
        return MimeType(
            media, EXPLICIT_VR_LITTLE_ENDIAN, f"application/dicom; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
        )
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
        check_id(value, field)
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


# --- run parameters: the rules a DAG's JSON schema cannot put in words -------------------------------


def check_id(value: object, field: str) -> str:
    """A project, location, dataset or store id, as the Healthcare API's resource names allow."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise ValidationError(field, value, "must be 1-256 letters, digits, '_', '-' or '.'")
    return value


def check_bucket(value: object, field: str) -> str:
    """A bare bucket name (no ``gs://``)."""
    if isinstance(value, str) and value.startswith("gs://"):
        raise ValidationError(field, value, "must be the bucket's name alone, without gs:// or a path")
    if not isinstance(value, str) or not _BUCKET_RE.fullmatch(value):
        raise ValidationError(
            field, value, "must be a bucket name: 3-222 characters of lowercase letters, digits, '-', '_' or '.'"
        )
    return value


def check_gcs_prefix(value: object, field: str) -> GcsUri:
    """Where objects are written or read from as is: a ``gs://`` prefix with no wildcard."""
    parsed = parse_gcs_uri(value, field, allow_empty_object=True)
    if any(ch in parsed.name for ch in "*?["):
        raise ValidationError(field, value, "is a place to write to, not a pattern: no '*', '?' or '['")
    return parsed


def check_folder(value: object, field: str) -> str:
    """A folder inside a bucket, written without a leading or trailing slash; empty means the bucket's root."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise ValidationError(field, value, "must be a folder path such as 'incoming' or 'site-a/incoming'")
    if any(ch in value for ch in "*?[\r\n"):
        raise ValidationError(field, value, "must be a plain folder path: no wildcards or line breaks")
    if value.startswith("/") or value.endswith("/") or "//" in value:
        raise ValidationError(field, value, "must not start or end with '/' or contain '//'")
    if len(value.encode()) > MAX_OBJECT_NAME_BYTES - 100:
        raise ValidationError(field, value, f"must be at most {MAX_OBJECT_NAME_BYTES - 100} bytes")
    return value


def check_source_pattern(value: object, field: str) -> str:
    """The file pattern under a day's folder, with the import's wildcard rules (``*``, ``?``, a final ``**``)."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, value, "must be a pattern such as '**.dcm', '*.dcm' or '**'")
    if value.startswith("/"):
        raise ValidationError(field, value, "is relative to the day's folder: it must not start with '/'")
    try:
        parse_import_uri(f"gs://bucket/{value}", field)
    except ValidationError as exc:
        raise ValidationError(field, value, exc.rule) from None
    return value


def check_date(value: object, field: str) -> dt.date:
    """A real calendar date, written YYYY-MM-DD."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValidationError(field, value, "must be a real calendar date written YYYY-MM-DD, e.g. 2026-11-24")


def check_date_range(start: object, end: object, start_field: str, end_field: str) -> None:
    """Both ends optional; when both are given the range must not be backwards (it would match nothing)."""
    lo = check_date(start, start_field) if start else None
    hi = check_date(end, end_field) if end else None
    if lo and hi and lo > hi:
        raise ValidationError(
            end_field, end, f"is before {start_field}={start!r}: the range would match nothing (swap them?)"
        )


def _list(value: object, field: str, what: str, limit: int) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationError(field, value, f"must be a list of {what}, one per entry (one per line in the form)")
    if len(value) > limit:
        raise ValidationError(field, value, f"may list at most {limit} {what}")
    return value


MODALITIES: dict[str, str] = {
    "AR": "Autorefraction", "ASMT": "Content Assessment Results", "AU": "Audio", "BDUS": "Bone Densitometry (US)",
    "BI": "Biomagnetic imaging", "BMD": "Bone Densitometry (X-Ray)", "CR": "Computed Radiography",
    "CT": "Computed Tomography", "CTPROTOCOL": "CT Protocol", "DG": "Diaphanography", "DOC": "Document",
    "DX": "Digital Radiography", "ECG": "Electrocardiography", "EEG": "Electroencephalography",
    "EMG": "Electromyography", "EOG": "Electrooculography", "EPS": "Cardiac Electrophysiology",
    "ES": "Endoscopy", "FID": "Fiducials", "GM": "General Microscopy", "HC": "Hard Copy",
    "HD": "Hemodynamic Waveform", "IO": "Intra-Oral Radiography", "IOL": "Intraocular Lens Data",
    "IVOCT": "Intravascular OCT", "IVUS": "Intravascular Ultrasound", "KER": "Keratometry",
    "KO": "Key Object Selection", "LEN": "Lensometry", "LS": "Laser surface scan", "M3D": "Model for 3D Manufacturing",
    "MG": "Mammography", "MR": "Magnetic Resonance", "NM": "Nuclear Medicine", "OAM": "Ophthalmic Axial Measurements",
    "OCT": "Optical Coherence Tomography", "OP": "Ophthalmic Photography", "OPM": "Ophthalmic Mapping",
    "OPT": "Ophthalmic Tomography", "OPTBSV": "Ophthalmic Tomography B-scan Volume Analysis",
    "OPTENF": "Ophthalmic Tomography En Face", "OPV": "Ophthalmic Visual Field", "OSS": "Optical Surface Scan",
    "OT": "Other", "PA": "Photoacoustic", "PLAN": "Plan", "POS": "Position Sensor", "PR": "Presentation State",
    "PT": "Positron emission tomography (PET)", "PX": "Panoramic X-Ray", "REG": "Registration",
    "RESP": "Respiratory Waveform", "RF": "Radio Fluoroscopy", "RG": "Radiographic imaging",
    "RTDOSE": "Radiotherapy Dose", "RTIMAGE": "Radiotherapy Image", "RTINTENT": "Radiotherapy Intent",
    "RTPLAN": "Radiotherapy Plan", "RTRAD": "RT Radiation", "RTRECORD": "RT Treatment Record",
    "RTSEGANN": "Radiotherapy Segment Annotation", "RTSTRUCT": "Radiotherapy Structure Set",
    "RWV": "Real World Value Map", "SEG": "Segmentation", "SM": "Slide Microscopy", "SMR": "Stereometric Relationship",
    "SR": "SR Document", "SRF": "Subjective Refraction", "STAIN": "Automated Slide Stainer",
    "TEXTUREMAP": "Texture Map", "TG": "Thermography", "US": "Ultrasound", "VA": "Visual Acuity",
    "XA": "X-Ray Angiography", "XAPROTOCOL": "XA Protocol", "XC": "External-camera Photography",
    "CD": "Color flow Doppler (retired)", "DD": "Duplex Doppler (retired)", "DF": "Digital fluoroscopy (retired)",
    "DM": "Digital microscopy (retired)", "DS": "Digital Subtraction Angiography (retired)",
    "EC": "Echocardiography (retired)", "FA": "Fluorescein angiography (retired)",
    "FS": "Fundoscopy (retired)", "LP": "Laparoscopy (retired)", "MA": "Magnetic resonance angiography (retired)",
    "MS": "Magnetic resonance spectroscopy (retired)", "OPR": "Ophthalmic Refraction (retired)",
    "ST": "Single-photon emission computed tomography (retired)", "VF": "Videofluorography (retired)",
    "CF": "Cinefluorography (retired)", "CS": "Cystoscopy (retired)",
}  # fmt: skip
"""DICOM PS3.3 C.7.3.1.1.1 Modality defined terms, current then retired: the codes a Modality column holds."""


def check_modalities(value: object, field: str) -> list[str]:
    """Modality codes, written as DICOM writes them (upper case)."""
    codes = _list(value, field, "modality codes", len(MODALITIES))
    for i, code in enumerate(codes):
        where = f"{field}[{i}]"
        if isinstance(code, str) and code.strip().upper() in MODALITIES and code not in MODALITIES:
            raise ValidationError(
                where, code, f"modality codes are upper case, as DICOM writes them: {code.strip().upper()!r}"
            )
        if code not in MODALITIES:
            raise ValidationError(where, code, "must be a DICOM modality code such as CT, MR, US or PT")
    return codes


MAX_LISTED = 1000


def check_patient_ids(value: object, field: str) -> list[str]:
    """PatientIDs (DICOM LO). Their values are never repeated in a message: they identify patients."""
    ids = _list(value, field, "PatientIDs", MAX_LISTED)
    for i, pid in enumerate(ids):
        if not isinstance(pid, str) or not 1 <= len(pid) <= 64 or any(ch in pid for ch in ",\\\r\n"):
            raise ValidationError(
                f"{field}[{i}]",
                pid,
                "each PatientID must be 1-64 characters without commas, backslashes or line breaks",
                withhold=True,
            )
    return ids


def check_uid(value: object, field: str) -> str:
    """A DICOM UID: up to 64 characters of digits and dots, no empty or zero-led component."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 64
        or not _UID_RE.fullmatch(value)
        or any(len(c) > 1 and c.startswith("0") for c in value.split("."))
    ):
        raise ValidationError(
            field,
            value,
            "must be a DICOM UID: at most 64 digits and dots, like 1.2.840.113619.2.55.3 (no leading zeros)",
        )
    return value


def check_uids(value: object, field: str) -> list[str]:
    uids = _list(value, field, "UIDs", MAX_LISTED)
    for i, uid in enumerate(uids):
        check_uid(uid, f"{field}[{i}]")
    return uids


def check_bigquery_dataset(value: object, field: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_]{1,1024}", value):
        raise ValidationError(field, value, "must be a BigQuery dataset id: 1-1024 letters, digits or '_'")
    return value


def check_bigquery_location(value: object, field: str) -> str:
    """A BigQuery location: a region (``europe-west2``) or a multi-region (``US``, ``EU``)."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{1,63}", value):
        raise ValidationError(
            field, value, "must be a BigQuery location: a region such as europe-west2, or US or EU (or empty)"
        )
    return value


def check_count(value: object, field: str) -> int | None:
    """A whole number of instances, zero or more; empty means not set."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(field, value, "must be a whole number, 0 or more (or empty)")
    return value


def check_positive(value: object, field: str) -> int:
    """A whole number, 1 or more."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(field, value, "must be a whole number, 1 or more")
    return value


def check_hours(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 720:
        raise ValidationError(field, value, "must be a number of hours from 0 to 720")
    return float(value)


def check_ratio(value: object, field: str) -> float | None:
    """A fraction between 0 and 1; empty means not set."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValidationError(field, value, "must be a fraction between 0 and 1, e.g. 0.05 for 5% (or empty)")
    return float(value)


def check_choice(value: object, field: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValidationError(field, value, "must be one of " + ", ".join(repr(c) for c in choices))
    return value


# --- de-identification (DeidentifyConfig, v1 discovery document) -------------------------------

DEID_PROFILES = (
    "MINIMAL_KEEP_LIST_PROFILE",
    "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE",
    "KEEP_ALL_PROFILE",
    "DEIDENTIFY_TAG_CONTENTS",
)
TEXT_REDACTION_MODES = ("REDACT_NO_TEXT", "REDACT_SENSITIVE_TEXT", "REDACT_ALL_TEXT")
_HEX_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")


def check_tags(value: object, field: str) -> list[str]:
    """DICOM tags as the API takes them: keywords (``PatientID``) or 8 hexadecimal digits (``00100020``)."""
    from pydicom.datadict import tag_for_keyword

    tags = _list(value, field, "DICOM tag", MAX_LISTED)
    for tag in tags:
        if not isinstance(tag, str) or not (_HEX_TAG_RE.match(tag) or tag_for_keyword(tag) is not None):
            raise ValidationError(
                field, tag, "must be a DICOM keyword (e.g. PatientID) or a tag of 8 hexadecimal digits (00100020)"
            )
    return [str(t) for t in tags]


def deidentify_config(
    profile: object,
    keep_tags: object = None,
    remove_tags: object = None,
    skip_id_redaction: object = False,
    text_redaction_mode: object = "REDACT_NO_TEXT",
) -> dict:
    """The ``DeidentifyConfig`` of a de-identification, its rules checked in words.

    ``filterProfile``, ``keepList`` and ``removeList`` are alternatives: a keep or remove list replaces the
    profile, and at most one of the two lists may be given.
    """
    keep = check_tags(keep_tags, "keep_tags") if keep_tags else []
    remove = check_tags(remove_tags, "remove_tags") if remove_tags else []
    if keep and remove:
        raise ValidationError("remove_tags", remove, "cannot be combined with keep_tags: give one list or the other")
    dicom: dict = {"skipIdRedaction": parse_bool(skip_id_redaction, "skip_id_redaction")}
    if keep:
        dicom["keepList"] = {"tags": keep}
    elif remove:
        dicom["removeList"] = {"tags": remove}
    else:
        dicom["filterProfile"] = check_choice(profile, "filter_profile", DEID_PROFILES)
    mode = check_choice(text_redaction_mode or "REDACT_NO_TEXT", "text_redaction_mode", TEXT_REDACTION_MODES)
    return {"dicom": dicom, "image": {"textRedactionMode": mode}}
