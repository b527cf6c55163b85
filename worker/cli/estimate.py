"""`gvw enqueue-prefix --dry-run`: what a prefix would cost, before anything is spent.

The jobs are priced as the worker prices them: the request their task builds
(`tasks.pricing.call_estimate_usd`, the budget's own estimate), images at the size they
are sent (`tasks.sent_size`), from the headers of a sample of the prefix's objects.
An operator's command, so it may read image headers with Pillow; producers stay light.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tasks.model_families import family_of, thinking_for
from tasks.pricing import (
    PriceTable,
    call_estimate_usd,
    expected_output_tokens,
    request_text_tokens,
)
from tasks.registry import get_task
from tasks.sent_size import fit_plan
from tasks.tokens import estimate_image_tokens
from worker.contract.jobs import parse_job
from worker.images.prepare import header_size_px
from worker.storage import ObjectInfo

# what a header read takes: enough for the size of every format we take (a JPEG's EXIF
# and ICC blocks come first, and can be long)
HEADER_BYTES = 64 * 1024


@dataclass
class PrefixEstimate:
    """What enqueueing a prefix would send and cost, from its listing and the headers of a
    sample of its objects (their pixel sizes set the image tokens)."""

    objects: int = 0
    already_done: int = 0  # objects whose job is committed already: a run skips them
    total_bytes: int = 0
    sampled: int = 0
    unreadable: int = 0  # sampled objects whose header gave no size (not images, cut)
    image_tokens_per_job: float = 0.0
    text_tokens_per_job: int = 0
    output_tokens_per_job: int = 0
    model: str = ""
    usd_per_million_in: float | None = None
    usd_interactive: float | None = None
    usd_batch: float | None = None
    prices_taken_on: str = ""

    @property
    def input_tokens(self) -> int:
        return round(self.objects * (self.image_tokens_per_job + self.text_tokens_per_job))

    @property
    def output_tokens(self) -> int:
        return self.objects * self.output_tokens_per_job

    def lines(self) -> list[str]:
        cost = (
            f"${_usd(self.usd_interactive)} interactive, ${_usd(self.usd_batch)} through the "
            f"Batch API (prices of {self.prices_taken_on})"
            if self.usd_interactive is not None and self.usd_batch is not None
            else f"no price for {self.model} in the price table (GVW_PRICES_FILE)"
        )
        done = f" ({self.already_done:,} more are done already)" if self.already_done else ""
        return [
            f"dry run: {self.objects:,} images ({self.total_bytes / 1e9:,.2f} GB) would be "
            f"enqueued for {self.model}{done}; nothing was submitted",
            f"tokens: about {self.input_tokens:,} in ({self.image_tokens_per_job:,.0f} image "
            f"tokens a job, from the headers of {self.sampled} sampled objects"
            + (f", {self.unreadable} without a readable size" if self.unreadable else "")
            + f"), at most {self.output_tokens:,} out ({self.output_tokens_per_job:,} a job, "
            "output and thinking as the job allows)",
            f"cost: at most {cost}",
        ]


def _usd(amount: float) -> str:
    return f"{amount:,.2f}" if amount >= 100 else f"{amount:,.4f}"


def estimate_prefix(
    objects: Iterable[ObjectInfo],
    template: Mapping[str, Any],
    *,
    read_head: Callable[[str, int], bytes],
    prices: PriceTable,
    model: str,
    fit_within_px: int,
    suffixes: tuple[str, ...] = (),
    sample: int = 100,
) -> PrefixEstimate:
    """Count the prefix's images from the listing, read the headers of up to ``sample`` of
    them spread evenly across it, and price the jobs at ``prices``: input from the
    sampled pixel sizes and the request the task builds, output at the most each job
    allows."""
    chosen = [o for o in objects if not suffixes or o.uri.lower().endswith(suffixes)]
    estimate = PrefixEstimate(
        objects=len(chosen), total_bytes=sum(o.size_bytes for o in chosen), model=model
    )
    if not chosen:
        return estimate
    # the request the worker will send for each job (the template was validated already)
    job = parse_job({**template, "job_id": "dry-run", "images": [chosen[0].uri]})
    request = get_task(job.task).build_request(job.spec())
    fit_px = fit_within_px if request.fit_within_px is not None else 0
    options = job.options
    step = max(1, len(chosen) // max(1, sample))
    tokens: list[int] = []
    for obj in chosen[::step][:sample]:
        estimate.sampled += 1
        size = header_size_px(read_head(obj.uri, HEADER_BYTES))
        if size is None:
            estimate.unreadable += 1
            continue
        width, height = fit_plan(*size, fit_px).sent_px
        tokens.append(
            estimate_image_tokens(
                width, height, model=model, media_resolution=options.media_resolution
            )
        )
    estimate.image_tokens_per_job = sum(tokens) / len(tokens) if tokens else 0.0
    image_tokens = round(estimate.image_tokens_per_job)
    thinking = thinking_for(
        model, spatial=request.spatial, requested_budget=options.thinking_budget
    )
    estimate.output_tokens_per_job = expected_output_tokens(
        max_output_tokens=options.max_output_tokens,
        thinks=family_of(model).thinking_knob is not None,
        thinking_budget=thinking.budget,
        thinking_level=thinking.level,
    )
    estimate.text_tokens_per_job = request_text_tokens(request)
    estimate.prices_taken_on = prices.taken_on

    def one_job(batch: bool) -> float | None:
        return call_estimate_usd(
            prices,
            model,
            request,
            image_tokens=image_tokens,
            max_output_tokens=options.max_output_tokens,
            thinking_budget=options.thinking_budget,
            batch=batch,
        )

    one, one_batch = one_job(False), one_job(True)
    if one is not None and one_batch is not None:
        estimate.usd_interactive = one * estimate.objects
        estimate.usd_batch = one_batch * estimate.objects
    return estimate
