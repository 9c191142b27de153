"""Local BigQuery (REST subset on DuckDB + sqlglot): ``python -m emulator.bigquery --help``."""
