"""Where a job's records live: `{output}/{job_id}/result.json | error.json`.

Shared by the pipeline (which writes them) and every reader (the client library, the
CLI, the bridge), and light to import.
"""

from __future__ import annotations

from worker.settings import Settings
from worker.storage import join_uri

RESULT_NAME = "result.json"
ERROR_NAME = "error.json"


def job_folder(job_id: str, output: str | None, settings: Settings) -> str:
    return join_uri(output or settings.gvw_results_uri, job_id)


def result_uri(job_id: str, output: str | None, settings: Settings) -> str:
    return join_uri(job_folder(job_id, output, settings), RESULT_NAME)


def error_uri(job_id: str, output: str | None, settings: Settings) -> str:
    return join_uri(job_folder(job_id, output, settings), ERROR_NAME)
