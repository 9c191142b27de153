"""``make mutation``: mutation testing (mutmut) of the failure contract's decisions, with the score printed.

Mutated: ``outcomes.py``, ``polling.py`` and ``decisions.py`` (what a try does on resume, at the deadline, on a kill
and after an ambiguous submission). The tests run are the pure ones of their test modules (``-m "not stack"``), so
the whole run takes minutes on 2 cores. mutmut names modules from ``./`` or ``src/``, while this package lives in
``plugins/``: the run works in ``.mutation/``, a copy with the package under ``src/``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".mutation"
MUTATED = ("outcomes.py", "polling.py", "decisions.py")
TESTS = ("tests/plugins/test_decisions.py", "tests/plugins/test_polling.py", "tests/plugins/test_outcomes.py")
GOAL = 0.90

CONFIG = f"""
[tool.mutmut]
source_paths = ["src/dicom_pipelines"]
only_mutate = {json.dumps([f"src/dicom_pipelines/{m}" for m in MUTATED])}
also_copy = ["tests", "pytest.ini", "scripts", "emulator"]
pytest_add_cli_args = ["-q", "-p", "no:cacheprovider", "-m", "not stack"]
pytest_add_cli_args_test_selection = {json.dumps(list(TESTS))}
"""


def prepare() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "src").mkdir(parents=True)
    shutil.copytree(REPO / "plugins" / "dicom_pipelines", WORK / "src" / "dicom_pipelines")
    for folder in ("scripts", "emulator"):  # tests/conftest.py imports the stack runner
        shutil.copytree(REPO / folder, WORK / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (WORK / "tests" / "plugins").mkdir(parents=True)
    for name in ("__init__.py", "conftest.py", "helpers.py"):
        shutil.copy(REPO / "tests" / name, WORK / "tests" / name)
    shutil.copy(REPO / "tests" / "plugins" / "__init__.py", WORK / "tests" / "plugins" / "__init__.py")
    for test in TESTS:
        shutil.copy(REPO / test, WORK / test)
    ini = (REPO / "pytest.ini").read_text().replace("pythonpath = plugins .", "pythonpath = src .")
    (WORK / "pytest.ini").write_text(ini)
    (WORK / "pyproject.toml").write_text(CONFIG)


def main() -> int:
    prepare()
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    with open(WORK / "run.log", "w") as log:  # mutmut redraws a progress line per mutant
        subprocess.run([mutmut, "run", "--max-children", "2"], cwd=WORK, check=False, stdout=log, stderr=log)
    subprocess.run([mutmut, "export-cicd-stats"], cwd=WORK, check=True)
    stats = json.loads((WORK / "mutants" / "mutmut-cicd-stats.json").read_text())
    results = subprocess.run([mutmut, "results"], cwd=WORK, capture_output=True, text=True, check=False).stdout
    survivors = [line.strip() for line in results.splitlines() if line.strip()]
    considered = stats["total"] - stats.get("skipped", 0)
    killed = stats["killed"] + stats.get("timeout", 0) + stats.get("segfault", 0)
    score = killed / max(considered, 1)
    print("\nSurvivors (mutmut show NAME, in .mutation/):", *survivors, sep="\n  ")
    print(
        f"\nMutation score: {killed} of {considered} mutants killed = {score:.1%} (goal {GOAL:.0%})",
        json.dumps(stats),
    )
    return 0 if score >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
