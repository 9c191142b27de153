"""Who is told when a night fails or runs late: e-mail through the SMTP provider, with no PHI in it.

Two alerts, each naming the DAG, the night (the day folder a run imports) and a link to the run in Airflow:

* **failed run**: every shipped DAG's ``on_failure_callback`` (:func:`failure_callback`). Airflow runs it in the
  dag-processor once the run has failed, after the tasks' own retries.
* **late night**: the nightly import's ``deadline`` (:func:`nightly_deadline`), an Airflow 3 ``DeadlineAlert``
  for "not finished by HH:MM in the site's time zone" (``DICOM_IMPORT_DEADLINE``). Airflow's scheduler sees the
  deadline pass and the triggerer runs :func:`missed_deadline_callback`. Only scheduled nights are watched: a
  backfill or a manual run of an old night starts past its deadline, and a deadline on it would only be noise.

Neither message carries a task's error text, a file path, the run's ``conf`` or anything read from DICOM: the
link leads to the logs, behind Airflow's login. Recipients: ``DICOM_ALERT_EMAILS``; the SMTP connection:
``DICOM_ALERT_SMTP_CONN_ID`` (its ``from_email`` extra is the sender, else ``DICOM_ALERT_FROM``). With no
recipients, nothing is sent.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from dicom_pipelines.settings import value

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)


def recipients() -> list[str]:
    return [r.strip() for r in (value("DICOM_ALERT_EMAILS") or "").split(",") if r.strip()]


def _field(dag_run: Any, name: str, api_name: str | None = None) -> Any:
    """A field of the run as the dag-processor (a DagRun) or the deadline's context (the REST API's JSON) has it."""
    if isinstance(dag_run, dict):
        return dag_run.get(api_name or name)
    return getattr(dag_run, name, None)


def _moment(raw: Any) -> dt.datetime | None:
    if isinstance(raw, str):
        return dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return raw if isinstance(raw, dt.datetime) else None


def run_link(dag_id: str, run_id: str) -> str:
    from airflow.providers.common.compat.sdk import conf

    base = (conf.get("api", "base_url", fallback="") or "http://localhost:8080").rstrip("/")
    return f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def alert_message(kind: str, dag_run: Any, timezone: str, deadline: str | None = None) -> tuple[str, str]:
    """(subject, plain text) of an alert: the DAG, the night, the run's state and link; nothing from the data.

    The night is the day of the run's data interval start in ``timezone`` (the folder a nightly run imports); a
    run with no data interval (started by hand without a logical date, or an export) is named by its run id only.
    """
    dag_id = str(_field(dag_run, "dag_id"))
    run_id = str(_field(dag_run, "run_id", "dag_run_id"))
    start = _moment(_field(dag_run, "data_interval_start"))
    night = start.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d") if start else None
    state = _field(dag_run, "state")
    state = str(getattr(state, "value", state) or "unknown")
    which = f"night {night}" if night else "run"
    if kind == "late":
        subject = f"[Airflow] {dag_id}: {which} not finished by {deadline}"
        what = f"The {which} was not finished by {deadline} ({timezone}); the run is {state}."
    else:
        subject = f"[Airflow] {dag_id}: {which} failed"
        what = f"The {which} failed."
    text = f"{what}\n\nDAG: {dag_id}\nRun: {run_id}\nLink: {run_link(dag_id, run_id)}\n"
    return subject, text


def _html(text: str) -> str:
    return "<pre>" + html.escape(text) + "</pre>"


def _sender(hook: Any) -> str:
    return hook.from_email or value("DICOM_ALERT_FROM") or "airflow@localhost"


def send_alert(subject: str, text: str) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    to = recipients()
    if not to:
        log.info("No DICOM_ALERT_EMAILS: alert %r not sent", subject)
        return
    with SmtpHook(smtp_conn_id=str(value("DICOM_ALERT_SMTP_CONN_ID"))) as hook:
        hook.send_email_smtp(to=to, subject=subject, html_content=_html(text), from_email=_sender(hook))
    log.info("Sent alert %r to %d recipient(s)", subject, len(to))


async def asend_alert(subject: str, text: str) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    to = recipients()
    if not to:
        log.info("No DICOM_ALERT_EMAILS: alert %r not sent", subject)
        return
    async with SmtpHook(smtp_conn_id=str(value("DICOM_ALERT_SMTP_CONN_ID"))) as hook:
        await hook.asend_email_smtp(to=to, subject=subject, html_content=_html(text), from_email=_sender(hook))
    log.info("Sent alert %r to %d recipient(s)", subject, len(to))


def failure_callback(context: Context) -> None:
    """A DAG's ``on_failure_callback``: e-mail that the run failed. Never raises (Airflow would only log it)."""
    try:
        dag_run = context.get("dag_run")
        dag = context.get("dag")
        timezone = str(getattr(getattr(dag, "timetable", None), "_timezone", None) or value("DICOM_IMPORT_TIMEZONE"))
        send_alert(*alert_message("failed", dag_run, timezone))
    except Exception as exc:  # noqa: BLE001 - an alert that cannot be sent must not hide why
        log.error("Could not send the failure alert (%s: %s)", type(exc).__name__, exc)


async def missed_deadline_callback(context: dict[str, Any], timezone: str, deadline: str) -> None:
    """The ``AsyncCallback`` of the nightly deadline, run in the triggerer when a scheduled night is late."""
    dag_run = context.get("dag_run") or {}
    if dag_run.get("run_type") != "scheduled":
        log.info("Run %s is not a scheduled night: no deadline alert", dag_run.get("dag_run_id"))
        return
    await asend_alert(*alert_message("late", dag_run, timezone, deadline))


def deadline_interval(cron: str, timezone: str, deadline: str) -> dt.timedelta:
    """From a night's logical date to HH:MM (``deadline``, in ``timezone``) after the night's run starts.

    The nightly timetable's logical date is the start of the night's data interval; the run starts at its end,
    one cron step later. The deadline is the first HH:MM after that start. Computed once from the cron, as a
    fixed interval, for a daily cron: across a daylight-saving change the deadline moves by that hour for one night,
    and a cron with gaps (weekdays only) gets the interval of its first step for every night.
    """
    from croniter import croniter

    if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", deadline):
        raise ValueError(f"DICOM_IMPORT_DEADLINE={deadline!r} is invalid: must be a time of day as HH:MM, e.g. 06:30")
    hours, _, minutes = deadline.partition(":")
    zone = ZoneInfo(timezone)
    reference = dt.datetime(2026, 1, 5, tzinfo=zone)
    fires = croniter(cron, reference)
    logical, starts = fires.get_next(dt.datetime), fires.get_next(dt.datetime)
    due = starts.replace(hour=int(hours), minute=int(minutes), second=0, microsecond=0)
    if due <= starts:
        due += dt.timedelta(days=1)
    return due - logical


def nightly_deadline(cron: str, timezone: str, deadline: str | None) -> Any:
    """The nightly import's ``DeadlineAlert``, or None without a ``DICOM_IMPORT_DEADLINE``."""
    if not deadline:
        return None
    from airflow.sdk.definitions.deadline import AsyncCallback, DeadlineAlert, DeadlineReference  # 3.1 and 3.3

    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=deadline_interval(cron, timezone, deadline),
        callback=AsyncCallback(missed_deadline_callback, kwargs={"timezone": timezone, "deadline": deadline}),
    )
