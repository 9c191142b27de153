"""Which files an arrival run imports, from asset events shaped as Airflow stores the PubsubPullTrigger's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dicom_pipelines.arrivals import (
    ArrivedObject,
    arrivals_from_events,
    events_of_run,
    original_uri,
    run_key,
    source_matcher,
    staged_name,
)


def notification(name: str, generation: int = 1, bucket: str = "src", event: str = "OBJECT_FINALIZE") -> dict:
    """One ReceivedMessage as ``ReceivedMessage.to_dict`` gives it; the attributes Cloud Storage sets."""
    return {
        "ack_id": "ack",
        "delivery_attempt": 0,
        "message": {
            "data": "",
            "message_id": "1",
            "publish_time": "2026-12-05T10:00:00Z",
            "ordering_key": "",
            "attributes": {
                "bucketId": bucket,
                "objectId": name,
                "objectGeneration": str(generation),
                "eventType": event,
                "payloadFormat": "NONE",
            },
        },
    }


def event(*messages: dict) -> dict:
    """An asset event's extra, as ``Trigger.submit_event`` stores a trigger's event."""
    return {"from_trigger": True, "payload": {"status": "success", "message": list(messages)}}


def test_a_run_imports_each_new_file_once_and_counts_the_rest():
    batch = arrivals_from_events(
        [
            event(notification("incoming/2026-12-05/s1/a.dcm"), notification("incoming/2026-12-05/s1/b.dcm")),
            event(
                notification("incoming/2026-12-05/s1/a.dcm"),  # redelivered within the run
                notification("incoming/2026-12-05/s1/a.dcm", generation=2),  # overwritten: a new generation
                notification("incoming/2026-12-05/s1/c.dcm", event="OBJECT_DELETE"),
                notification("incoming/2026-12-05/notes.txt"),
                notification("elsewhere/x.dcm"),
                notification("incoming/2026-12-05/s1/d.dcm", bucket="other"),
                notification("_dicom_arrivals/run/src/incoming/2026-12-05/s1/a.dcm"),
            ),
            None,
        ],
        bucket="src",
        prefix="incoming",
        pattern="**.dcm",
    )
    assert [(o.name, o.generation) for o in batch.objects] == [
        ("incoming/2026-12-05/s1/a.dcm", 1),
        ("incoming/2026-12-05/s1/b.dcm", 1),
        ("incoming/2026-12-05/s1/a.dcm", 2),
    ]
    assert (batch.messages, batch.duplicates, batch.ignored) == (9, 1, 5)
    assert batch.describe().startswith("9 notifications: 3 new files to import, 1 duplicate")


@pytest.mark.parametrize(
    ("prefix", "pattern", "name", "matches"),
    [
        ("incoming", "**.dcm", "incoming/2026-12-05/a/b/c.dcm", True),
        ("incoming/", "*.dcm", "incoming/2026-12-05/c.dcm", True),
        ("incoming", "**.dcm", "incomingX/2026-12-05/c.dcm", False),
        ("incoming", "**.dcm", "incoming/2026-12-05/c.DCM", False),
        ("", "**", "anything/at/all", True),
        (None, "**", "_dicom_arrivals/run/src/a.dcm", False),
        ("incoming", "IM_????", "incoming/2026-12-05/IM_0001", True),
        ("incoming", "IM_????", "incoming/2026-12-05/IM_01", False),
    ],
)
def test_the_source_folder_and_pattern_decide_what_is_an_arrival(prefix, pattern, name, matches):
    assert bool(source_matcher("src", prefix, pattern, "_dicom_arrivals").match(name)) is matches


def test_a_staged_copy_keeps_the_source_path_and_errors_name_the_original():
    arrived = ArrivedObject("src", "incoming/2026-12-05/s1/a.dcm", 7)
    key = run_key("asset_triggered__2026-12-05T10:00:00.123+00:00_AbC*?")
    assert key == "asset_triggered__2026-12-05T10_00_00.123_00_00_AbC"
    name = staged_name("stage/", key, arrived)
    assert name == f"stage/{key}/src/incoming/2026-12-05/s1/a.dcm"
    assert original_uri(f"gs://work/{name}", "work", "stage", key) == arrived.uri
    assert original_uri("gs://work/other/a.dcm", "work", "stage", key) == "gs://work/other/a.dcm"
    assert ArrivedObject.from_dict(arrived.to_dict()) == arrived


def test_a_run_also_takes_recent_events_that_no_run_consumed():
    """apache/airflow#56050: an event left out of every run is taken by the next run, after those that triggered
    it, oldest first; an event another run consumed, or this run's own, is not taken twice."""

    def asset_event(id_: int, consumed: bool = False) -> SimpleNamespace:
        return SimpleNamespace(timestamp=id_, created_dagruns=[{"run_id": "r"}] if consumed else [], extra={"id": id_})

    triggering = [SimpleNamespace(timestamp=5, extra={"id": 5})]  # as triggering_asset_events has it: no id
    recent = [asset_event(7), asset_event(6), asset_event(5), asset_event(4, consumed=True), asset_event(3)]
    assert [e["id"] for e in events_of_run(triggering, recent)] == [5, 3, 6, 7]


def test_every_pulled_message_is_acknowledged_by_the_run_whatever_it_names():
    batch = arrivals_from_events(
        [event({**notification("incoming/a.dcm"), "ack_id": "a1"}, {**notification("x.txt"), "ack_id": "a2"})],
        bucket="src",
        prefix="incoming",
        pattern="**.dcm",
    )
    assert batch.ack_ids == ["a1", "a2"] and len(batch.objects) == 1
