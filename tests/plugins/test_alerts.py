"""Alerts: their words, the nightly deadline's interval, and delivery through the SMTP provider to a real SMTP
server on 127.0.0.1 (sync, as the dag-processor runs a failure callback; async, as the triggerer runs a deadline's)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

from dicom_pipelines.alerts import (
    alert_message,
    deadline_interval,
    failure_callback,
    missed_deadline_callback,
    nightly_deadline,
)
from tests.listeners import SmtpListener, wait_until


@pytest.fixture
def smtp(monkeypatch):
    pytest.importorskip("aiosmtpd", reason="the SMTP server of the tests is a development requirement")
    listener = SmtpListener()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", listener.connection("airflow@hospital.example"))
    monkeypatch.setenv("DICOM_ALERT_EMAILS", "oncall@hospital.example, imaging@hospital.example")
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.hospital.example")
    yield listener
    listener.close()


RUN = {
    "dag_id": "dicom_nightly_import",
    "dag_run_id": "scheduled__2026-12-04T00:00:00+00:00",
    "data_interval_start": "2026-12-03T23:00:00Z",
    "run_type": "scheduled",
    "state": "running",
    "conf": {"day": "2026-12-04"},
}


def test_alert_names_the_dag_the_night_in_the_sites_zone_and_the_link(monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.hospital.example/")
    subject, text = alert_message("late", RUN, "Europe/Berlin", "06:30")
    assert subject == "[Airflow] dicom_nightly_import: night 2026-12-04 not finished by 06:30"
    assert text.startswith("The night 2026-12-04 was not finished by 06:30 (Europe/Berlin); the run is running.")
    assert text.endswith(
        "Link: https://airflow.hospital.example/dags/dicom_nightly_import/runs/"
        "scheduled__2026-12-04T00%3A00%3A00%2B00%3A00\n"
    )
    subject, text = alert_message("failed", {**RUN, "data_interval_start": None}, "UTC")
    assert subject == "[Airflow] dicom_nightly_import: run failed"
    assert "conf" not in text and "2026-12-04" in text  # the run id names the night; the conf is never read


@pytest.mark.parametrize(
    "cron,timezone,deadline,interval",
    [
        ("0 0 * * *", "Europe/Berlin", "06:30", dt.timedelta(days=1, hours=6, minutes=30)),
        ("0 1 * * *", "UTC", "00:30", dt.timedelta(days=1, hours=23, minutes=30)),
        ("0 1 * * *", "UTC", "01:00", dt.timedelta(days=2)),
        ("30 22 * * *", "America/New_York", "06:00", dt.timedelta(days=1, hours=7, minutes=30)),
    ],
)
def test_the_deadline_is_the_first_hh_mm_after_the_nights_run_starts(cron, timezone, deadline, interval):
    assert deadline_interval(cron, timezone, deadline) == interval


def test_a_bad_deadline_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match=r"DICOM_IMPORT_DEADLINE='6h' is invalid: must be a time of day as HH:MM"):
        nightly_deadline("0 0 * * *", "UTC", "6h")
    assert nightly_deadline("0 0 * * *", "UTC", None) is None


def test_a_failed_run_is_mailed_through_the_smtp_provider(smtp):
    class DagRun:
        dag_id, run_id, state = "dicom_nightly_import", "manual__2026-12-05T09:00:00+00:00", "failed"
        data_interval_start = dt.datetime(2026, 12, 4, tzinfo=dt.UTC)
        conf = {"patient_ids": ["P-003"]}

    failure_callback({"dag_run": DagRun(), "reason": "task_failure"})
    [mail] = wait_until("the failure alert", lambda: smtp.messages, timeout=30)
    assert mail["Subject"] == "[Airflow] dicom_nightly_import: night 2026-12-04 failed"
    assert mail["To"] == "oncall@hospital.example, imaging@hospital.example"
    assert mail["From"] == "airflow@hospital.example"
    assert "P-003" not in mail.as_string()


def test_a_late_scheduled_night_is_mailed_from_the_triggerer_and_other_runs_are_not(smtp):
    asyncio.run(missed_deadline_callback({"dag_run": {**RUN, "run_type": "backfill"}}, "UTC", "06:00"))
    asyncio.run(missed_deadline_callback({"dag_run": {**RUN, "run_type": "manual"}}, "UTC", "06:00"))
    asyncio.run(missed_deadline_callback({"dag_run": RUN}, "UTC", "06:00"))
    [mail] = wait_until("the deadline alert", lambda: smtp.messages, timeout=30)
    assert mail["Subject"] == "[Airflow] dicom_nightly_import: night 2026-12-03 not finished by 06:00"
    assert json.dumps(RUN["conf"]) not in mail.as_string()


def test_no_recipients_sends_nothing(smtp, monkeypatch):
    monkeypatch.delenv("DICOM_ALERT_EMAILS")
    failure_callback({"dag_run": RUN})
    asyncio.run(missed_deadline_callback({"dag_run": RUN}, "UTC", "06:00"))
    assert smtp.messages == []
