"""Exports (docs/exports.md): a run's records as a Parquet dataset.

rows.py     a record -> one typed row; the versioned schema
writer.py   records -> parts of a dataset: streamed, incremental, idempotent
"""
