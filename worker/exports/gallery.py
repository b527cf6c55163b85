"""What a report shows (issue 21: `gvw report`): one card per job and the run's summary.

A card is the export's row of the job (`row_of`, so a report and a Parquet export never
disagree on what a record says) plus the picture to show: the job's overlay where the task
drew one (detect, segment), else its first input image. A picture is either a thumbnail
embedded in the page (`ImageMode.EMBED`: the page stands alone, never expires, and holds
no link to storage at all) or a pre-signed link to the full picture (`ImageMode.LINK`:
small page, full resolution, valid for a stated lifetime; a signature for that one object,
no credentials). A store that cannot sign (local files), a failed job's input (perhaps
what made it fail) and a format browsers do not draw (HEIC, TIFF) always get thumbnails.
"""

from __future__ import annotations

import base64
import enum
import io
import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from PIL import Image, ImageOps

from worker.exports.rows import row_of
from worker.storage.port import ObjectStore

log = logging.getLogger(__name__)

THUMBNAIL_MAX_SIDE_PX = 320
THUMBNAIL_JPEG_QUALITY = 80
# what one picture may weigh when read for its thumbnail (an input is bounded this way too)
PICTURE_MAX_BYTES = 64_000_000
RECORD_MAX_BYTES = 64_000_000
# the labels a report lists in its summary and filter, the most frequent first
LABELS_MAX = 500
TEXT_MAX_CHARS = 400  # on the card
ANSWER_MAX_CHARS = 8000  # the whole answer, and an error's raw text, under "answer and record"
RECORD_MAX_CHARS = 16000  # the record as stored, pretty-printed
# the only links a card may carry: pre-signed storage URLs and local files
LINK_SCHEMES = ("https://", "http://", "file://")
# what every browser draws from a link; anything else is shown as a thumbnail
BROWSER_FORMATS = (".jpg", ".jpeg", ".png", ".webp", ".gif")


class ImageMode(enum.StrEnum):
    EMBED = "embed"
    LINK = "link"


@dataclass(frozen=True)
class Card:
    job_id: str
    status: str  # succeeded | failed
    task: str
    labels: list[str]  # classify's labels and detect / segment's object labels, each once
    text: str  # the answer's text, shortened; or the error's message
    error_code: str
    cost_usd: float | None
    picture_src: str | None  # a data: URI or a pre-signed https:// URL
    picture_of: str  # "overlay" | "input" | "" (none could be read)
    object_count: int | None
    model: str = ""
    answer: str = ""  # the whole answer (or the error's message), bounded
    raw_text: str = ""  # a failure's raw model text, bounded
    record_json: str = ""  # the record as stored, pretty-printed, bounded
    full_href: str | None = None  # the full picture: a pre-signed link, or a local file
    record_href: str | None = None  # the record itself, the same way


@dataclass
class Summary:
    jobs: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_task: Counter[str] = field(default_factory=Counter)
    by_error: Counter[str] = field(default_factory=Counter)
    by_label: Counter[str] = field(default_factory=Counter)  # jobs with the label
    by_model: Counter[str] = field(default_factory=Counter)
    first_completed: datetime | None = None
    last_completed: datetime | None = None
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    shown: int = 0  # cards in the gallery (at most the report's limit)

    def labels(self) -> list[tuple[str, int]]:
        return self.by_label.most_common(LABELS_MAX)


@dataclass
class Gallery:
    cards: list[Card]
    summary: Summary


def gallery_of(
    stores: ObjectStore,
    record_uris: Iterable[str],
    *,
    mode: ImageMode,
    link_lifetime_s: int,
    limit: int,
) -> Gallery:
    """Every record counts in the summary; the first `limit` get a card."""
    summary = Summary()
    cards: list[Card] = []
    for uri in record_uris:
        record = json.loads(stores.get_bytes(uri, max_bytes=RECORD_MAX_BYTES))
        row = row_of(record, uri)
        labels = _labels(row)
        _count(summary, row, labels)
        if len(cards) >= limit:
            continue
        overlay = (record.get("artifacts") or {}).get("overlay")
        picture_uri, picture_of = (
            (overlay, "overlay") if isinstance(overlay, str) else (_first(row), "input")
        )
        # a link only to what a browser can show: a failed job's input may be what made it
        # fail, and HEIC or TIFF inputs are not drawn by browsers (their thumbnails are)
        linkable = mode is ImageMode.LINK and row["status"] == "succeeded"
        src = _picture(stores, picture_uri, linkable, link_lifetime_s) if picture_uri else None
        full = src if src and not src.startswith("data:") else None
        if full is None and picture_uri and picture_of == "overlay":
            full = _link(stores, picture_uri, mode, link_lifetime_s)
        cards.append(
            Card(
                job_id=str(row["job_id"]),
                status=str(row["status"]),
                task=str(row["task"] or ""),
                labels=labels,
                text=_text(row),
                error_code=str(row["error_code"] or ""),
                cost_usd=row["cost_usd"],
                picture_src=src,
                picture_of=picture_of if src else "",
                object_count=row["object_count"],
                model=str(row["model"] or ""),
                answer=_bounded(_answer(row), ANSWER_MAX_CHARS),
                raw_text=_bounded(str(row["raw_text"] or ""), ANSWER_MAX_CHARS),
                record_json=_bounded(json.dumps(record, indent=2), RECORD_MAX_CHARS),
                full_href=full,
                record_href=_link(stores, uri, mode, link_lifetime_s),
            )
        )
    summary.shown = len(cards)
    return Gallery(cards=cards, summary=summary)


def _labels(row: dict[str, Any]) -> list[str]:
    found = [str(label) for label in row["labels"] or []]
    found += [str(o["label"]) for o in row["objects"] or [] if o.get("label")]
    return list(dict.fromkeys(found))


def _count(summary: Summary, row: dict[str, Any], labels: list[str]) -> None:
    summary.jobs += 1
    summary.by_status[row["status"]] += 1
    summary.by_task[row["task"] or "?"] += 1
    if row["error_code"]:
        summary.by_error[row["error_code"]] += 1
    summary.by_label.update(labels)
    if row["model"]:
        summary.by_model[row["model"]] += 1
    when = row["completed_at"]
    if when is not None:
        if summary.first_completed is None or when < summary.first_completed:
            summary.first_completed = when
        if summary.last_completed is None or when > summary.last_completed:
            summary.last_completed = when
    summary.cost_usd += row["cost_usd"] or 0.0
    summary.prompt_tokens += row["prompt_tokens"] or 0
    summary.output_tokens += row["output_tokens"] or 0


def _first(row: dict[str, Any]) -> str | None:
    inputs = row["input_uris"] or []
    return str(inputs[0]) if inputs else None


def _answer(row: dict[str, Any]) -> str:
    text = row["text"] or row["error_message"] or row["data_json"] or ""
    if not text and row["labels"]:
        text = ", ".join(row["labels"])
    if not text and row["objects"]:
        text = "\n".join(f"{o['label']}: box {o['box']}" for o in row["objects"])
    return str(text)


def _text(row: dict[str, Any]) -> str:
    return _bounded(_answer(row), TEXT_MAX_CHARS)


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _link(stores: ObjectStore, uri: str, mode: ImageMode, link_lifetime_s: int) -> str | None:
    """A link to a stored object for a card: pre-signed (`--images link` only: a signature
    is handed out only when asked for), or the file itself on local storage."""
    link = uri if uri.startswith("file://") else None
    if mode is ImageMode.LINK and link is None:
        link = stores.presign_get(uri, ttl_s=link_lifetime_s, version_id=None)
    return link if link is not None and link.startswith(LINK_SCHEMES) else None


def _picture(stores: ObjectStore, uri: str, linkable: bool, link_lifetime_s: int) -> str | None:
    if linkable and uri.lower().endswith(BROWSER_FORMATS):
        link = stores.presign_get(uri, ttl_s=link_lifetime_s, version_id=None)
        if link is not None:
            return link
    try:
        return thumbnail_data_uri(stores.get_bytes(uri, max_bytes=PICTURE_MAX_BYTES))
    except Exception as exc:  # a picture gone or unreadable: the card says so, the report goes on
        log.warning("no picture for the report: %s: %s", uri, exc)
        return None


def thumbnail_data_uri(data: bytes) -> str:
    """A JPEG thumbnail (at most THUMBNAIL_MAX_SIDE_PX a side, upright) as a data: URI."""
    with Image.open(io.BytesIO(data)) as opened:
        # a JPEG decoded at the smallest scale still twice the thumbnail: 4-8x less work
        opened.draft("RGB", (2 * THUMBNAIL_MAX_SIDE_PX, 2 * THUMBNAIL_MAX_SIDE_PX))
        image = ImageOps.exif_transpose(opened)
        image.thumbnail((THUMBNAIL_MAX_SIDE_PX, THUMBNAIL_MAX_SIDE_PX))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=THUMBNAIL_JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
