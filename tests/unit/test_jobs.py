"""Bad jobs are refused with a message naming the field; inputs are checked before reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import InputNotAllowed, InvalidJob
from worker.contract.jobs import parse_job
from worker.storage.uris import check_allowed

GOOD = {"job_id": "invoice-0042", "task": "detect", "images": ["s3://inbox/photos/a.jpg"]}


def _job(**changes: object) -> dict:
    job = dict(GOOD)
    for key, value in changes.items():
        if value is _DROP:
            job.pop(key, None)
        else:
            job[key] = value
    return job


_DROP = object()


def test_contract_example_job_is_accepted() -> None:
    job = parse_job(
        {
            "job_id": "invoice-0042",
            "task": "detect",
            "images": ["s3://inbox/photos/a.jpg"],
            "prompt": "the cupcakes, labelled by topping",
            "model": "gemini-2.5-flash",
            "output": "s3://results/vision",
            "options": {
                "max_items": 25,
                "mask_threshold": 127,
                "thinking_budget": 0,
                "temperature": 0.5,
            },
        }
    )
    assert job.options.max_items == 25
    assert job.spec().task == "detect"


def test_missing_job_id_is_generated() -> None:
    job = parse_job(_job(job_id=_DROP))
    assert job.job_id.startswith("job-")


def test_job_id_defaults_to_the_celery_task_id() -> None:
    assert parse_job(_job(job_id=_DROP), default_job_id="abc-1").job_id == "abc-1"


@pytest.mark.parametrize(
    ("job", "names"),
    [
        pytest.param(_job(colour="red"), "colour: unknown field", id="unknown-field"),
        pytest.param(
            _job(options={"max_itemz": 3}), "options.max_itemz: unknown field", id="unknown-option"
        ),
        pytest.param(_job(images="s3://inbox/a.jpg"), "images", id="images-not-a-list"),
        pytest.param(_job(images=[]), "images", id="no-images"),
        pytest.param(_job(images=[42]), "images.0", id="image-not-a-string"),
        pytest.param(_job(options={"max_items": "25"}), "options.max_items", id="number-as-string"),
        pytest.param(
            _job(options={"temperature": 5}), "options.temperature", id="temperature-out-of-range"
        ),
        pytest.param(_job(job_id="../etc"), "job_id", id="job-id-path"),
        pytest.param(_job(job_id="x" * 200), "job_id", id="job-id-too-long"),
        pytest.param(_job(task="paint"), "task", id="unknown-task"),
        pytest.param(_job(task="vqa"), "prompt", id="vqa-needs-prompt"),
        pytest.param(_job(task="classify"), "labels", id="classify-needs-labels"),
        pytest.param(_job(task="custom"), "prompt", id="custom-needs-prompt"),
        pytest.param(_job(labels=["cat"]), "labels", id="labels-only-for-classify"),
        pytest.param(
            _job(task="caption", response_schema={"type": "object"}),
            "response_schema",
            id="schema-only-for-custom",
        ),
        pytest.param(
            _job(images=["s3://inbox/a.jpg", "s3://inbox/b.jpg"]),
            "images",
            id="detect-takes-one-image",
        ),
        pytest.param(
            _job(images=[f"s3://inbox/{i}.jpg" for i in range(3601)], task="vqa", prompt="?"),
            "images",
            id="more-than-3600",
        ),
        pytest.param(_job(model="gemini 2.5/../x"), "model", id="model-name-garbage"),
    ],
)
def test_bad_jobs_are_refused_naming_the_field(job: dict, names: str) -> None:
    with pytest.raises(InvalidJob) as info:
        parse_job(job)
    assert names in str(info.value)


def test_non_object_job_is_refused() -> None:
    with pytest.raises(InvalidJob, match="JSON object"):
        parse_job(["s3://inbox/a.jpg"])


@pytest.mark.parametrize(
    ("uri", "prefixes"),
    [
        pytest.param("s3://other/a.jpg", ("s3://inbox/",), id="other-bucket"),
        pytest.param("s3://inbox-evil/a.jpg", ("s3://inbox",), id="bucket-name-prefix-trick"),
        pytest.param("file:///etc/passwd", ("s3://",), id="file-refused-by-default"),
        pytest.param("http://example.com/a.jpg", ("s3://",), id="other-scheme"),
    ],
)
def test_inputs_outside_the_allowlist_are_refused(uri: str, prefixes: tuple[str, ...]) -> None:
    with pytest.raises(InputNotAllowed):
        check_allowed(uri, prefixes, role="input")


def test_file_traversal_out_of_an_allowed_folder_is_refused(tmp_path: Path) -> None:
    allowed = f"file://{tmp_path}/inbox/"
    (tmp_path / "inbox").mkdir()
    assert check_allowed(f"file://{tmp_path}/inbox/a.png", (allowed,), role="input").text.endswith(
        "/inbox/a.png"
    )
    with pytest.raises(InvalidJob, match=r"'\.\.'"):
        check_allowed(f"file://{tmp_path}/inbox/../secret.png", (allowed,), role="input")


def test_symlink_out_of_an_allowed_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "link.png").symlink_to("/etc/passwd")
    with pytest.raises(InputNotAllowed):
        check_allowed(
            f"file://{tmp_path}/inbox/link.png", (f"file://{tmp_path}/inbox",), role="input"
        )


def test_s3_keys_with_url_syntax_stay_keys() -> None:
    uri = "s3://inbox/a?b#c d+e.jpg"
    assert check_allowed(uri, ("s3://inbox/",), role="input").text == uri


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        pytest.param(
            "file://./gvw-results-evil%2F..%2Fgvw-results", "encoded separator", id="enc-slash"
        ),
        pytest.param("s3://results/a%5c..%5cb", "encoded separator", id="enc-backslash"),
        pytest.param("s3://results/a/../b", "'.' or '..'", id="s3-dot-dot"),
        pytest.param("s3://results/./b", "'.' or '..'", id="s3-dot"),
        pytest.param("file://./gvw-results/../x", "'..'", id="file-dot-dot"),
        pytest.param("s3://results/a//b", "empty path segment", id="empty-segment"),
        pytest.param("s3://results/a\\b", "backslash", id="backslash"),
        pytest.param("s3://results/a\nb", "control character", id="newline"),
    ],
)
def test_outputs_with_traversal_or_encoded_separators_are_invalid_jobs(
    output: str, reason: str
) -> None:
    job = {"task": "caption", "images": ["s3://inbox/a.jpg"], "output": output}
    with pytest.raises(InvalidJob, match=reason):
        parse_job(job, default_job_id="j1")


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("s3://inbox/a/../secret.jpg", id="s3-dot-dot"),
        pytest.param("s3://inbox/./a.jpg", id="s3-dot"),
        pytest.param("file:///srv/in/../etc/passwd", id="file-dot-dot"),
    ],
)
def test_inputs_with_dot_segments_are_invalid_jobs(uri: str) -> None:
    with pytest.raises(InvalidJob, match=r"'\.'|'\.\.'"):
        parse_job({"task": "caption", "images": [uri]}, default_job_id="j1")


def test_inputs_keep_their_literal_spelling() -> None:
    # keys are literal: "%2F" in an input key is three characters, not a separator
    uris = ["s3://inbox/a%2Fb.jpg", "s3://inbox/dir//double.jpg", "file://localhost/srv/a.png"]
    job = parse_job({"task": "compare", "images": uris}, default_job_id="j1")
    assert job.images == ["s3://inbox/a%2Fb.jpg", "s3://inbox/dir//double.jpg", "file:///srv/a.png"]


def test_check_and_write_agree_on_an_encoded_output() -> None:
    # the attack of issue 9: decoded for the check, verbatim for the write
    from worker.storage.uris import is_within, parse_prefix, parse_uri

    sibling = parse_uri("file:///srv/results-evil%2F..%2Fresults/x", role="object")
    assert not is_within(sibling, parse_prefix("file:///srv/results/"))
