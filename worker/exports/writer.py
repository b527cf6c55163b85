"""Records to a Parquet dataset: streamed, in parts, incremental and idempotent.

A dataset is a folder of parts (`part-{utc}-{8 hex}.parquet`), each written whole in one
store write (a PUT on S3, a rename on a file system): a reader never sees half a part, and
an export that dies leaves the parts it finished. Which records a dataset holds is read
from its parts themselves (their `record_uri` column, nothing else): a second export adds
only records the parts do not hold, and one that died mid-way is completed, not doubled.

Memory stays bounded whatever the number of records: rows are buffered `ROW_GROUP_ROWS` at
a time and written as row groups into a local temporary file, which becomes a part every
`PART_ROWS` rows.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from worker.exports.rows import SCHEMA, row_of
from worker.storage import join_uri
from worker.storage.port import ObjectStore

ROW_GROUP_ROWS = 10_000
PART_ROWS = 200_000
PARQUET_TYPE = "application/vnd.apache.parquet"
# a record is read to be exported: none is near this (result.json is bounded)
RECORD_MAX_BYTES = 64_000_000
PART_MAX_BYTES = 4_000_000_000


@dataclass
class ExportSummary:
    folder: str
    added: int = 0
    already: int = 0
    parts_written: int = 0


def exported_records(stores: ObjectStore, folder: str) -> set[str]:
    """The record URIs the dataset's parts hold (one column of each part)."""
    held: set[str] = set()
    for uri in stores.list_prefix(folder.rstrip("/") + "/"):
        if not uri.endswith(".parquet"):
            continue
        data = stores.get_bytes(uri, max_bytes=PART_MAX_BYTES)
        column = pq.read_table(pa.BufferReader(data), columns=["record_uri"]).column(0)
        held.update(v for v in column.to_pylist() if v)
    return held


def export_records(
    stores: ObjectStore,
    record_uris: Iterable[str],
    folder: str,
    *,
    progress: Callable[[int], None] | None = None,
    part_rows: int = PART_ROWS,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> ExportSummary:
    summary = ExportSummary(folder=folder)
    held = exported_records(stores, folder)
    part = _Part(stores, folder, row_group_rows)
    try:
        for uri in record_uris:
            if uri in held:
                summary.already += 1
                continue
            record = json.loads(stores.get_bytes(uri, max_bytes=RECORD_MAX_BYTES))
            part.add(row_of(record, uri))
            summary.added += 1
            if progress is not None:
                progress(summary.added)
            if part.rows >= part_rows:
                summary.parts_written += part.finish()
                part.discard()
                part = _Part(stores, folder, row_group_rows)
        summary.parts_written += part.finish()
    finally:
        part.discard()
    return summary


class _Part:
    """One part being written: row groups into a local temporary file, then one store
    write of the whole file."""

    def __init__(self, stores: ObjectStore, folder: str, row_group_rows: int) -> None:
        self._stores = stores
        self._folder = folder
        self._group_rows = row_group_rows
        self._buffer: list[dict[str, object]] = []
        self.rows = 0
        handle, self._path = tempfile.mkstemp(suffix=".parquet", prefix="gvw-export-")
        os.close(handle)
        self._writer: pq.ParquetWriter | None = None

    def add(self, row: dict[str, object]) -> None:
        self._buffer.append(row)
        self.rows += 1
        if len(self._buffer) >= self._group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._path, SCHEMA, compression="zstd")
        self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=SCHEMA))
        self._buffer = []

    def finish(self) -> int:
        """Write the part to the store; 1 when there was one, 0 when it held nothing."""
        self._flush()
        if self._writer is None:
            return 0
        self._writer.close()
        self._writer = None
        name = f"part-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(4)}"
        with open(self._path, "rb") as handle:
            data = handle.read()
        self._stores.put_bytes(
            join_uri(self._folder, f"{name}.parquet"), data, content_type=PARQUET_TYPE
        )
        return 1

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if os.path.exists(self._path):
            os.unlink(self._path)
