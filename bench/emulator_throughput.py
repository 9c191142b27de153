"""Import throughput of the local Healthcare API against the raw GCS download rate of the same objects.

    python bench/emulator_throughput.py [--instances 2000] [--size-kb 50]

Prints instances/s and MB/s for the import operation, the raw download rate of the same objects
from the GCS emulator (same 8-way concurrency as the emulator's I/O pool), and their ratio.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

from _stack import local_stack
from google.auth.credentials import AnonymousCredentials
from googleapiclient.discovery import build

from emulator.gcs import GcsClient
from scripts.dicom_samples import make_instance


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=2000)
    ap.add_argument("--size-kb", type=int, default=50, help="approximate pixel data per instance")
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    side = int((args.size_kb * 1024 / 2) ** 0.5)
    with local_stack():
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

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            raw_bytes = sum(len(b) for b in pool.map(lambda n: gcs.download("bench", n), names))
        raw_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        listed = sum(1 for _ in gcs.list("bench", "in/"))
        list_s = time.perf_counter() - t0
        assert raw_bytes == total_bytes

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
    print(f"raw download:  {args.instances / raw_s:8.1f} objects/s    {mb / raw_s:7.1f} MB/s  ({raw_s:.2f}s)")
    print(f"ratio import/raw: {raw_s / import_s:.2f}x")
    print(
        f"of the import, listing the {listed} objects (as the import does first) takes {list_s:.2f}s: "
        f"ratio without it {raw_s / max(import_s - list_s, 1e-9):.2f}x"
    )


if __name__ == "__main__":
    main()
