"""What parsing each DAG file costs, two ways: cold, and as the dag-processor measures it.

    python bench/dag_parse_cost.py [--repeat 3]

Cold: a fresh interpreter that imports ``airflow.sdk`` and then the DAG file. As the dag-processor: Airflow's
``[dag_processor] parsing_pre_import_modules`` (on by default) imports the ``airflow.*`` modules a DAG file names
(``airflow.utils.file.iter_airflow_imports``) before it parses the file, so what it reports as the file's parse
time leaves those out; the second figure pre-imports them the same way. Both run the installed package when
``--package`` names a folder holding it, else the repository's ``plugins/``.

The dag-processor re-parses every file every ``refresh_interval``, and each worker parses the file of each task it
runs, so a file's import time is paid over and over. Each figure is the median of ``repeat`` fresh interpreters that
import ``airflow.sdk`` first (paid once per process by any DAG file) and then time only the DAG file. Printed, never
asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import importlib, importlib.util, json, sys, time
import airflow.sdk
path, preimport = sys.argv[1], sys.argv[2] == "1"
if preimport:
    from airflow.utils.file import iter_airflow_imports
    for name in iter_airflow_imports(path):
        try:
            importlib.import_module(name)
        except Exception:
            pass
before = set(sys.modules)
t0 = time.perf_counter()
spec = importlib.util.spec_from_file_location("dag_under_test", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
elapsed = time.perf_counter() - t0
heavy = sorted({m.split(".")[0] + "." + m.split(".")[1] if m.count(".") else m for m in set(sys.modules) - before
                if m.startswith(("google", "airflow.providers"))})
print(json.dumps({"seconds": elapsed, "modules": len(set(sys.modules) - before), "heavy": heavy[:12]}))
"""


def measure(path: Path, preimport: bool, code: str) -> dict:
    env = {**os.environ, "PYTHONPATH": code}
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), "1" if preimport else "0"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--package", help="a folder with the installed wheel (pip install --target)")
    args = ap.parse_args()
    code = args.package or str(REPO / "plugins")
    print(f"DAG file parse cost, median of {args.repeat} fresh interpreters ({code}):")
    print(f"  {'file':32} {'cold':>8} {'as the dag-processor':>22}")
    for path in sorted((REPO / "dags").glob("*.py")):
        cold = [measure(path, False, code) for _ in range(args.repeat)]
        warm = [measure(path, True, code) for _ in range(args.repeat)]
        print(
            f"  {path.name:32} {statistics.median(r['seconds'] for r in cold) * 1000:5.0f} ms "
            f"{statistics.median(r['seconds'] for r in warm) * 1000:19.0f} ms  "
            f"(cold: {cold[0]['modules']} modules; Google/provider packages: {', '.join(cold[0]['heavy']) or 'none'})"
        )


if __name__ == "__main__":
    main()
