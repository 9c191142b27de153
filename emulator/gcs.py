"""A minimal client for the GCS JSON API, used by the local services to read and write objects.

The local services go through the GCS emulator's HTTP API (never its files), exactly as the real
services go through Cloud Storage. Wildcards are matched here, not with ``matchGlob``, because the
chosen emulator (fake-gcs-server) ignores ``matchGlob``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter


class GcsError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class GcsClient:
    def __init__(self, endpoint: str | None = None, pool_size: int = 16):
        self.endpoint = (endpoint or os.environ.get("STORAGE_EMULATOR_HOST") or "").rstrip("/")
        if not self.endpoint:
            raise RuntimeError("no GCS endpoint: pass --gcs-endpoint or set STORAGE_EMULATOR_HOST")
        self.session = requests.Session()
        self.session.trust_env = False  # a local endpoint: no proxy or .netrc lookups, which cost CPU on every call
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)

    def _check(self, resp: requests.Response, what: str) -> requests.Response:
        if resp.status_code >= 400:
            raise GcsError(resp.status_code, f"{what}: HTTP {resp.status_code} {resp.text[:200]}")
        return resp

    def list(self, bucket: str, prefix: str = "") -> Iterator[dict]:
        token = None
        while True:
            params = {"prefix": prefix, "maxResults": 1000, "projection": "noAcl"}
            if token:
                params["pageToken"] = token
            resp = self._check(
                self.session.get(f"{self.endpoint}/storage/v1/b/{quote(bucket, safe='')}/o", params=params, timeout=60),
                f"list gs://{bucket}/{prefix}",
            )
            data = resp.json()
            yield from data.get("items", [])
            token = data.get("nextPageToken")
            if not token:
                return

    def download(self, bucket: str, name: str) -> bytes:
        """The object's bytes, read in one call: ``Response.content`` reads 10 KB at a time, and at hundreds of
        objects a second those Python-level reads cost more CPU than the GCS server spends sending them."""
        url = f"{self.endpoint}/download/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"
        with self.session.get(url, params={"alt": "media"}, timeout=120, stream=True) as resp:
            self._check(resp, f"read gs://{bucket}/{name}")
            return resp.raw.read(decode_content=True)

    def upload(self, bucket: str, name: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        url = f"{self.endpoint}/upload/storage/v1/b/{quote(bucket, safe='')}/o"
        self._check(
            self.session.post(
                url,
                params={"uploadType": "media", "name": name},
                data=data,
                headers={"Content-Type": content_type},
                timeout=120,
            ),
            f"write gs://{bucket}/{name}",
        )
