"""A local Cloud Logging API (v2, entries.write and entries.list)."""
