"""What `gvw report` puts on its page (worker.exports.gallery, worker.exports.report): which
picture each job gets, in which form, what the summary counts, and the page's policy."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
from typing import Any

from PIL import Image

from worker.exports.gallery import THUMBNAIL_MAX_SIDE_PX, ImageMode, gallery_of
from worker.exports.report import _asset, render_report


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


class Store:
    """Objects in a dict; signs s3:// URIs the way a bucket's endpoint would."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.signed: list[str] = []

    def get_bytes(self, uri: str, *, max_bytes: int) -> bytes:
        return self.objects[uri][:max_bytes]

    def presign_get(self, uri: str, *, ttl_s: int, version_id: str | None) -> str | None:
        self.signed.append(uri)
        return (
            "https://bucket.example:8443/" + uri.removeprefix("s3://") + f"?X-Amz-Expires={ttl_s}"
        )


def detect(job_id: str, picture: str, labels: list[str]) -> dict[str, Any]:
    return {
        "job_id": job_id, "status": "succeeded", "task": "detect",
        "images": [{"uri": "s3://inbox/" + job_id + ".png"}],
        "output": {"objects": [{"label": label, "box": [0, 0, 5, 5]} for label in labels]},
        "artifacts": {"overlay": picture},
        "usage": {"prompt_tokens": 10, "output_tokens": 2, "cost_usd": 0.5},
    }  # fmt: skip


def folder(records: dict[str, dict[str, Any]], pictures: dict[str, bytes]) -> Store:
    objects = {f"s3://results/{k}/result.json": json.dumps(r).encode() for k, r in records.items()}
    return Store({**objects, **pictures})


def test_every_record_counts_and_only_the_first_limit_get_a_card() -> None:
    records = {f"j{i}": detect(f"j{i}", f"s3://results/j{i}/o.png", ["cat"] * (i % 2) + ["dog"])
               for i in range(5)}  # fmt: skip
    store = folder(records, {f"s3://results/j{i}/o.png": png(40, 30) for i in range(5)})
    uris = [f"s3://results/j{i}/result.json" for i in range(5)]
    gallery = gallery_of(store, uris, mode=ImageMode.EMBED, link_lifetime_s=60, limit=2)
    assert [c.job_id for c in gallery.cards] == ["j0", "j1"]
    assert gallery.summary.jobs == 5 and gallery.summary.shown == 2
    assert gallery.summary.labels() == [("dog", 5), ("cat", 2)]  # jobs with the label
    assert gallery.summary.cost_usd == 2.5 and gallery.summary.prompt_tokens == 50


def test_embedded_pictures_are_small_upright_thumbnails_and_nothing_is_signed() -> None:
    records = {"big": detect("big", "s3://results/big/o.png", ["cat"])}
    store = folder(records, {"s3://results/big/o.png": png(2000, 1000)})
    gallery = gallery_of(store, ["s3://results/big/result.json"], mode=ImageMode.EMBED,
                         link_lifetime_s=60, limit=10)  # fmt: skip
    src = gallery.cards[0].picture_src
    assert src is not None and src.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as thumb:
        assert thumb.size == (THUMBNAIL_MAX_SIDE_PX, THUMBNAIL_MAX_SIDE_PX // 2)
    assert store.signed == [] and gallery.cards[0].picture_of == "overlay"
    assert gallery.cards[0].full_href is None and gallery.cards[0].record_href is None


def test_links_only_for_pictures_a_browser_draws_of_jobs_that_succeeded() -> None:
    failed = {
        "job_id": "bad", "status": "failed", "task": "detect",
        "error": {"code": "invalid_image", "message": "cannot decode"},
        "job": {"task": "detect", "images": ["s3://inbox/bad.png"]},
    }  # fmt: skip
    heic = detect("heic", "s3://results/heic/overlay.png", ["cat"])
    del heic["artifacts"]
    heic["images"] = [{"uri": "s3://inbox/heic.heic"}]
    records = {"ok": detect("ok", "s3://results/ok/o.png", ["cat"]), "bad": failed, "heic": heic}
    store = folder(
        records,
        {
            "s3://results/ok/o.png": png(50, 50),
            "s3://inbox/bad.png": b"\x89PNG broken",
            "s3://inbox/heic.heic": png(50, 50),  # what Pillow reads; a browser would not
        },
    )
    uris = [f"s3://results/{k}/result.json" for k in ("ok", "bad", "heic")]
    gallery = gallery_of(store, uris, mode=ImageMode.LINK, link_lifetime_s=600, limit=10)
    ok, bad, heif = gallery.cards
    assert ok.picture_src == "https://bucket.example:8443/results/ok/o.png?X-Amz-Expires=600"
    assert bad.picture_src is None and bad.picture_of == "" and bad.text == "cannot decode"
    assert heif.picture_src is not None and heif.picture_src.startswith("data:image/jpeg")
    assert ok.full_href == ok.picture_src and bad.full_href is None
    assert [c.record_href for c in gallery.cards] == [
        f"https://bucket.example:8443/results/{k}/result.json?X-Amz-Expires=600"
        for k in ("ok", "bad", "heic")
    ]
    assert store.signed == ["s3://results/ok/o.png"] + [u for u in uris]

    page = render_report(gallery, name="r", source="s3://results", mode=ImageMode.LINK,
                         link_lifetime_s=600)  # fmt: skip
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert policy is not None
    content = html.unescape(policy.group(1))  # as the browser reads the attribute
    directives = dict(d.strip().split(" ", 1) for d in content.split(";"))
    assert directives["img-src"] == "data: https://bucket.example:8443"
    script_hash = base64.b64encode(hashlib.sha256(_asset("report.js").encode()).digest())
    assert directives["script-src"] == f"'sha256-{script_hash.decode()}'"
    assert directives["default-src"] == "'none'"
    assert "valid until" in page and "(10 min from when the report was made)" in page
