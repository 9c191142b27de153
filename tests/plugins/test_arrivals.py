"""Which files an arrival run imports, from asset events shaped as Airflow stores the PubsubPullTrigger's."""

from __future__ import annotations

import pytest

from dicom_pipelines.arrivals import (
    ArrivedObject,
    arrivals_from_events,
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
