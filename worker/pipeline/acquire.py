"""Acquire: the job's images, one at a time, as the request will carry them.

Each image is fetched (capped before reading), checked against the job's pixel budget
from its header, decoded and prepared (`worker.images.prepare`), reduced when the task
asks (`tasks.sent_size`), and handed to the request (`RequestImages`), which keeps only
what it sends: inline bytes, or an upload once the request would outgrow the inline
limit. With ``GVW_TRANSPORT=url`` an image Gemini can take as stored goes as a URL,
read only as far as its header. Only the overlay's image keeps its pixels.

A job whose answer is paid already needs no request: its images are described (facts),
not sent. A batch answer is published with the images as its request described them
(kept by the batch store): not fetched again unless an overlay needs the pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from tasks.tokens import estimate_image_tokens
from worker.fleet.answer_cache import answer_key
from worker.gemini import ModelAnswer
from worker.images.prepare import ImageFacts, PreparedImage, fit_within, prepare_image
from worker.observability import StageTimer
from worker.pipeline.plan import BATCH_FILE_LIFE_S, JobPlan
from worker.pipeline.ports import Ports
from worker.pipeline.request_images import RequestImages
from worker.pipeline.url_transport import remote_image

log = logging.getLogger(__name__)

# a job's paid answer (`worker.fleet.answer_store`) and how each image went
PaidAnswer = tuple[ModelAnswer, list[str]]


@dataclass
class Acquired:
    """The job's images: what the record says of each (``facts``), the request that
    carries them (None when the answer is paid already), and the overlay's picture."""

    facts: list[ImageFacts]
    images: RequestImages | None
    first: PreparedImage | None  # the first image with its pixels, when an overlay is drawn
    cache_key: str | None  # the answer cache's key: model, request and the bytes as sent
    image_tokens: int  # what the images are estimated to cost, in input tokens
    notes: list[str] = field(default_factory=list)  # for the record's warnings

    def sent(self) -> Sent:
        """What publishing needs once the answer is in: the facts as finally sent (a
        re-uploaded image's hash read back) and the notes; the request is let go."""
        facts = list(self.facts)
        notes = [*(self.images.notes if self.images is not None else []), *self.notes]
        for index, sha256 in (self.images.read_back if self.images is not None else {}).items():
            facts[index] = replace(facts[index], sha256=sha256)
        return Sent(facts, self.first, self.image_tokens, notes)


@dataclass(frozen=True)
class Sent:
    facts: list[ImageFacts]
    first: PreparedImage | None
    image_tokens: int
    notes: list[str]


def acquire(plan: JobPlan, ports: Ports, paid: PaidAnswer | None, timer: StageTimer) -> Acquired:
    settings = ports.settings

    def prepare(index: int, pixels_left: int | None) -> PreparedImage:
        with timer.stage("fetch"):
            data = ports.stores.get_bytes(
                plan.input_uris[index], max_bytes=settings.gvw_max_input_bytes
            )
        with timer.stage("prepare"):
            overlay = plan.keeps_pixels and index == 0
            image = prepare_image(
                data,
                max_pixels=settings.gvw_max_image_pixels,
                keep_pixels=overlay or plan.fit_px > 0,
                job_pixels_left=pixels_left,
                # decode no larger than what uses the pixels: the overlay, the copy sent
                pixels_side_px=(settings.gvw_overlay_max_side_px or None) if overlay else 0,
                sent_side_px=plan.fit_px,
            )
            image = fit_within(image, plan.fit_px)
            if not overlay and image.upright is not None:
                image = replace(image, upright=None)  # only the overlay needs pixels
        return image

    images: RequestImages | None = None
    if paid is None:
        images = ports.sender().start(
            prompt_bytes=len(plan.request.prompt.encode()),
            job_id=plan.job_id,
            refetch=lambda index: prepare(index, None),
            defer_uploads=plan.looks_up,
            # a batch request names its images (it waits in Redis, and a batch is small),
            # by uploads Gemini keeps past the batch's 24 hours: never a URL that lives
            # minutes (GVW_URL_TTL_S), nor a cached file about to be deleted
            mode="file_api" if plan.batch else settings.gvw_transport,
            min_file_life_s=BATCH_FILE_LIFE_S if plan.batch else 0.0,
        )
    as_sent = _batch_images(ports, plan) if paid is not None and plan.batch else None
    described = None if plan.keeps_pixels else as_sent
    facts: list[ImageFacts] = list(described or [])
    first: PreparedImage | None = None
    pixels_left = settings.gvw_max_job_pixels
    by_url = settings.gvw_transport == "url" and not plan.batch
    for index, uri in enumerate(plan.input_uris if described is None else ()):
        # GVW_TRANSPORT=url: what Gemini can take as stored goes as a URL, read by the
        # worker only as far as its header (the overlay's image needs its pixels)
        remote = None
        if by_url and not (plan.keeps_pixels and index == 0):
            with timer.stage("fetch"):
                remote = remote_image(
                    ports.stores,
                    uri,
                    settings,
                    fit_within_px=plan.fit_px,
                    job_pixels_left=pixels_left,
                )
        if remote is not None:
            pixels_left -= remote.facts.width_px * remote.facts.height_px
            facts.append(remote.facts)
            if images is not None:
                images.add_url(remote.part)
            continue
        image = prepare(index, pixels_left)
        pixels_left -= image.width_px * image.height_px
        facts.append(image.facts(uri))
        if plan.draws and index == 0:
            first = image
        if images is not None:
            with timer.stage("ask"):  # uploads, when the request outgrows inline
                images.add(image)
        del image

    notes: list[str] = []
    if (
        as_sent is not None
        and described is None
        and [f.sent_sha256 for f in as_sent] != [f.sent_sha256 for f in facts]
    ):
        # fetched again for the overlay: an object replaced while its batch was pending
        # is not what the answer describes. The answer is read, cached and recorded
        # with the images that were sent, and no overlay is drawn on the new pixels.
        facts, first = as_sent, None
        notes.append("an image changed after its batch request was built: no overlay")
    return Acquired(
        facts=facts,
        images=images,
        first=first,
        cache_key=(
            answer_key(
                model=plan.model,
                request=plan.request,
                options=plan.options,
                images=[(f.sent_sha256, f.mime_type) for f in facts],
            )
            if ports.answer_cache.enabled
            else None
        ),
        image_tokens=sum(
            estimate_image_tokens(
                *f.sent_width_height_px,
                model=plan.model,
                media_resolution=plan.options.media_resolution,
            )
            for f in facts
        ),
        notes=notes,
    )


def _batch_images(ports: Ports, plan: JobPlan) -> list[ImageFacts] | None:
    """The images a batch request described (`Batches.add_job`), or None: the job's
    images are then fetched again."""
    stored = ports.batches.images(plan.job_id) if ports.batches is not None else None
    if stored is None or len(stored) != len(plan.input_uris):
        return None
    try:
        return [ImageFacts.from_json(item) for item in stored]
    except (TypeError, KeyError, ValueError):
        log.warning("unreadable batch image records; fetching the images", exc_info=True)
        return None
