"""Local stand-ins for Google APIs (Cloud Healthcare DICOM, BigQuery), reached over HTTP only."""
