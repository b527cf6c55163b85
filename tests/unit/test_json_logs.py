from __future__ import annotations

import json
import logging

import pytest

from worker.observability import (
    SIGNED_URL_MARK,
    JsonFormatter,
    OutageWaitFilter,
    TextFormatter,
)


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


def test_text_lines_read_like_a_sentence_with_the_job_first_and_no_key() -> None:
    import logging

    from worker.observability import TextFormatter

    record = logging.LogRecord(
        "worker.pipeline.flow", logging.INFO, "p.py", 1, "job committed", (), None
    )
    record.task = "detect"
    record.job_id = "a-1"
    record.data = b"\x89PNG" + b"\0" * 5000
    record.key = "AIzaSECRET"
    line = TextFormatter(secrets=("AIzaSECRET",)).format(record)
    assert " INFO    worker.pipeline.flow: job committed  [job_id=a-1 " in line
    assert "task=detect" in line and "AIzaSECRET" not in line
    assert "\\x00" not in line and "PNG" not in line  # bytes never reach a log line


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["gvw", "worker", "--loglevel", "warning"], "WARNING"),
        (["celery", "-A", "worker", "worker", "-l", "debug"], "DEBUG"),
        (["celery", "worker", "--loglevel=error"], "ERROR"),
        (["celery", "worker", "-lINFO"], "INFO"),
        (["gvw", "worker", "--concurrency", "4", "--logfile", "x.log"], None),
    ],
)
def test_the_command_lines_loglevel_is_found(argv: list[str], level: str | None) -> None:
    from worker.queue.app import loglevel_flag

    assert loglevel_flag(argv) == level


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/inbox/a.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab12",
        "https://b.s3.amazonaws.com/a.jpg?AWSAccessKeyId=AKIA&Signature=c2ln&Expires=1",
        "https://storage.googleapis.com/b/a.jpg?X-Goog-Algorithm=x&X-Goog-Signature=ff",
        "https://acct.blob.core.windows.net/c/a.jpg?sv=2024&sig=c2ln",
    ],
)
def test_signed_urls_never_reach_a_log_line(url: str) -> None:
    record = logging.LogRecord(
        "gvw", logging.WARNING, __file__, 1, f"fetch of {url} failed", (), None
    )
    record.detail = f'{{"uri": "{url}"}}'
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert "sig" not in line.lower().replace("signed", ""), line
        assert SIGNED_URL_MARK in line


def _record(logger: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(logger, level, "c.py", 1, message, (), None)


def test_a_broker_outage_says_it_cannot_connect_once_not_every_retry() -> None:
    keep = OutageWaitFilter()
    cannot = "consumer: Cannot connect to redis://127.0.0.1:6379/0: Error 111.\nTrying again in 2.00 seconds... (%d/100)"
    lines = [
        _record(
            "celery.worker.consumer.consumer",
            logging.WARNING,
            "consumer: Connection to broker lost.",
        ),
        *(
            _record("celery.worker.consumer.consumer", logging.ERROR, cannot % n)
            for n in range(1, 6)
        ),
        _record(
            "celery.worker.consumer.connection",
            logging.INFO,
            "Connected to redis://127.0.0.1:6379/0",
        ),
        _record("celery.worker.consumer.consumer", logging.ERROR, cannot % 1),  # the next outage
        _record("celery.worker.consumer.consumer", logging.ERROR, cannot % 2),
    ]
    lines[1:1] = [  # after the loss: dropped
        _record(
            "kombu.transport.virtual.base", logging.INFO, "Restoring 3 unacknowledged message(s)"
        ),
        _record(
            "celery.worker.consumer.consumer",
            logging.INFO,
            "Skipping prefetch count reduction after connection restart because per-consumer QoS",
        ),
    ]
    said = [r.getMessage()[-7:] for r in lines if keep.filter(r)]
    # the outage's start, its first failed connection, the return, the next outage's first
    assert said == ["r lost.", "(1/100)", ":6379/0", "(1/100)"]
    # kombu's line at a shutdown, with the broker there, stays
    assert keep.filter(
        _record(
            "kombu.transport.virtual.base", logging.INFO, "Restoring 1 unacknowledged message(s)"
        )
    )
