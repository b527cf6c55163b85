"""A gallery as one self-contained HTML page (issue 21: `gvw report`).

Everything a record holds is untrusted (a model wrote the text and labels, a producer the
job id's neighbours): the page is rendered by Jinja2 with autoescaping, and its
Content-Security-Policy lets run only the page's own script and style (by their SHA-256)
and load pictures only from `data:` and the storage origins of its pre-signed links. A
label such as ``<img src=x onerror=...>`` is text on the page, nothing more.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from urllib.parse import urlsplit

import jinja2

from worker.exports.gallery import THUMBNAIL_MAX_SIDE_PX, Gallery, ImageMode

HTML_TYPE = "text/html; charset=utf-8"


@cache
def _asset(name: str) -> str:
    return resources.files("worker.exports").joinpath(name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def render_report(
    gallery: Gallery,
    *,
    name: str,
    source: str,
    mode: ImageMode,
    link_lifetime_s: int,
    made_at: datetime | None = None,
) -> str:
    made_at = made_at or datetime.now(UTC)
    style, script = _asset("report.css"), _asset("report.js")
    origins = sorted(
        {
            f"{parts.scheme}://{parts.netloc}"
            for card in gallery.cards
            if card.picture_src and not card.picture_src.startswith("data:")
            for parts in [urlsplit(card.picture_src)]
        }
    )
    csp = "; ".join(
        [
            "default-src 'none'",
            "img-src " + " ".join(["data:", *origins]),
            f"style-src {_sha256(style)}",
            f"script-src {_sha256(script)}",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )
    linked = any(c.picture_src and not c.picture_src.startswith("data:") for c in gallery.cards)
    if mode is ImageMode.LINK and linked:
        expires = (made_at + timedelta(seconds=link_lifetime_s)).strftime("%Y-%m-%d %H:%M UTC")
        pictures_note = (
            f"Pictures are pre-signed links, valid until {expires} "
            f"({_duration(link_lifetime_s)} from when the report was made); after that they "
            "no longer load. Each link is signed for its one object and carries no "
            "credentials, but anyone holding this file can open them until then."
        )
    else:
        pictures_note = (
            f"Pictures are thumbnails (at most {THUMBNAIL_MAX_SIDE_PX} px a side) embedded "
            "in this file: it stands alone, links to no storage and does not expire."
        )
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = environment.from_string(_asset("report.html"))
    return template.render(
        name=name,
        source=source,
        made_at=made_at.strftime("%Y-%m-%d %H:%M UTC"),
        pictures_note=pictures_note,
        summary=gallery.summary,
        labels=gallery.summary.labels(),
        cards=gallery.cards,
        csp=csp,
        style=style,
        script=script,
    )


def _duration(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400} d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
