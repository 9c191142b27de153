"""Conversions between BigQuery schemas / REST values and DuckDB types / Python values."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from typing import Any

_SCALAR = {
    "STRING": "VARCHAR",
    "INTEGER": "BIGINT",
    "INT64": "BIGINT",
    "FLOAT": "DOUBLE",
    "FLOAT64": "DOUBLE",
    "NUMERIC": "DECIMAL(38,9)",
    "BIGNUMERIC": "DECIMAL(38,9)",
    "BOOLEAN": "BOOLEAN",
    "BOOL": "BOOLEAN",
    "DATE": "DATE",
    "TIME": "TIME",
    "DATETIME": "TIMESTAMP",
    "TIMESTAMP": "TIMESTAMPTZ",
    "JSON": "JSON",
    "BYTES": "BLOB",
    "GEOGRAPHY": "VARCHAR",
}
_CANONICAL = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN", "STRUCT": "RECORD"}


def canonical_type(t: str) -> str:
    t = t.upper()
    return _CANONICAL.get(t, t)


def duck_type(field: dict) -> str:
    t = canonical_type(field.get("type", "STRING"))
    if t == "RECORD":
        inner = ", ".join(f'"{f["name"]}" {duck_type(f)}' for f in field.get("fields", []))
        base = f"STRUCT({inner})"
    elif t in _SCALAR:
        base = _SCALAR[t]
    else:
        raise ValueError(f"unsupported BigQuery type {field.get('type')!r} for field {field.get('name')!r}")
    return base + "[]" if field.get("mode", "NULLABLE").upper() == "REPEATED" else base


def normalize_schema(fields: list[dict]) -> list[dict]:
    out = []
    for f in fields:
        g = {
            "name": f["name"],
            "type": canonical_type(f.get("type", "STRING")),
            "mode": (f.get("mode") or "NULLABLE").upper(),
        }
        if g["type"] == "RECORD":
            g["fields"] = normalize_schema(f.get("fields", []))
        if f.get("description"):
            g["description"] = f["description"]
        out.append(g)
    return out


def bq_field_from_duck(name: str, dtype: Any) -> dict:
    """Map a DuckDBPyType back to a BigQuery schema field."""
    type_id = dtype.id
    if type_id == "list":
        inner = bq_field_from_duck(name, dtype.child)
        inner["mode"] = "REPEATED"
        return inner
    if type_id == "struct":
        return {
            "name": name,
            "type": "RECORD",
            "mode": "NULLABLE",
            "fields": [bq_field_from_duck(n, t) for n, t in dtype.children],
        }
    mapping = {
        "varchar": "STRING",
        "bigint": "INTEGER",
        "integer": "INTEGER",
        "smallint": "INTEGER",
        "tinyint": "INTEGER",
        "hugeint": "INTEGER",
        "ubigint": "INTEGER",
        "uinteger": "INTEGER",
        "usmallint": "INTEGER",
        "utinyint": "INTEGER",
        "double": "FLOAT",
        "float": "FLOAT",
        "decimal": "NUMERIC",
        "boolean": "BOOLEAN",
        "date": "DATE",
        "time": "TIME",
        "timestamp": "DATETIME",
        "timestamp with time zone": "TIMESTAMP",
        "json": "JSON",
        "blob": "BYTES",
        "uuid": "STRING",
        "interval": "STRING",
        "null": "STRING",
    }
    return {"name": name, "type": mapping.get(type_id, "STRING"), "mode": "NULLABLE"}


def _scalar_to_rest(value: Any, ftype: str, int64_ts: bool) -> Any:
    if value is None:
        return None
    if ftype == "BOOLEAN":
        return "true" if value else "false"
    if ftype == "TIMESTAMP" or isinstance(value, dt.datetime) and ftype != "DATETIME":
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            micros = int((value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) / dt.timedelta(microseconds=1))
            return str(micros) if int64_ts else f"{micros / 1e6:.6E}"
        return str(value)
    if ftype == "DATETIME" and isinstance(value, dt.datetime):
        return value.isoformat()
    if ftype == "BYTES" and isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if ftype == "JSON" and not isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, decimal.Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else str(value)
    return str(value)


def to_rest_value(value: Any, field: dict, int64_ts: bool = False) -> Any:
    """A Python value from DuckDB as BigQuery's REST ``{"v": ...}`` cell content."""
    if field.get("mode") == "REPEATED":
        if value is None:
            return []
        inner = dict(field, mode="NULLABLE")
        return [{"v": to_rest_value(v, inner, int64_ts)} for v in value]
    if field["type"] == "RECORD":
        if value is None:
            return None
        return {"f": [{"v": to_rest_value(value.get(f["name"]), f, int64_ts)} for f in field["fields"]]}
    return _scalar_to_rest(value, field["type"], int64_ts)


def to_rest_rows(rows: list[tuple], schema: list[dict], int64_ts: bool = False) -> list[dict]:
    return [{"f": [{"v": to_rest_value(v, f, int64_ts)} for v, f in zip(row, schema, strict=False)]} for row in rows]


def to_plain(value: Any, field: dict) -> Any:
    """A Python value from DuckDB as JSON-friendly data (for NDJSON extract)."""
    if value is None:
        return None
    if field.get("mode") == "REPEATED":
        return [to_plain(v, dict(field, mode="NULLABLE")) for v in value]
    if field["type"] == "RECORD":
        return {f["name"]: to_plain(value.get(f["name"]), f) for f in field["fields"]}
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        if field["type"] == "TIMESTAMP" and isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    return value


def to_csv_cell(value: Any, field: dict) -> str:
    if value is None:
        return ""
    if field["type"] == "BOOLEAN":
        return "true" if value else "false"
    plain = to_plain(value, field)
    return plain if isinstance(plain, str) else (json.dumps(plain) if isinstance(plain, (dict, list)) else str(plain))


def from_query_parameter(param: dict) -> Any:
    ptype = param.get("parameterType", {})
    pvalue = param.get("parameterValue", {})
    t = canonical_type(ptype.get("type", "STRING"))
    if t == "ARRAY":
        inner = ptype.get("arrayType", {"type": "STRING"})
        return [
            from_query_parameter({"parameterType": inner, "parameterValue": v}) for v in pvalue.get("arrayValues", [])
        ]
    if t == "RECORD":
        types = {f["name"]: f["type"] for f in ptype.get("structTypes", [])}
        values = pvalue.get("structValues", {})
        return {
            k: from_query_parameter({"parameterType": types[k], "parameterValue": values.get(k, {})}) for k in types
        }
    raw = pvalue.get("value")
    if raw is None:
        return None
    if t == "INTEGER":
        return int(raw)
    if t in ("FLOAT", "NUMERIC", "BIGNUMERIC"):
        return float(raw) if t == "FLOAT" else decimal.Decimal(raw)
    if t == "BOOLEAN":
        return str(raw).lower() == "true"
    if t == "DATE":
        return dt.date.fromisoformat(raw)
    if t == "DATETIME":
        return dt.datetime.fromisoformat(raw.replace(" ", "T"))
    if t == "TIMESTAMP":
        return dt.datetime.fromisoformat(raw.replace(" ", "T").replace("Z", "+00:00").replace(" UTC", "+00:00"))
    if t == "TIME":
        return dt.time.fromisoformat(raw)
    return raw
