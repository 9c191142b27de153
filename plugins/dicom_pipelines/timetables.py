"""The nightly import's schedule: nights on a cron from a first night on, and a run of any night started by hand.

Airflow creates no task instance for a run whose logical date is before the DAG's ``start_date``, unless the
run is a backfill: a run of an older night triggered through the REST API would turn green with nothing
imported and nothing said. So the DAG's ``start_date`` is :data:`EARLIEST_NIGHT`, and this timetable, not the
``start_date``, says where the scheduler's catchup begins.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pendulum
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction
from airflow.timetables.interval import CronDataIntervalTimetable

EARLIEST_NIGHT = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
"""The nightly import DAG's ``start_date``: no night a user can ask for is before it."""


class NightlyImportTimetable(CronDataIntervalTimetable):
    """A cron data-interval timetable whose scheduled runs (and catchup) begin at ``first_night``.

    The scheduler asks for the next run with an open-ended restriction (the DAG has no ``end_date``); that one
    starts at ``first_night`` at the earliest. A backfill asks for the runs of a bounded range, which it gets as
    asked, older nights included. A run of an older night started by hand gets its tasks like any other.
    With no ``first_night`` (a first deploy that asked for no catch-up, ``catchup=False``), the scheduler starts at
    the latest night.
    """

    def __init__(self, cron: str, timezone: Any, first_night: dt.datetime | None = None) -> None:
        super().__init__(cron, timezone)
        if first_night is not None and first_night.tzinfo is None:
            raise ValueError(f"first_night {first_night.isoformat()} must carry a time zone")
        self.first_night = None if first_night is None else first_night.astimezone(dt.UTC)

    @property
    def summary(self) -> str:
        return self._expression if self.first_night is None else f"{self._expression}, from {self.first_night:%Y-%m-%d}"

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None, restriction: TimeRestriction
    ) -> DagRunInfo | None:
        if restriction.latest is None and self.first_night is not None:
            first = pendulum.instance(self.first_night)
            earliest = max(restriction.earliest or first, first)
            restriction = TimeRestriction(earliest, None, restriction.catchup)
        return super().next_dagrun_info(
            last_automated_data_interval=last_automated_data_interval, restriction=restriction
        )

    def serialize(self) -> dict[str, Any]:
        first = None if self.first_night is None else self.first_night.isoformat()
        return {**super().serialize(), "first_night": first}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> NightlyImportTimetable:
        base = CronDataIntervalTimetable.deserialize(data)
        assert isinstance(base, CronDataIntervalTimetable)
        first = data.get("first_night")
        return cls(base._expression, base._timezone, None if first is None else dt.datetime.fromisoformat(first))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, NightlyImportTimetable)
            and super().__eq__(other)
            and self.first_night == other.first_night
        )

    def __hash__(self) -> int:
        return hash((self._expression, self._timezone, self.first_night))
