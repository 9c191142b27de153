"""De-identification of one DICOM instance, as ``dicomStores.deidentify`` documents it (``DicomConfig``, v1).

Written from the API reference and DICOM PS3.15 Annex E, not from any client:

- ``MINIMAL_KEEP_LIST_PROFILE``: "keep only tags required to produce valid DICOM". Kept: the SOP common and
  image pixel attributes, the UIDs, the modality; the Type 2 attributes of the patient and study modules stay
  present but empty (a valid instance must carry them); everything else goes, private tags included.
- ``ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE``: PS3.15 Table E.1-1, for the attributes listed below. ``X``
  removes, ``Z`` (and ``D``, which needs a dummy value) empties, ``U`` replaces a UID; private tags are removed.
- ``KEEP_ALL_PROFILE`` (and no profile): every attribute is kept.
- ``keepList`` keeps the listed tags (plus the file meta, SOP Class and the UIDs, without which no instance
  can be stored); ``removeList`` removes the listed tags.
- Unless ``skipIdRedaction``, the Study, Series and SOP Instance UIDs (and the file meta's copy) are replaced:
  the same source UID gets the same new UID within one operation, so the hierarchy holds; a new operation
  draws new UIDs. The pixel data is never touched.

``DEIDENTIFY_TAG_CONTENTS`` and image text redaction other than ``REDACT_NO_TEXT`` need text inspection (OCR,
infoType detection) that the local stack does not have: the request is refused, never approximated.
"""

from __future__ import annotations

import io
import re
import threading
from dataclasses import dataclass, field

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

PROFILES = (
    "TAG_FILTER_PROFILE_UNSPECIFIED",
    "MINIMAL_KEEP_LIST_PROFILE",
    "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE",
    "KEEP_ALL_PROFILE",
    "DEIDENTIFY_TAG_CONTENTS",
)
TEXT_REDACTION_MODES = ("TEXT_REDACTION_MODE_UNSPECIFIED", "REDACT_ALL_TEXT", "REDACT_SENSITIVE_TEXT", "REDACT_NO_TEXT")
LOCALLY_UNSUPPORTED = {
    "DEIDENTIFY_TAG_CONTENTS": "filterProfile DEIDENTIFY_TAG_CONTENTS inspects tag contents for sensitive text "
    "(infoType detection)",
    "REDACT_ALL_TEXT": "image.textRedactionMode REDACT_ALL_TEXT needs OCR of the pixel data",
    "REDACT_SENSITIVE_TEXT": "image.textRedactionMode REDACT_SENSITIVE_TEXT needs OCR of the pixel data",
}

IDENTITY_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_ALWAYS_KEPT = {tag_for_keyword(k) for k in ("SOPClassUID", *IDENTITY_UIDS)}
"""What keep and remove lists never take away: without them no instance can be stored."""

_MINIMAL_KEEP = {
    "SpecificCharacterSet",
    "ImageType",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "InstanceNumber",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "FrameIncrementPointer",
    "Rows",
    "Columns",
    "PixelAspectRatio",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "LossyImageCompression",
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
}
_MINIMAL_EMPTY = {
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
}

# PS3.15 Table E.1-1 (Basic Profile), the attributes this stand-in applies. D is applied as Z (empty).
_BASIC_EMPTY = {
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ContentDate",
    "ContentTime",
    "ContentCreatorName",
}
_BASIC_REMOVE = {
    "PatientAge",
    "PatientBirthTime",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientSize",
    "PatientWeight",
    "EthnicGroup",
    "Occupation",
    "AdditionalPatientHistory",
    "PatientComments",
    "MedicalRecordLocator",
    "MilitaryRank",
    "BranchOfService",
    "CountryOfResidence",
    "RegionOfResidence",
    "ResponsiblePerson",
    "IssuerOfPatientID",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "PhysiciansOfRecord",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "RequestingPhysician",
    "StationName",
    "DeviceSerialNumber",
    "SoftwareVersions",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "AcquisitionDateTime",
    "StudyDescription",
    "SeriesDescription",
    "AdmittingDiagnosesDescription",
    "DerivationDescription",
    "ImageComments",
    "ProtocolName",
    "RequestedProcedureDescription",
    "PerformedProcedureStepDescription",
    "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
    "TextComments",
    "FrameComments",
    "VisitComments",
    "ReferencedPatientSequence",
    "ReferencedStudySequence",
    "ReferencedPerformedProcedureStepSequence",
    "ReferencedImageSequence",
    "SourceImageSequence",
}
_BASIC_UIDS = {
    "FrameOfReferenceUID",
    "SynchronizationFrameOfReferenceUID",
    "InstanceCreatorUID",
    "DeviceUID",
    "ConcatenationUID",
    "DimensionOrganizationUID",
    "IrradiationEventUID",
    "ReferencedSOPInstanceUID",
}
_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")


class ConfigError(ValueError):
    """A ``DeidentifyConfig`` the API refuses; ``field`` names where, ``unsupported`` marks local limits."""

    def __init__(self, field: str, message: str, unsupported: bool = False):
        super().__init__(message)
        self.field = field
        self.unsupported = unsupported


@dataclass
class DicomDeidConfig:
    profile: str = "KEEP_ALL_PROFILE"
    keep: set[int] | None = None
    remove: set[int] = field(default_factory=set)
    skip_id_redaction: bool = False


def _tag(value: object, where: str) -> int:
    if isinstance(value, str) and _HEX_TAG.match(value):
        return int(value, 16)
    tag = tag_for_keyword(value) if isinstance(value, str) else None
    if tag is None:
        raise ConfigError(where, f"{where}: {value!r} is neither a DICOM keyword nor an 8-digit hexadecimal tag")
    return int(tag)


def parse_config(config: object) -> DicomDeidConfig:
    """Read ``DeidentifyConfig`` (its ``dicom`` and ``image`` parts); refuse what is wrong or locally unsupported."""
    if not isinstance(config, dict):
        raise ConfigError("config", "config must be a DeidentifyConfig object")
    unknown = set(config) - {"dicom", "image", "text", "fhir", "useRegionalDataProcessing"}
    if unknown:
        raise ConfigError("config", f"Invalid JSON payload received. Unknown name {sorted(unknown)[0]!r} in config")
    image = config.get("image") or {}
    mode = image.get("textRedactionMode", "TEXT_REDACTION_MODE_UNSPECIFIED")
    if mode not in TEXT_REDACTION_MODES:
        raise ConfigError("config.image.textRedactionMode", f"textRedactionMode {mode!r} is not one of the enum")
    if mode in LOCALLY_UNSUPPORTED:
        raise ConfigError("config.image.textRedactionMode", LOCALLY_UNSUPPORTED[mode], unsupported=True)
    if image.get("customRegexes"):
        raise ConfigError("config.image.customRegexes", "image.customRegexes needs OCR of the pixel data", True)
    dicom = config.get("dicom") or {}
    unknown = set(dicom) - {"filterProfile", "keepList", "removeList", "skipIdRedaction"}
    if unknown:
        raise ConfigError("config.dicom", f"Invalid JSON payload received. Unknown name {sorted(unknown)[0]!r}")
    chosen = [k for k in ("filterProfile", "keepList", "removeList") if k in dicom]
    if len(chosen) > 1:
        raise ConfigError(
            "config.dicom", f"only one of filterProfile, keepList and removeList may be set, not {chosen}"
        )
    out = DicomDeidConfig(skip_id_redaction=bool(dicom.get("skipIdRedaction", False)))
    profile = dicom.get("filterProfile", "TAG_FILTER_PROFILE_UNSPECIFIED")
    if profile not in PROFILES:
        raise ConfigError("config.dicom.filterProfile", f"filterProfile {profile!r} is not one of {PROFILES}")
    if profile in LOCALLY_UNSUPPORTED:
        raise ConfigError("config.dicom.filterProfile", LOCALLY_UNSUPPORTED[profile], unsupported=True)
    out.profile = "KEEP_ALL_PROFILE" if profile == "TAG_FILTER_PROFILE_UNSPECIFIED" else profile
    for key in ("keepList", "removeList"):
        if key in dicom:
            tags = (dicom[key] or {}).get("tags") or []
            parsed = {_tag(t, f"config.dicom.{key}.tags") for t in tags}
            if key == "keepList":
                out.keep = parsed
            else:
                out.remove = parsed
    return out


class UidMap:
    """One operation's replacement UIDs: a source UID always maps to the same new one, from any thread."""

    def __init__(self) -> None:
        self._map: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, uid: str) -> str:
        with self._lock:
            return self._map.setdefault(uid, generate_uid())


def _empty(ds: Dataset, keyword: str) -> None:
    if keyword in ds:
        ds[keyword].value = [] if ds[keyword].VR == "SQ" else ""


def _replace_uid(ds: Dataset, keyword: str, uids: UidMap) -> None:
    if keyword not in ds:
        return
    value = ds[keyword].value
    if isinstance(value, (list, pydicom.multival.MultiValue)):
        ds[keyword].value = [uids(str(v)) for v in value]
    elif value:
        ds[keyword].value = uids(str(value))


def deidentify(data: bytes, cfg: DicomDeidConfig, uids: UidMap) -> bytes:
    """The de-identified instance, in the same transfer syntax, pixel data byte for byte."""
    ds = pydicom.dcmread(io.BytesIO(data))
    if cfg.profile == "MINIMAL_KEEP_LIST_PROFILE":
        keep = {tag_for_keyword(k) for k in _MINIMAL_KEEP | _MINIMAL_EMPTY}
        for elem in list(ds):
            if elem.tag not in keep:
                del ds[elem.tag]
        for keyword in _MINIMAL_EMPTY:
            if keyword in ds:
                _empty(ds, keyword)
            else:
                setattr(ds, keyword, "")
    elif cfg.profile == "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE":
        ds.remove_private_tags()
        for keyword in _BASIC_REMOVE:
            if keyword in ds:
                del ds[keyword]
        for keyword in _BASIC_EMPTY:
            _empty(ds, keyword)
        if not cfg.skip_id_redaction:
            for keyword in _BASIC_UIDS:
                _replace_uid(ds, keyword, uids)
    if cfg.keep is not None:
        for elem in list(ds):
            if elem.tag not in cfg.keep and elem.tag not in _ALWAYS_KEPT:
                del ds[elem.tag]
    for tag in cfg.remove:
        if tag in ds and tag not in _ALWAYS_KEPT:
            del ds[tag]
    if not cfg.skip_id_redaction:
        for keyword in IDENTITY_UIDS:
            _replace_uid(ds, keyword, uids)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
