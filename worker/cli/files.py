"""Operator views of the File API uploads: what the cache holds, and purging uploads.

Used by `gvw files list | purge`. Only this project's uploads are touched: files whose
display name carries the `gvw-` prefix the worker gives them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from worker.fleet.file_cache import CachedFile, FileCache
from worker.gemini.port import FilesApi
from worker.gemini.records import RemoteFile

DISPLAY_PREFIX = "gvw-"


@dataclass(frozen=True)
class PurgeReport:
    deleted: list[str]
    kept: int
    failed: list[str]


def cached_files(cache: FileCache) -> list[CachedFile]:
    return sorted(cache.entries(), key=lambda e: e.expires_at)


def purge(
    gemini: FilesApi, cache: FileCache, *, expired_only: bool, margin_s: float
) -> PurgeReport:
    """Delete this project's uploads from Gemini (and their cache entries).

    `expired_only`: only files the cache no longer hands out, those within `margin_s` of
    Gemini's own deletion; they still count against the project's 20 GB until then.
    """
    now = time.time()
    deleted: list[str] = []
    failed: list[str] = []
    kept = 0
    for file in _our_files(gemini):
        expires_at = file.expires_at if file.expires_at is not None else now
        if expired_only and expires_at - margin_s > now:
            kept += 1
            continue
        name = file.name
        try:
            gemini.delete_file(name)
        except Exception:
            failed.append(name)
            continue
        deleted.append(name)
    if not expired_only:
        for entry in list(cache.entries()):
            cache.evict(entry.sha256)
    return PurgeReport(deleted=deleted, kept=kept, failed=failed)


def _our_files(gemini: FilesApi) -> Iterator[RemoteFile]:
    for file in gemini.list_files():
        if file.display_name.startswith(DISPLAY_PREFIX):
            yield file
