"""Bad jobs are refused with a message naming the field; inputs are checked before reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import InputNotAllowed, InvalidJob
from worker.jobs import check_allowed, parse_job

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
        check_allowed(uri, prefixes, what="input")


def test_file_traversal_out_of_an_allowed_folder_is_refused(tmp_path: Path) -> None:
    allowed = f"file://{tmp_path}/inbox/"
    (tmp_path / "inbox").mkdir()
    assert check_allowed(f"file://{tmp_path}/inbox/a.png", (allowed,), what="input").endswith(
        "/inbox/a.png"
    )
    with pytest.raises(InputNotAllowed):
        check_allowed(f"file://{tmp_path}/inbox/../secret.png", (allowed,), what="input")


def test_symlink_out_of_an_allowed_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "link.png").symlink_to("/etc/passwd")
    with pytest.raises(InputNotAllowed):
        check_allowed(
            f"file://{tmp_path}/inbox/link.png", (f"file://{tmp_path}/inbox",), what="input"
        )


def test_s3_keys_with_url_syntax_stay_keys() -> None:
    uri = "s3://inbox/a?b#c d+e.jpg"
    assert check_allowed(uri, ("s3://inbox/",), what="input") == uri
