from __future__ import annotations

import json
import logging

from worker.observability import JsonFormatter


def _line(formatter: JsonFormatter, message: str, **extra: object) -> dict:
    record = logging.LogRecord("gvw", logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return json.loads(formatter.format(record))


def test_context_fields_travel_as_json() -> None:
    line = _line(JsonFormatter(), "job committed", job_id="a-1", task="detect")
    assert line["message"] == "job committed"
    assert (line["job_id"], line["task"], line["level"]) == ("a-1", "detect", "INFO")


def test_the_api_key_never_reaches_a_log_line() -> None:
    line = _line(
        JsonFormatter(secrets=("AIzaSECRET",)),
        "calling with key AIzaSECRET",
        url="https://x/?key=AIzaSECRET",
    )
    assert "AIzaSECRET" not in json.dumps(line)


def test_bytes_are_summarised_not_logged() -> None:
    line = _line(JsonFormatter(), "uploaded", data=b"\x89PNG" + b"\0" * 5000)
    assert line["data"] == "<5004 bytes>"
