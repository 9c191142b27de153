"""What parsing each DAG file costs: its cold import time in a fresh interpreter, after ``airflow.sdk``.

    python bench/dag_parse_cost.py [--repeat 3]

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
import importlib.util, json, sys, time
import airflow.sdk
path = sys.argv[1]
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


def measure(path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)])}
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, env=env, cwd=REPO, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"DAG file parse cost: cold import after airflow.sdk, median of {args.repeat} fresh interpreters")
    for path in sorted((REPO / "dags").glob("*.py")):
        runs = [measure(path) for _ in range(args.repeat)]
        seconds = statistics.median(r["seconds"] for r in runs)
        print(
            f"  {path.name:32} {seconds * 1000:6.0f} ms, {runs[0]['modules']:4} modules imported "
            f"(Google/provider packages: {', '.join(runs[0]['heavy']) or 'none'})"
        )


if __name__ == "__main__":
    main()
