"""`gvw report` (issue 21): a results folder's records as one HTML page, looked at in a real
headless Chromium (Debian's `chromium`, driven by Playwright): the gallery shows every job,
a label filter leaves exactly the jobs with that label, every picture loads, and the page
logs no error. A model's text is text on the page, never markup that runs.

Each test keeps a screenshot under test-artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from tests.harness import REPO_ROOT, Stack
from tests.integration.test_cli import gvw
from tests.integration.test_runs import read_json
from worker.emulator.scenes import make_scene
from worker.exports.gallery import Card, Gallery, ImageMode, Summary, thumbnail_data_uri
from worker.exports.report import render_report

pytestmark = pytest.mark.integration

ARTIFACTS = REPO_ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("Debian's chromium is not installed (scripts/test installs it)")
    with sync_playwright() as driver:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start
        launched = driver.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


class Viewer:
    """One page of the browser, with every console error and page error it produced."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console {message.type}: {message.text}")

    def open(self, path: Path) -> None:
        self.page.goto(path.as_uri())

    def visible_jobs(self) -> list[str]:
        return list(
            self.page.eval_on_selector_all(
                "#gallery .card:not([hidden])", "cards => cards.map(c => c.dataset.job)"
            )
        )

    def load_every_picture(self) -> list[str]:
        """Scrolls each picture into view (they load lazily) and waits for it; returns the
        pictures that did not load."""
        pictures = self.page.locator("#gallery img")
        for index in range(pictures.count()):
            pictures.nth(index).scroll_into_view_if_needed()
        self.page.wait_for_function(
            "() => Array.from(document.images).every(i => i.complete)", timeout=30_000
        )
        return list(
            self.page.eval_on_selector_all(
                "#gallery img", "imgs => imgs.filter(i => !i.naturalWidth).map(i => i.alt)"
            )
        )

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def labels_of(record: dict[str, Any]) -> set[str]:
    output = record.get("output") or {}
    found = set(output.get("labels") or [])
    return found | {o["label"] for o in output.get("objects") or []}


def test_a_report_shows_every_job_filters_by_label_and_loads_every_picture(
    stack: Stack, browser: Any, tmp_path: Path
) -> None:
    folder = f"s3://results/report-{uuid.uuid4().hex[:8]}"
    prefix = f"report-{uuid.uuid4().hex[:8]}"
    shapes = [["red circle"], ["red circle", "blue rectangle"], ["blue rectangle"], ["red circle"]]
    for index, drawn in enumerate(shapes):
        scene = make_scene(320, 240, shapes=drawn, seed=index)
        stack.put(f"{prefix}/detect/{index}.png", scene.png_bytes())
    stack.put(f"{prefix}/detect/broken.png", b"\x89PNG\r\n\x1a\n and then nothing")
    stack.put(f"{prefix}/caption/0.png", make_scene(200, 150, shapes=[], seed=7).png_bytes())
    for task, extra in (("detect", ["--prompt", "the shapes"]), ("caption", [])):
        done = gvw(
            "enqueue-prefix", f"s3://inbox/{prefix}/{task}/", "--task", task, *extra,
            "--output", folder, "--wait", env=stack.env, timeout_s=180,
        )  # fmt: skip
        assert done.returncode in (0, 1), done.stderr  # 1: the broken image failed

    listed = stack.s3.list_objects_v2(Bucket="results", Prefix=folder.removeprefix("s3://results/"))
    records = {
        item["Key"].split("/")[-2]: read_json(stack, "s3://results/" + item["Key"])
        for item in listed.get("Contents", [])
        if item["Key"].endswith(("/result.json", "/error.json"))
    }
    assert len(records) == 6

    for mode in ("embed", "link"):
        page_path = tmp_path / f"{mode}.html"
        secret = f"secret-{uuid.uuid4().hex}"  # moto's server takes any; ours is unique
        env = {**stack.env, "AWS_SECRET_ACCESS_KEY": secret}
        made = gvw("report", folder, "--images", mode, "--to", str(page_path), "--json", env=env)
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["jobs"] == 6
        html = page_path.read_text()
        assert secret not in html  # a signature, never a secret
        if mode == "embed":
            assert "X-Amz-Signature" not in html and "no storage" in html
        else:
            assert "X-Amz-Signature" in html and "valid until" in html

        viewer = Viewer(browser)
        viewer.open(page_path)
        assert sorted(viewer.visible_jobs()) == sorted(records)  # every job, once
        models = {r["model"] for r in records.values() if r.get("model")}
        assert models and all(m in viewer.page.inner_text("#by-model") for m in models)
        assert "last ended" in viewer.page.inner_text("#by-status")
        assert viewer.load_every_picture() == []  # the broken input has no picture to show
        assert viewer.page.locator("#gallery .nopic").count() == 1

        for label in ("red circle", "blue rectangle"):
            viewer.page.select_option("select[name=label]", label)
            wanted = sorted(job for job, record in records.items() if label in labels_of(record))
            assert wanted and sorted(viewer.visible_jobs()) == wanted, label
            assert viewer.page.inner_text("#showing") == f"showing {len(wanted)} of 6"
        viewer.page.select_option("select[name=label]", "")
        viewer.page.select_option("select[name=status]", "failed")
        failed = [job for job, record in records.items() if record["status"] == "failed"]
        assert viewer.visible_jobs() == failed and len(failed) == 1
        viewer.page.select_option("select[name=status]", "")
        viewer.page.select_option("select[name=task]", "caption")
        assert len(viewer.visible_jobs()) == 1
        viewer.page.select_option("select[name=task]", "")

        # each card opens the answer and the record; with links, the full overlay too
        some_detect = next(j for j, r in records.items() if r.get("artifacts", {}).get("overlay"))
        card = viewer.page.locator(f'.card[data-job="{some_detect}"]')
        card.locator("summary").click()
        shown = json.loads(card.locator("pre.record").inner_text())
        assert shown == records[some_detect]
        full = card.locator("a", has_text="the full overlay")
        if mode == "link":
            answer = viewer.page.request.get(full.get_attribute("href") or "")
            stored = stack.s3.get_object(
                Bucket="results",
                Key=records[some_detect]["artifacts"]["overlay"].removeprefix("s3://results/"),
            )["Body"].read()
            assert answer.ok and answer.body() == stored
        else:
            assert full.count() == 0  # embedded: nothing signed, nothing to follow
        viewer.screenshot(f"report-{mode}.png")
        assert viewer.errors == []
        viewer.page.close()

    # written to storage instead, served as a page
    key = f"reports/{uuid.uuid4().hex[:8]}.html"
    stored = gvw("report", folder, "--to", f"s3://results/{key}", env=stack.env)
    assert stored.returncode == 0, stored.stderr
    head = stack.s3.head_object(Bucket="results", Key=key)
    assert head["ContentType"].startswith("text/html") and head["ContentLength"] > 1000


def test_a_models_text_is_shown_as_text_and_never_runs(browser: Any, tmp_path: Path) -> None:
    hostile = [
        '<img src=x onerror="window.pwned = 1">',
        "</script><script>window.pwned = 2</script>",
        '" onmouseover="window.pwned = 3',
    ]
    picture = thumbnail_data_uri(make_scene(64, 48, shapes=["red circle"], seed=1).png_bytes())
    cards = [
        Card(
            job_id=f"job-{index}",
            status="succeeded",
            task="classify",
            labels=[text, "plain"],
            text=text,
            error_code="",
            cost_usd=0.0001,
            picture_src=picture,
            picture_of="input",
            object_count=None,
        )
        for index, text in enumerate(hostile)
    ]
    summary = Summary(jobs=3, shown=3)
    summary.by_status["succeeded"] = 3
    summary.by_task["classify"] = 3
    for card in cards:
        summary.by_label.update(card.labels)
    page_path = tmp_path / "hostile.html"
    page_path.write_text(
        render_report(
            Gallery(cards=cards, summary=summary),
            name="<b>run</b>",
            source="s3://results/x",
            mode=ImageMode.EMBED,
            link_lifetime_s=3600,
        )
    )
    viewer = Viewer(browser)
    viewer.open(page_path)
    assert viewer.page.evaluate("() => window.pwned") is None
    for index, text in enumerate(hostile):
        card = viewer.page.locator(f'.card[data-job="job-{index}"] .text')
        assert card.inner_text() == text  # shown as written
        viewer.page.select_option("select[name=label]", text)  # and filterable as written
        assert viewer.visible_jobs() == [f"job-{index}"]
    viewer.page.mouse.move(10, 10)
    assert viewer.page.evaluate("() => window.pwned") is None
    assert viewer.page.title() == "gvw report: <b>run</b>"
    viewer.screenshot("report-hostile.png")
    assert viewer.errors == []
