"""DICOM parsing, rendering and flattening for the local Healthcare API (pydicom + numpy + Pillow)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from emulator.rules import ExportType

_BULK_THRESHOLD = 1024


class InstanceError(Exception):
    """One instance could not be imported or exported; ``code`` is a google.rpc.Code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class ParsedInstance:
    study: str
    series: str
    sop: str
    metadata: dict  # DICOM JSON without bulk data


def _bulk_handler(elem: Any) -> str:
    return "bulkdata"


_UID_TAGS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]


def parse_instance(data: bytes, with_metadata: bool = True) -> ParsedInstance:
    """Check that ``data`` is a DICOM Part-10 instance and read its identifying UIDs.

    Bulk import skips the metadata (``with_metadata=False``); it is built from the blob when first read.
    """
    if not data:
        raise InstanceError(3, "empty DICOM instance found")
    try:
        ds = pydicom.dcmread(
            io.BytesIO(data), stop_before_pixels=True, specific_tags=None if with_metadata else _UID_TAGS
        )
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        raise InstanceError(3, f"invalid DICOM instance: {type(exc).__name__}") from None
    uids = []
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        value = str(ds.get(keyword, "") or "").strip()
        if not value:
            raise InstanceError(3, f"invalid DICOM instance: missing {keyword}")
        uids.append(value)
    return ParsedInstance(uids[0], uids[1], uids[2], metadata_json(ds) if with_metadata else {})


def metadata_json(ds: Dataset) -> dict:
    """DICOM JSON of an instance without its bulk data (what QIDO and WADO metadata return)."""
    try:
        return ds.to_json_dict(bulk_data_threshold=_BULK_THRESHOLD, bulk_data_element_handler=_bulk_handler)
    except Exception as exc:
        raise InstanceError(3, f"invalid DICOM instance: cannot encode metadata ({type(exc).__name__})") from None


def metadata_from_blob(data: bytes) -> dict:
    return metadata_json(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True))


def _full(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _transcode(ds: Dataset, syntax: str) -> bytes:
    uid = UID(syntax)
    if "PixelData" in ds and ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress(generate_instance_uid=False)
    if uid == RLELossless:
        ds.compress(RLELossless, generate_instance_uid=False)
    elif uid in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        ds.file_meta.TransferSyntaxUID = uid
    else:
        raise InstanceError(12, f"transcoding to transfer syntax {syntax} is not supported by the local emulator")
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=uid == ImplicitVRLittleEndian, little_endian=True, enforce_file_format=True)
    return buf.getvalue()


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    arr = frame.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return ((arr - lo) * (255.0 / (hi - lo))).round().astype(np.uint8)


def _image_frames(ds: Dataset) -> list[np.ndarray]:
    if "PixelData" not in ds:
        raise InstanceError(3, "instance has no pixel data to render")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise InstanceError(3, f"cannot decode pixel data: {type(exc).__name__}") from None
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    single_ndim = 3 if samples > 1 else 2
    return [arr] if arr.ndim == single_ndim else list(arr)


def pixel_data_vr(data: bytes) -> str | None:
    """The VR of an instance's Pixel Data (OB or OW), or None when it has none."""
    ds = pydicom.dcmread(io.BytesIO(data), defer_size=256)
    return str(ds["PixelData"].VR).split(" ")[0] if "PixelData" in ds else None


def raw_frames(data: bytes, keep_syntax: bool) -> list[bytes]:
    """An instance's frames: uncompressed, or as stored with ``keep_syntax``."""
    return _raw_frames(_full(data), keep_syntax)


def element_bytes(data: bytes, tag: int) -> bytes | None:
    """The raw value of one top-level element of an instance, or None when it is absent."""
    ds = _full(data)
    if tag not in ds:
        return None
    value = ds[tag].value
    return value if isinstance(value, bytes) else str(value).encode()


def _raw_frames(ds: Dataset, keep_syntax: bool) -> list[bytes]:
    if "PixelData" not in ds:
        raise InstanceError(3, "instance has no pixel data to export")
    n = _frames(ds)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        if keep_syntax:
            return list(generate_frames(ds.PixelData, number_of_frames=n))
        ds.decompress(generate_instance_uid=False)
    data = bytes(ds.PixelData)
    size = len(data) // n
    return [data[i * size : (i + 1) * size] for i in range(n)]


def render_export(data: bytes, mime: ExportType) -> list[tuple[str, bytes, str]]:
    """Return ``(suffix, bytes, content_type)`` objects for one instance.

    ``suffix`` is appended to ``{prefix}/{study}/{series}/{instance}``: the extension, or
    ``/{frame}{ext}`` for each frame of a multi-frame instance in the per-frame types.
    """
    ext = mime.extension
    if mime.media_type == "application/dicom":
        if mime.transfer_syntax is None:
            return [(ext, data, "application/dicom")]
        return [(ext, _transcode(_full(data), mime.transfer_syntax), "application/dicom")]
    ds = _full(data)
    if mime.media_type == "application/octet-stream":
        frames = _raw_frames(ds, keep_syntax=mime.transfer_syntax is None)
        content_type = "application/octet-stream"
    else:
        fmt = "JPEG" if mime.media_type == "image/jpeg" else "PNG"
        frames = []
        for frame in _image_frames(ds):
            img = Image.fromarray(_to_uint8(frame))
            buf = io.BytesIO()
            img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
            frames.append(buf.getvalue())
        content_type = mime.media_type
    if len(frames) == 1 and _frames(ds) == 1:
        return [(ext, frames[0], content_type)]
    return [(f"/{i}{ext}", frame, content_type) for i, frame in enumerate(frames, start=1)]


# --- BigQuery flattened schema ---------------------------------------------------------------

_FLOAT_VRS = {"FL", "FD", "DS", "OF", "OD"}
_INT_VRS = {"IS", "SL", "SS", "UL", "US", "SV", "UV", "AT"}
_SKIP_VRS = {"OB", "OW", "OL", "OV", "UN", "OB or OW", "US or OW", "US or SS or OW"}


def _date(v: str) -> str | None:
    v = v.strip()
    if len(v) == 8 and v.isdigit():
        return f"{v[:4]}-{v[4:6]}-{v[6:]}"
    return None


def _time(v: str) -> str | None:
    v = v.strip()
    head, _, frac = v.partition(".")
    if not head.isdigit() or len(head) not in (2, 4, 6):
        return None
    head = (head + "0000")[:6]
    out = f"{head[:2]}:{head[2:4]}:{head[4:6]}"
    return out + (f".{frac[:6]}" if frac.isdigit() else "")


def _timestamp(v: str) -> str | None:
    v = v.strip()
    d = _date(v[:8]) if len(v) >= 8 else None
    if not d:
        return None
    t = _time(v[8:].split("+")[0].split("-")[0]) if len(v) > 8 else "00:00:00"
    return f"{d}T{t or '00:00:00'}Z"


def _scalar(vr: str, value: Any) -> tuple[str, Any]:
    if vr == "DA":
        return "DATE", _date(str(value))
    if vr == "TM":
        return "TIME", _time(str(value))
    if vr == "DT":
        return "TIMESTAMP", _timestamp(str(value))
    if vr in _FLOAT_VRS:
        try:
            return "FLOAT", float(value)
        except (TypeError, ValueError):
            return "FLOAT", None
    if vr in _INT_VRS:
        try:
            return "INTEGER", int(value)
        except (TypeError, ValueError):
            return "INTEGER", None
    if vr == "PN":
        pn = value if hasattr(value, "alphabetic") else pydicom.valuerep.PersonName(str(value))
        return "RECORD", {
            "Alphabetic": str(pn.alphabetic or "") or None,
            "Ideographic": str(pn.ideographic or "") or None,
            "Phonetic": str(pn.phonetic or "") or None,
        }
    return "STRING", str(value)


_PN_FIELDS = [{"name": n, "type": "STRING", "mode": "NULLABLE"} for n in ("Alphabetic", "Ideographic", "Phonetic")]


def flatten(ds: Dataset) -> tuple[dict, dict]:
    """One BigQuery row for a dataset and the schema fields it needs, keyed by column name."""
    row: dict[str, Any] = {}
    fields: dict[str, dict] = {}
    for elem in ds:
        keyword = elem.keyword
        if not keyword or elem.tag.group == 0x0002 or elem.tag.is_private or elem.VR in _SKIP_VRS:
            continue
        if elem.VR == "SQ":
            items, sub_fields = [], {}
            for item in elem.value:
                sub_row, item_fields = flatten(item)
                items.append(sub_row)
                for name, f in item_fields.items():
                    sub_fields.setdefault(name, f)
                    if f["mode"] == "REPEATED":
                        sub_fields[name] = f
            fields[keyword] = {
                "name": keyword,
                "type": "RECORD",
                "mode": "REPEATED",
                "fields": list(sub_fields.values()),
            }
            row[keyword] = items
            continue
        value = elem.value
        if value is None or value == "":
            continue
        multi = isinstance(value, pydicom.multival.MultiValue)
        values = list(value) if multi else [value]
        converted = [_scalar(elem.VR, v) for v in values]
        bq_type = converted[0][0]
        field = {"name": keyword, "type": bq_type, "mode": "REPEATED" if multi else "NULLABLE"}
        if bq_type == "RECORD":
            field["fields"] = _PN_FIELDS
        fields[keyword] = field
        row[keyword] = [v for _, v in converted] if multi else converted[0][1]
    return row, fields


def merge_schema(schemas: list[dict]) -> list[dict]:
    """Union of per-row fields; an element that is multi-valued anywhere becomes REPEATED everywhere."""
    merged: dict[str, dict] = {}
    for fields in schemas:
        for name, f in fields.items():
            known = merged.get(name)
            if known is None:
                merged[name] = dict(f)
                continue
            if f["mode"] == "REPEATED":
                known["mode"] = "REPEATED"
            if f.get("fields"):
                known["fields"] = merge_schema(
                    [{x["name"]: x for x in known.get("fields", [])}, {x["name"]: x for x in f["fields"]}]
                )
    return list(merged.values())


def conform_row(row: dict, schema: list[dict]) -> dict:
    """Wrap scalars as lists where the merged schema says REPEATED."""
    out = {}
    for f in schema:
        if f["name"] not in row:
            continue
        value = row[f["name"]]
        if f["mode"] == "REPEATED" and not isinstance(value, list):
            value = [value]
        if f["type"] == "RECORD" and f.get("fields") and isinstance(value, list) and f["name"] not in ("",):
            value = [conform_row(v, f["fields"]) if isinstance(v, dict) else v for v in value]
        out[f["name"]] = value
    return out


def read_for_bigquery(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
