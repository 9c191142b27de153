"""Which files a run of ``dicom_arrival_import`` imports: read from the Cloud Storage notifications its asset events
carry, with no I/O.

The events come from the Google provider's ``PubsubPullTrigger`` (through common-messaging's
``MessageQueueTrigger``): each is one pull, which Airflow stores as the asset event's extra
``{"from_trigger": true, "payload": {"status": "success", "message": [ReceivedMessage, ...]}}``. A Cloud
Storage notification names its object in the message's attributes (``bucketId``, ``objectId``,
``objectGeneration``, ``eventType``; https://cloud.google.com/storage/docs/pubsub-notifications#attributes), whatever
the payload format, so only the attributes are read: the payload may be ``NONE``.

The trigger does not acknowledge what it pulls: the run does, once its files are imported (or refused for good), so
a triggerer or a worker that dies on the way loses nothing; Pub/Sub delivers those messages again after the
subscription's acknowledgement deadline. Pub/Sub delivers at least once, and a file can be finalized twice (an
overwrite). One object generation is imported
once per run whatever the number of messages naming it; a redelivery in a later run is recognized by the hook, from
the marker an earlier run left on the object (:data:`IMPORTED_MARKER`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dicom_pipelines.validation import wildcard_regex

FINALIZE = "OBJECT_FINALIZE"
IMPORTED_MARKER = "dicom-imported-crc32c"
"""Custom metadata key an arrival run sets on each source object it imported: the CRC32C of the content it imported.
The nightly import counts the objects whose content carries it; a redelivered message for such an object imports
nothing. The content's checksum, not the generation: Cloud Storage keeps an object's generation when its metadata
changes (only the metageneration moves), but the local stack's fake-gcs-server gives it a new one."""
STAGING_FOLDER = "_dicom_arrivals"
"""Default folder, in the source bucket, of each run's staged copies (``<folder>/<run>/<bucket>/<object>``)."""


@dataclass(frozen=True, order=True)
class ArrivedObject:
    bucket: str
    name: str
    generation: int

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "name": self.name, "generation": self.generation}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> ArrivedObject:
        return cls(str(value["bucket"]), str(value["name"]), int(value["generation"]))


@dataclass
class ArrivalBatch:
    """What one run's events name: the distinct objects to import, and counts of everything else."""

    objects: list[ArrivedObject] = field(default_factory=list)
    messages: int = 0
    duplicates: int = 0
    """Messages naming an object generation another message of this run named already."""
    ignored: int = 0
    """Messages for other events (deletes, metadata updates), other buckets or folders, or non-matching names."""
    ack_ids: list[str] = field(default_factory=list)
    """Every message's ack id: the run acknowledges them once its files are imported or refused, not before."""

    def describe(self) -> str:
        return (
            f"{self.messages} notifications: {len(self.objects)} new files to import, {self.duplicates} duplicate "
            f"notifications of the same files, {self.ignored} ignored (not a new file matching the source pattern)"
        )


UNCONSUMED_LOOKBACK = 100
"""How many of the asset's latest events a run reads to find those no run consumed (:func:`events_of_run`)."""


def events_of_run(triggering: Iterable[Any], recent: Iterable[Any]) -> list[Mapping[str, Any] | None]:
    """The extras of the events a run imports: those that triggered it, and any recent one that no run consumed.

    Airflow 3.3 can leave events unconsumed: an event that comes while the DAG is at ``max_active_runs`` and after
    the first one queued is left out of the run the queue starts, and waits for a later event
    (apache/airflow#56050). A run therefore also takes the asset's recent events that no run consumed; one that
    the next run takes again costs nothing, its files being marked by then. ``triggering``: the run's
    ``triggering_asset_events`` (``timestamp``, ``extra``; no id); ``recent``: Airflow's asset events
    (``timestamp``, ``created_dagruns``, ``extra``), newest first. The run's own events are consumed by the run, so
    ``created_dagruns`` leaves them out already; the timestamps keep them out even if it did not.
    """
    triggering = list(triggering)
    taken = {event.timestamp for event in triggering}
    unconsumed = [e for e in recent if e.timestamp not in taken and not e.created_dagruns]
    return [event.extra for event in [*triggering, *reversed(unconsumed)]]


def source_matcher(bucket: str, prefix: str | None, pattern: str, staging_folder: str) -> re.Pattern[str]:
    """The object names a run imports: under ``prefix`` (any depth of day folders), matching ``pattern`` at the
    end, and never a run's own staged copy."""
    folder = f"{prefix.strip('/')}/" if prefix and prefix.strip("/") else ""
    tail = wildcard_regex(pattern).pattern[1:-1]  # without its anchors
    staging = re.escape(staging_folder.strip("/") + "/")
    return re.compile(rf"^(?!{staging}){re.escape(folder)}(?:.*/)?{tail}$", re.DOTALL)


def arrivals_from_events(
    events: Iterable[Mapping[str, Any] | None],
    *,
    bucket: str,
    prefix: str | None,
    pattern: str,
    staging_folder: str = STAGING_FOLDER,
) -> ArrivalBatch:
    """The files a run imports, from its asset events' extras, in the order they arrived."""
    matches = source_matcher(bucket, prefix, pattern, staging_folder).match
    batch, seen = ArrivalBatch(), set()
    for extra in events:
        payload = (extra or {}).get("payload") or {}
        for received in payload.get("message") or []:
            batch.messages += 1
            if received.get("ack_id"):
                batch.ack_ids.append(str(received["ack_id"]))
            attributes = (received.get("message") or {}).get("attributes") or {}
            generation = str(attributes.get("objectGeneration") or "")
            name = str(attributes.get("objectId") or "")
            if (
                attributes.get("eventType") != FINALIZE
                or attributes.get("bucketId") != bucket
                or not generation.isdigit()
                or not matches(name)
            ):
                batch.ignored += 1
                continue
            arrived = ArrivedObject(bucket, name, int(generation))
            if arrived in seen:
                batch.duplicates += 1
                continue
            seen.add(arrived)
            batch.objects.append(arrived)
    return batch


def staged_name(staging_folder: str, run_key: str, arrived: ArrivedObject) -> str:
    """Where a run stages its copy of ``arrived``, in the staging bucket: the source's bucket and path are kept, so
    an error about the copy names the original (:func:`original_uri`)."""
    return f"{staging_folder.strip('/')}/{run_key}/{arrived.bucket}/{arrived.name}"


def original_uri(staged_uri: str, staging_bucket: str, staging_folder: str, run_key: str) -> str:
    """The source file a staged copy was made from; any other URI unchanged."""
    head = f"gs://{staging_bucket}/{staging_folder.strip('/')}/{run_key}/"
    return "gs://" + staged_uri.removeprefix(head) if staged_uri.startswith(head) else staged_uri


def run_key(run_id: str) -> str:
    """A run id as one path segment without wildcard characters (``dicomStores.import`` reads ``*`` and ``?``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("_") or "run"
