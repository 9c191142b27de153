"""The local stand-ins' request rules: from Google's documentation, sharing no code with the pipelines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from emulator.rules import RequestError, export_type, import_source, object_pattern, resource_paths

EMULATOR = Path(__file__).resolve().parents[2] / "emulator"


def test_the_local_apis_import_nothing_from_the_pipelines():
    for path in EMULATOR.rglob("*.py"):
        tree = ast.parse(path.read_text())
        modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in modules if m.split(".")[0] == "dicom_pipelines"], path


@pytest.mark.parametrize(
    "pattern,matches,misses",
    [
        ("day/img?.dcm", ["day/img0.dcm"], ["day/img10.dcm", "day/img/.dcm"]),
        ("day/*.dcm", ["day/a.dcm"], ["day/sub/a.dcm"]),
        ("day/**.dcm", ["day/a.dcm", "day/sub/a.dcm"], ["day/a.txt"]),
    ],
)
def test_documented_wildcards(pattern, matches, misses):
    rx = object_pattern(pattern)
    assert all(rx.fullmatch(m) for m in matches) and not any(rx.fullmatch(m) for m in misses)


@pytest.mark.parametrize("uri", ["gs://b/a/**/x.dcm", "gs://bucket/**/*.dcm", "gs://buck*t/x.dcm", "gs://bucket/d/"])
def test_import_sources_refused_as_documented(uri):
    with pytest.raises(RequestError):
        import_source(uri, "gcsSource.uri")


def test_export_types_and_filter_files():
    assert export_type("image/png", "m").extension == ".png"
    assert export_type("application/dicom; transfer-syntax=*", "m").transfer_syntax is None
    with pytest.raises(RequestError):
        export_type("image/gif", "m")
    paths = resource_paths("/studies/1.2\n\n/studies/1.2/series/1.3/instances/1.4\r\n")
    assert [str(p) for p in paths] == ["/studies/1.2", "/studies/1.2/series/1.3/instances/1.4"]
    with pytest.raises(RequestError, match="line 2"):
        resource_paths("/studies/1.2\n/series/1.3\n")
