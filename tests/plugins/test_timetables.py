"""The nightly import's timetable: scheduled nights begin at the first night; Airflow can store and read it."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest
from airflow.timetables.base import DataInterval, TimeRestriction

from dicom_pipelines.timetables import EARLIEST_NIGHT, NightlyImportTimetable

FIRST = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def nightly() -> NightlyImportTimetable:
    return NightlyImportTimetable("0 0 * * *", "UTC", first_night=FIRST)


def test_catchup_begins_at_the_first_night_not_at_the_dags_start_date():
    info = nightly().next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(EARLIEST_NIGHT, None, True)
    )
    assert info is not None and info.data_interval.start == FIRST
    assert info.data_interval.end == FIRST + dt.timedelta(days=1)


def test_a_later_start_date_still_wins():
    later = pendulum.datetime(2026, 11, 20, tz="UTC")
    info = nightly().next_dagrun_info(last_automated_data_interval=None, restriction=TimeRestriction(later, None, True))
    assert info is not None and info.data_interval.start == later


def test_a_backfill_gets_the_nights_it_asks_for_older_ones_too():
    older = pendulum.datetime(2026, 10, 1, tz="UTC")
    info = nightly().next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(older, pendulum.datetime(2026, 10, 3, tz="UTC"), True),
    )
    assert info is not None and info.data_interval.start == older


def test_the_night_after_the_last_one():
    last = DataInterval(pendulum.datetime(2026, 11, 3, tz="UTC"), pendulum.datetime(2026, 11, 4, tz="UTC"))
    info = nightly().next_dagrun_info(
        last_automated_data_interval=last, restriction=TimeRestriction(EARLIEST_NIGHT, None, True)
    )
    assert info is not None and info.data_interval.start == last.end


def test_serialize_round_trip_and_summary():
    timetable = nightly()
    again = NightlyImportTimetable.deserialize(timetable.serialize())
    assert again == timetable and again.first_night == FIRST
    assert again != NightlyImportTimetable("0 0 * * *", "UTC", first_night=FIRST + dt.timedelta(days=1))
    assert timetable.summary == "0 0 * * *, from 2026-11-01"


def test_a_first_night_without_a_time_zone_is_refused():
    with pytest.raises(ValueError, match="must carry a time zone"):
        NightlyImportTimetable("0 0 * * *", "UTC", first_night=dt.datetime(2026, 11, 1))


def test_with_no_first_night_the_scheduler_starts_at_the_latest_night_not_in_1970():
    """A first deploy that set no DICOM_IMPORT_START_DATE: the DAG has catchup off, and the first scheduled run is
    the latest complete night, never a replay from the DAG's start_date."""
    timetable = NightlyImportTimetable("0 0 * * *", "UTC")
    info = timetable.next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(EARLIEST_NIGHT, None, False)
    )
    assert info is not None and info.data_interval.start >= pendulum.now("UTC") - dt.timedelta(days=2)
    assert NightlyImportTimetable.deserialize(timetable.serialize()) == timetable
    assert timetable.summary == "0 0 * * *"
