"""Local Cloud Healthcare API (DICOM subset): ``python -m emulator.healthcare --help``."""
