"""A run's records in storage (`worker.runs.records`): read and written through the one
store port, by producers (definition, members), workers (summary) and readers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tasks.errors import InputNotFound
from worker.runs.records import (
    RUN_NAME,
    Member,
    RunDefinition,
    RunSummary,
    members_uri,
    run_folder,
    run_uri,
    runs_folder,
    summary_uri,
)
from worker.storage import join_uri
from worker.storage.port import ObjectStore

JSON_TYPE = "application/json"
JSONL_TYPE = "application/x-ndjson"
# run.json and summary.json are a few KiB; a members part holds `MEMBERS_PER_PART` lines
RUN_RECORD_MAX_BYTES = 4_000_000
MEMBERS_PART_MAX_BYTES = 64_000_000
MEMBERS_PER_PART = 5_000


class RunStore:
    def __init__(self, stores: ObjectStore) -> None:
        self._stores = stores

    @property
    def stores(self) -> ObjectStore:
        return self._stores

    def create(self, definition: RunDefinition) -> bool:
        """Write run.json once; False when a run of that id exists already."""
        return self._stores.create_exclusive(
            run_uri(definition.results, definition.run_id),
            definition.to_json_bytes(),
            content_type=JSON_TYPE,
        )

    def update(self, definition: RunDefinition) -> None:
        self._stores.put_bytes(
            run_uri(definition.results, definition.run_id),
            definition.to_json_bytes(),
            content_type=JSON_TYPE,
        )

    def definition(self, results: str, run_id: str) -> RunDefinition | None:
        data = self._read(run_uri(results, run_id), RUN_RECORD_MAX_BYTES)
        return RunDefinition.model_validate_json(data) if data is not None else None

    def write_members(
        self, results: str, run_id: str, part: int, members: Sequence[Member]
    ) -> None:
        lines = "".join(m.model_dump_json() + "\n" for m in members)
        self._stores.put_bytes(
            members_uri(results, run_id, part), lines.encode(), content_type=JSONL_TYPE
        )

    def members(self, results: str, run_id: str) -> Iterator[Member]:
        """Every member, part by part: one read per `MEMBERS_PER_PART` jobs."""
        folder = join_uri(run_folder(results, run_id), "members") + "/"
        for uri in self._stores.list_prefix(folder):
            if not uri.endswith(".jsonl"):
                continue
            data = self._stores.get_bytes(uri, max_bytes=MEMBERS_PART_MAX_BYTES)
            for line in data.decode().splitlines():
                if line.strip():
                    yield Member.model_validate_json(line)

    def member_parts(self, results: str, run_id: str) -> int:
        folder = join_uri(run_folder(results, run_id), "members") + "/"
        return sum(1 for uri in self._stores.list_prefix(folder) if uri.endswith(".jsonl"))

    def write_summary(self, results: str, summary: RunSummary) -> None:
        self._stores.put_bytes(
            summary_uri(results, summary.run_id), summary.to_json_bytes(), content_type=JSON_TYPE
        )

    def summary(self, results: str, run_id: str) -> RunSummary | None:
        data = self._read(summary_uri(results, run_id), RUN_RECORD_MAX_BYTES)
        return RunSummary.model_validate_json(data) if data is not None else None

    def run_ids(self, results: str) -> list[str]:
        """The runs under a results folder (one listing of its `_runs/`)."""
        base = runs_folder(results) + "/"
        found = []
        for uri in self._stores.list_prefix(base):
            run_id, _, name = uri[len(base) :].partition("/")
            if name == RUN_NAME:
                found.append(run_id)
        return found

    def _read(self, uri: str, max_bytes: int) -> bytes | None:
        try:
            return self._stores.get_bytes(uri, max_bytes=max_bytes)
        except InputNotFound:
            return None
