"""A small client for Airflow 3's REST API (v2), used by the demo, the end-to-end tests and the benchmarks."""

from __future__ import annotations

import time
from typing import Any

import requests


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str):
        self.base = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.http = requests.Session()
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            resp = self.http.post(
                f"{self.base}/auth/token", json={"username": self.username, "password": self.password}, timeout=30
            )
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}", **kw.pop("headers", {})}
        return self.http.request(method, f"{self.base}/api/v2{path}", headers=headers, timeout=60, **kw)

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.request(method, path, **kw)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status_code} {resp.text[:500]}")
        return resp.json() if resp.content else None

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 120) -> None:
        deadline = time.time() + timeout
        pending = set(dag_ids)
        while pending and time.time() < deadline:
            pending = {d for d in pending if self.request("GET", f"/dags/{d}").status_code != 200}
            if pending:
                time.sleep(1)
        if pending:
            raise TimeoutError(f"DAGs not registered after {timeout}s: {sorted(pending)}")

    def unpause(self, dag_id: str) -> None:
        self.ok("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict, run_id: str | None = None, logical_date: str | None = None) -> dict:
        body = {"logical_date": logical_date, "conf": conf}
        if run_id:
            body["dag_run_id"] = run_id
        return self.ok("POST", f"/dags/{dag_id}/dagRuns", json=body)

    def backfill(self, dag_id: str, from_date: str, to_date: str, conf: dict, max_active_runs: int = 1) -> dict:
        return self.ok(
            "POST",
            "/backfills",
            json={
                "dag_id": dag_id,
                "from_date": from_date,
                "to_date": to_date,
                "max_active_runs": max_active_runs,
                "dag_run_conf": conf,
            },
        )

    def runs(self, dag_id: str, **params: Any) -> list[dict]:
        return self.ok("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100, **params})["dag_runs"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 300) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            run = self.ok("GET", f"/dags/{dag_id}/dagRuns/{requests.utils.quote(run_id, safe='')}")
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(1)
        raise TimeoutError(f"{dag_id} run {run_id} not finished after {timeout}s")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        tis = self.ok("GET", f"/dags/{dag_id}/dagRuns/{requests.utils.quote(run_id, safe='')}/taskInstances")
        return {ti["task_id"]: ti["state"] for ti in tis["task_instances"]}

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int | None = None
    ) -> Any:
        path = (
            f"/dags/{dag_id}/dagRuns/{requests.utils.quote(run_id, safe='')}/taskInstances/{task_id}/xcomEntries/{key}"
        )
        params = {"deserialize": "true", **({} if map_index is None else {"map_index": str(map_index)})}
        return self.ok("GET", path, params=params)["value"]

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int | None = None) -> dict:
        return self.ok("GET", self._ti_path(dag_id, run_id, task_id, map_index))

    @staticmethod
    def _ti_path(dag_id: str, run_id: str, task_id: str, map_index: int | None = None) -> str:
        """A task instance's path; a mapped one adds its map index."""
        path = f"/dags/{dag_id}/dagRuns/{requests.utils.quote(run_id, safe='')}/taskInstances/{task_id}"
        return path if map_index is None else f"{path}/{map_index}"

    def wait_task_state(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        states: tuple[str, ...],
        timeout: float = 120,
        map_index: int | None = None,
    ) -> dict:
        deadline = time.time() + timeout
        path = self._ti_path(dag_id, run_id, task_id, map_index)
        while time.time() < deadline:
            resp = self.request("GET", path)
            if resp.status_code != 404:  # 404: the run is queued and its task instances do not exist yet
                resp.raise_for_status()
                if resp.json()["state"] in states:
                    return resp.json()
            time.sleep(0.5)
        raise TimeoutError(f"{dag_id}.{task_id} in {run_id} not in {states} after {timeout}s")

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str, map_index: int | None = None) -> None:
        """What a user does with "Mark as failed/success" in the UI."""
        self.ok("PATCH", self._ti_path(dag_id, run_id, task_id, map_index), json={"new_state": state})

    def clear_task(self, dag_id: str, run_id: str, task_id: str) -> None:
        """What a user does with "Clear" on one task in the UI."""
        self.ok(
            "POST",
            f"/dags/{dag_id}/clearTaskInstances",
            json={
                "dag_run_id": run_id,
                "task_ids": [task_id],
                "dry_run": False,
                "only_failed": False,
                "reset_dag_runs": True,
            },
        )

    def wait_runs(self, dag_id: str, count: int, timeout: float = 300, **params: Any) -> list[dict]:
        """Wait until ``count`` runs matching ``params`` have finished; returns them."""
        deadline = time.time() + timeout
        runs: list[dict] = []
        while time.time() < deadline:
            runs = self.runs(dag_id, **params)
            if len(runs) >= count and all(r["state"] in ("success", "failed") for r in runs):
                return runs
            time.sleep(2)
        raise TimeoutError(
            f"{dag_id}: {len(runs)} runs, not all finished after {timeout}s: "
            f"{[(r['dag_run_id'], r['state']) for r in runs]}"
        )
