"""HTTP routes of the local BigQuery: exactly what google-cloud-bigquery and the Airflow provider send."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlglot import exp

from emulator.bigquery import types as bqt
from emulator.bigquery.engine import _ANON, Engine, JobError, bq_error, q
from emulator.httpbase import ApiError, App, Request

_P = r"/bigquery/v2/projects/(?P<p>[^/]+)"
_D = _P + r"/datasets/(?P<d>[^/]+)"
_T = _D + r"/tables/(?P<t>[^/]+)"


class BigQueryApi:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.app = App("bigquery")
        r = self.app.route
        r("POST", _P + r"/datasets", "datasets.insert")(self.insert_dataset)
        r("GET", _P + r"/datasets", "datasets.list")(self.list_datasets)
        r("GET", _D, "datasets.get")(lambda req: self.engine.require_dataset(req.match["p"], req.match["d"]))
        r("PATCH", _D, "datasets.patch")(lambda req: self.engine.require_dataset(req.match["p"], req.match["d"]))
        r("DELETE", _D, "datasets.delete")(self.delete_dataset)
        r("POST", _D + r"/tables", "tables.insert")(self.insert_table)
        r("GET", _D + r"/tables", "tables.list")(self.list_tables)
        r("GET", _T, "tables.get")(
            lambda req: self.engine.require_table(req.match["p"], req.match["d"], req.match["t"])
        )
        r("PATCH", _T, "tables.patch")(self.patch_table)
        r("PUT", _T, "tables.update")(self.patch_table)
        r("DELETE", _T, "tables.delete")(self.delete_table)
        r("POST", _T + r"/insertAll", "tabledata.insertAll")(self.insert_all)
        r("GET", _T + r"/data", "tabledata.list")(self.list_data)
        r("POST", _P + r"/jobs", "jobs.insert")(self.insert_job)
        r("GET", _P + r"/jobs/(?P<j>[^/]+)", "jobs.get")(self.get_job)
        r("POST", _P + r"/jobs/(?P<j>[^/]+)/cancel", "jobs.cancel")(self.cancel_job)
        r("POST", _P + r"/queries", "jobs.query")(self.query)
        r("GET", _P + r"/queries/(?P<j>[^/]+)", "jobs.getQueryResults")(self.get_query_results)

    # --- datasets / tables ---------------------------------------------------------------
    def insert_dataset(self, req: Request) -> dict:
        body = req.json()
        ref = body.get("datasetReference", {})
        dataset = ref.get("datasetId")
        if not dataset:
            raise bq_error(400, "invalid", "Dataset reference is missing datasetId")
        with self.engine.lock:
            return self.engine.create_dataset(ref.get("projectId") or req.match["p"], dataset, body)

    def list_datasets(self, req: Request) -> dict:
        items = [
            {k: d[k] for k in ("kind", "id", "datasetReference", "location")}
            for d in self.engine.list_datasets(req.match["p"])
        ]
        return {"kind": "bigquery#datasetList", "datasets": items}

    def delete_dataset(self, req: Request) -> dict:
        self.engine.delete_dataset(req.match["p"], req.match["d"], req.param("deleteContents") == "true")
        return {}

    def insert_table(self, req: Request) -> dict:
        body = req.json()
        table = body.get("tableReference", {}).get("tableId")
        if not table:
            raise bq_error(400, "invalid", "Table reference is missing tableId")
        if "view" in body or "materializedView" in body or "externalDataConfiguration" in body:
            raise bq_error(400, "invalid", "views and external tables are not supported by the local BigQuery")
        try:
            return self.engine.create_table(req.match["p"], req.match["d"], table, body)
        except ValueError as exc:
            raise bq_error(400, "invalid", str(exc)) from None

    def list_tables(self, req: Request) -> dict:
        tables = self.engine.list_tables(req.match["p"], req.match["d"])
        return {"kind": "bigquery#tableList", "tables": tables, "totalItems": len(tables)}

    def patch_table(self, req: Request) -> dict:
        return self.engine.patch_table(req.match["p"], req.match["d"], req.match["t"], req.json())

    def delete_table(self, req: Request) -> dict:
        self.engine.delete_table(req.match["p"], req.match["d"], req.match["t"])
        return {}

    def insert_all(self, req: Request) -> dict:
        body = req.json()
        rows = [r.get("json", {}) for r in body.get("rows", [])]
        try:
            errors = self.engine.insert_rows(
                req.match["p"],
                req.match["d"],
                req.match["t"],
                rows,
                bool(body.get("ignoreUnknownValues")),
                bool(body.get("skipInvalidRows")),
            )
        except JobError as exc:
            raise bq_error(400, exc.reason, exc.message) from None
        out: dict[str, Any] = {"kind": "bigquery#tableDataInsertAllResponse"}
        if errors:
            out["insertErrors"] = errors
        return out

    def _page(self, req: Request, fq: str, schema: list[dict], total: int) -> dict:
        start = int(req.param("pageToken") or req.param("startIndex") or 0)
        limit = int(req.param("maxResults") or 100_000)
        selected = req.param("selectedFields")
        if selected:
            names = [s.strip() for s in selected.split(",")]
            schema = [f for f in schema if f["name"] in names]
        with self.engine.lock:
            rows = self.engine.read_rows(fq, start, limit, [f["name"] for f in schema] if selected else None)
        int64_ts = (req.param("formatOptions.useInt64Timestamp") or "").lower() == "true"
        out: dict[str, Any] = {"totalRows": str(total), "rows": bqt.to_rest_rows(rows, schema, int64_ts)}
        if start + len(rows) < total:
            out["pageToken"] = str(start + len(rows))
        return out

    def list_data(self, req: Request) -> dict:
        p, d, t = req.match["p"], req.match["d"], req.match["t"]
        with self.engine.lock:
            meta = self.engine.require_table(p, d, t)
        out = self._page(req, f"{q(p)}.{q(d)}.{q(t)}", meta["schema"]["fields"], int(meta["numRows"]))
        out["kind"] = "bigquery#tableDataList"
        return out

    # --- jobs ---------------------------------------------------------------------------------
    def insert_job(self, req: Request) -> dict:
        body = req.json()
        project = req.match["p"]
        ref = dict(body.get("jobReference") or {})
        job_id = ref.get("jobId") or f"job_{uuid.uuid4().hex}"
        config = body.get("configuration") or {}
        with self.engine.lock:
            location = self._job_location(project, config, ref.get("location"))
            if self.engine.get_job(project, job_id):
                raise bq_error(409, "duplicate", f"Already Exists: Job {project}:{location}.{job_id}")
            job = self._run(project, job_id, location, config)
        return job

    def _job_location(self, project: str, config: dict, given: str | None) -> str:
        """Where a job runs: the location given, else that of the datasets it references (BigQuery infers it).

        A job runs where its data is: one given a location whose referenced dataset is elsewhere is answered
        404 "Not found: Dataset p:d was not found in location L", as BigQuery does ("Specify locations",
        https://cloud.google.com/bigquery/docs/locations#specify_locations).
        """
        refs: list[tuple[str, str]] = []
        for key in ("query", "extract", "load", "copy"):
            cfg = config.get(key) or {}
            for table in (cfg.get("destinationTable"), cfg.get("sourceTable")):
                if table and table.get("datasetId"):
                    refs.append((table.get("projectId") or project, table["datasetId"]))
        query = (config.get("query") or {}).get("query")
        if query:
            try:
                _, tree = self.engine.translate(query)
                refs += [(t.catalog or project, t.db) for t in tree.find_all(exp.Table) if t.db]
            except Exception:  # noqa: BLE001 - an unparsable query fails in the job itself, with its own message
                pass
        for p, d in refs:
            dataset = self.engine.get_dataset(p, d)
            if dataset is None:
                continue
            found = dataset.get("location") or "US"
            if given is None:
                given = found
            elif found.lower() != given.lower():
                raise bq_error(404, "notFound", f"Not found: Dataset {p}:{d} was not found in location {given}")
        return given or "US"

    def _job_shell(self, project: str, job_id: str, location: str, config: dict) -> dict:
        now = str(int(time.time() * 1000))
        return {
            "kind": "bigquery#job",
            "etag": now,
            "id": f"{project}:{location}.{job_id}",
            "selfLink": f"/bigquery/v2/projects/{project}/jobs/{job_id}?location={location}",
            "user_email": "local@localhost",
            "jobReference": {"projectId": project, "jobId": job_id, "location": location},
            "configuration": config,
            "status": {"state": "DONE"},
            "statistics": {"creationTime": now, "startTime": now},
        }

    def _run(self, project: str, job_id: str, location: str, config: dict) -> dict:
        job = self._job_shell(project, job_id, location, config)
        kind = next((k for k in ("query", "extract", "load", "copy") if k in config), None)
        try:
            if kind == "query":
                self._query_job(project, job_id, config, job)
            elif kind == "extract":
                self._extract_job(project, config["extract"], job)
            elif kind == "load":
                self._load_job(project, config["load"], job)
            else:
                raise JobError("invalid", f"job configuration {sorted(config)} is not supported by the local BigQuery")
        except JobError as exc:
            err = {"reason": exc.reason, "message": exc.message, "location": "query" if kind == "query" else ""}
            job["status"] = {"state": "DONE", "errorResult": err, "errors": [err]}
        except ApiError as exc:
            err = {"reason": (exc.errors or [{}])[0].get("reason", "invalid"), "message": exc.message}
            job["status"] = {"state": "DONE", "errorResult": err, "errors": [err]}
        job["statistics"]["endTime"] = str(int(time.time() * 1000))
        if not config.get("dryRun"):
            self.engine.save_job(project, job_id, job)
        return job

    def _query_job(self, project: str, job_id: str, config: dict, job: dict) -> None:
        qc = config["query"]
        if qc.get("useLegacySql") is True:
            raise JobError(
                "invalidQuery",
                "Legacy SQL is not supported by the local BigQuery: set useLegacySql to false and use standard SQL",
            )
        sql, tree = self.engine.translate(qc.get("query", ""))
        params: Any = None
        qparams = qc.get("queryParameters") or []
        if qparams:
            if (qc.get("parameterMode") or "NAMED").upper() == "POSITIONAL" or not qparams[0].get("name"):
                params = [bqt.from_query_parameter(p) for p in qparams]
            else:
                named = {p.name.lower() for p in tree.find_all(exp.Parameter)}  # BigQuery accepts unused ones
                params = {p["name"]: bqt.from_query_parameter(p) for p in qparams if p["name"].lower() in named}
        default_ds = qc.get("defaultDataset")
        billed = self.engine.referenced_bytes(tree, project, default_ds, params)
        stats = {
            "totalBytesProcessed": str(billed),
            "totalBytesBilled": str(billed),
            "cacheHit": False,
            "statementType": tree.key.upper() if tree.key != "union" else "SELECT",
        }
        job["statistics"]["totalBytesProcessed"] = str(billed)
        job["statistics"]["query"] = stats
        limit = qc.get("maximumBytesBilled")
        if limit is not None and not config.get("dryRun") and billed > int(limit):
            raise JobError(
                "bytesBilledLimitExceeded",
                f"Query exceeded limit for bytes billed: {limit}. {billed} or higher required.",
            )
        if config.get("dryRun"):
            if stats["statementType"] == "SELECT":  # resolve names without reading data
                self.engine.run_query(project, f"SELECT * FROM ({sql}) AS dry_run LIMIT 0", params, default_ds, None)
            return
        if stats["statementType"] != "SELECT":
            self.engine.run_query(project, sql, params, default_ds, None)
            return
        anon = f"{q('meta')}.{_ANON}.{q(job_id)}"
        self.engine.run_query(project, sql, params, default_ds, anon)
        dest = qc.get("destinationTable")
        if not dest:
            job["_anon_schema"] = self.engine.schema_of(anon)
            qc["destinationTable"] = {"projectId": project, "datasetId": _ANON, "tableId": job_id}
            return
        dp, dd, dt = dest.get("projectId") or project, dest["datasetId"], dest["tableId"]
        self.engine.require_dataset(dp, dd)
        existing = self.engine.get_table(dp, dd, dt)
        write = qc.get("writeDisposition") or "WRITE_EMPTY"
        if not existing and (qc.get("createDisposition") or "CREATE_IF_NEEDED") == "CREATE_NEVER":
            raise JobError("notFound", f"Not found: Table {dp}:{dd}.{dt}")
        if existing and write == "WRITE_EMPTY" and int(existing["numRows"]):
            raise JobError("duplicate", f"Already Exists: Table {dp}:{dd}.{dt}")
        mode = "append" if existing and write == "WRITE_APPEND" else "replace"
        self.engine.copy_into(anon, f"{q(dp)}.{q(dd)}.{q(dt)}", (dp, dd, dt), mode)
        self.engine.con.execute(f"DROP TABLE IF EXISTS {anon}")
        stats["totalRows"] = self.engine.get_table(dp, dd, dt)["numRows"]

    def _extract_job(self, project: str, cfg: dict, job: dict) -> None:
        src = cfg.get("sourceTable") or {}
        uris = cfg.get("destinationUris") or ([cfg["destinationUri"]] if cfg.get("destinationUri") else [])
        counts = self.engine.extract(
            src.get("projectId") or project,
            src["datasetId"],
            src["tableId"],
            uris,
            cfg.get("destinationFormat"),
            cfg.get("printHeader", True) is not False,
            cfg.get("fieldDelimiter") or ",",
            cfg.get("compression") or "NONE",
        )
        job["statistics"]["extract"] = {"destinationUriFileCounts": [str(len(counts))]}

    def _load_job(self, project: str, cfg: dict, job: dict) -> None:
        dest = cfg["destinationTable"]
        n = self.engine.load(
            dest.get("projectId") or project, dest["datasetId"], dest["tableId"], cfg.get("sourceUris") or [], cfg
        )
        job["statistics"]["load"] = {"outputRows": str(n), "inputFiles": str(len(cfg.get("sourceUris") or []))}

    def _public(self, job: dict) -> dict:
        return {k: v for k, v in job.items() if not k.startswith("_")}

    def get_job(self, req: Request) -> dict:
        job = self.engine.get_job(req.match["p"], req.match["j"])
        if job is None:
            raise bq_error(404, "notFound", f"Not found: Job {req.match['p']}:{req.match['j']}")
        return self._public(job)

    def cancel_job(self, req: Request) -> dict:
        return {"kind": "bigquery#jobCancelResponse", "job": self.get_job(req)}

    def _results(self, req: Request, project: str, job: dict) -> dict:
        out: dict[str, Any] = {
            "kind": "bigquery#getQueryResultsResponse",
            "jobReference": job["jobReference"],
            "jobComplete": True,
            "cacheHit": False,
            "totalBytesProcessed": job["statistics"].get("totalBytesProcessed", "0"),
        }
        err = job["status"].get("errorResult")
        if err:
            code = 404 if err["reason"] == "notFound" else 400
            raise ApiError(
                code, err["message"], errors=[{"message": err["message"], "domain": "global", "reason": err["reason"]}]
            )
        dest = job["configuration"].get("query", {}).get("destinationTable")
        if not dest:
            out.update({"totalRows": "0", "rows": [], "schema": {"fields": []}})
            return out
        if dest["datasetId"] == _ANON:
            schema = job.get("_anon_schema", [])
            fq = f"{q('meta')}.{_ANON}.{q(dest['tableId'])}"
        else:
            schema = self.engine.schema(dest["projectId"], dest["datasetId"], dest["tableId"])
            fq = f"{q(dest['projectId'])}.{q(dest['datasetId'])}.{q(dest['tableId'])}"
        total = self.engine.con.execute(f"SELECT COUNT(*) FROM {fq}").fetchone()[0]
        out.update(self._page(req, fq, schema, total))
        out["schema"] = {"fields": schema}
        return out

    def get_query_results(self, req: Request) -> dict:
        project = req.match["p"]
        with self.engine.lock:
            job = self.engine.get_job(project, req.match["j"])
            if job is None:
                raise bq_error(404, "notFound", f"Not found: Job {project}:{req.match['j']}")
            return self._results(req, project, job)

    def query(self, req: Request) -> dict:
        body = req.json()
        project = req.match["p"]
        config = {
            "query": {
                k: body[k]
                for k in ("query", "useLegacySql", "parameterMode", "queryParameters", "defaultDataset")
                if k in body
            }
        }
        if body.get("dryRun"):
            config["dryRun"] = True
        job_id = body.get("requestId") or f"job_{uuid.uuid4().hex}"
        with self.engine.lock:
            job = self._run(project, job_id, self._job_location(project, config, body.get("location")), config)
            if body.get("dryRun"):
                if job["status"].get("errorResult"):
                    e = job["status"]["errorResult"]
                    raise ApiError(400, e["message"], errors=[e])
                return {
                    "kind": "bigquery#queryResponse",
                    "jobComplete": True,
                    "schema": {"fields": []},
                    "totalBytesProcessed": job["statistics"]["totalBytesProcessed"],
                    "jobReference": job["jobReference"],
                }
            if body.get("maxResults") is not None:
                req.query["maxResults"] = [str(body["maxResults"])]
            fmt = body.get("formatOptions") or {}
            if fmt.get("useInt64Timestamp"):
                req.query["formatOptions.useInt64Timestamp"] = ["true"]
            out = self._results(req, project, job)
        out["kind"] = "bigquery#queryResponse"
        return out
