"""Import throughput of the local Healthcare API against the raw GCS download rate of the same objects.

    python bench/emulator_throughput.py [--instances 2000] [--size-kb 50]

Prints instances/s and MB/s for the import operation and two raw download rates of the same objects from the
GCS emulator, each with the same 8-way concurrency as the emulator's I/O pool, and the ratios:

- with the local services' own GCS client (``emulator.gcs``, the reads the import itself makes): what the import
  adds to the download;
- with Google's ``google-cloud-storage`` client (``Blob.download_as_bytes``), the download a user's code makes.

For each phase it also prints the CPU seconds of the GCS server, of the downloading process and of the whole
machine: on a 2-core machine the phases are CPU-bound, and that says where the import's extra time goes.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
from _stack import local_stack
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from googleapiclient.discovery import build

from emulator.gcs import GcsClient
from scripts.dicom_samples import make_instance


def cpu_seconds(pid: int | None, children: bool = True) -> float:
    if pid is None:
        return 0.0
    proc = psutil.Process(pid)
    times = [proc.cpu_times(), *(c.cpu_times() for c in (proc.children(recursive=True) if children else ()))]
    return sum(t.user + t.system for t in times)


class CpuMeter:
    """CPU seconds spent by the GCS server, by the downloader (this process or the Healthcare API) and in all."""

    def __init__(self, gcs_pid: int | None, downloader_pid: int | None):
        self.gcs_pid, self.downloader_pid = gcs_pid, downloader_pid
        self.downloader_children = downloader_pid != os.getpid()

    def __enter__(self) -> CpuMeter:
        self._start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gcs, self.downloader, self.machine = (b - a for a, b in zip(self._start, self._now(), strict=True))

    def _now(self) -> tuple[float, float, float]:
        busy = psutil.cpu_times()
        return (
            cpu_seconds(self.gcs_pid),
            cpu_seconds(self.downloader_pid, self.downloader_children),
            busy.user + busy.system + getattr(busy, "softirq", 0.0) + getattr(busy, "irq", 0.0),
        )

    def __str__(self) -> str:
        return f"CPU s: GCS server {self.gcs:.1f}, downloader {self.downloader:.1f}, machine {self.machine:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=2000)
    ap.add_argument("--size-kb", type=int, default=50, help="approximate pixel data per instance")
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    side = int((args.size_kb * 1024 / 2) ** 0.5)
    with local_stack() as stack:
        gcs = GcsClient(pool_size=args.threads)
        gcs.session.post(f"{gcs.endpoint}/storage/v1/b", json={"name": "bench"}, params={"project": "p"})
        names = []
        t0 = time.perf_counter()

        def put(i: int) -> int:
            data = make_instance("1.2.3", f"1.2.3.{i // 100}", f"1.2.3.4.{i}", rows=side, cols=side, seed=i).data
            name = f"in/{i:06d}.dcm"
            gcs.upload("bench", name, data)
            names.append(name)
            return len(data)

        with ThreadPoolExecutor(args.threads) as pool:
            total_bytes = sum(pool.map(put, range(args.instances)))
        upload_s = time.perf_counter() - t0

        bucket = storage.Client(
            project="p", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs.endpoint}
        ).bucket("bench")
        fetchers = {
            "local services' GCS client": lambda name: gcs.download("bench", name),
            "google-cloud-storage": lambda name: bucket.blob(name).download_as_bytes(),
        }
        raw: dict[str, tuple[float, CpuMeter]] = {}
        for label, fetch in fetchers.items():
            t0 = time.perf_counter()
            with CpuMeter(stack.pid("gcs"), os.getpid()) as cpu, ThreadPoolExecutor(args.threads) as pool:
                raw_bytes = sum(len(b) for b in pool.map(fetch, names))
            raw[label] = (time.perf_counter() - t0, cpu)
            assert raw_bytes == total_bytes, label
        t0 = time.perf_counter()
        listed = sum(1 for _ in gcs.list("bench", "in/"))
        list_s = time.perf_counter() - t0

        svc = build(
            "healthcare",
            "v1",
            static_discovery=True,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": os.environ["HEALTHCARE_API_ENDPOINT"]},
            cache_discovery=False,
        )
        parent = "projects/bench/locations/l"
        created = svc.projects().locations().datasets().create(parent=parent, datasetId="d", body={}).execute()
        while not created.get("done"):
            time.sleep(0.1)
            created = svc.projects().locations().datasets().operations().get(name=created["name"]).execute()
        store = (
            svc.projects()
            .locations()
            .datasets()
            .dicomStores()
            .create(parent=f"{parent}/datasets/d", dicomStoreId="s", body={})
            .execute()["name"]
        )
        t0 = time.perf_counter()
        with CpuMeter(stack.pid("gcs"), stack.pid("healthcare")) as import_cpu:
            op = (
                svc.projects()
                .locations()
                .datasets()
                .dicomStores()
                .import_(name=store, body={"gcsSource": {"uri": "gs://bench/in/**.dcm"}})
                .execute()
            )
            while True:
                cur = svc.projects().locations().datasets().operations().get(name=op["name"]).execute()
                if cur.get("done"):
                    break
                time.sleep(0.05)
        import_s = time.perf_counter() - t0
        counter = cur["metadata"]["counter"]
        assert counter.get("success") == str(args.instances), cur

    mb = total_bytes / 1e6
    print(
        f"instances: {args.instances}, {mb:.1f} MB ({total_bytes / args.instances / 1024:.1f} KB each); "
        f"upload took {upload_s:.1f}s"
    )
    print(f"import:        {args.instances / import_s:8.1f} instances/s  {mb / import_s:7.1f} MB/s  ({import_s:.2f}s)")
    print(f"  {import_cpu}")
    for label, (raw_s, cpu) in raw.items():
        print(
            f"raw download with the {label}: {args.instances / raw_s:.1f} objects/s, {mb / raw_s:.1f} MB/s "
            f"({raw_s:.2f}s); ratio import/raw {raw_s / import_s:.2f}x "
            f"({raw_s / max(import_s - list_s, 1e-9):.2f}x without the listing)"
        )
        print(f"  {cpu}")
    print(f"of the import, listing the {listed} objects (as the import does first) takes {list_s:.2f}s")


if __name__ == "__main__":
    main()
