"""Admit: everything about a job that is decided before any I/O, in one value.

`admit` checks what the fleet allows (model, media resolution, a price when a budget is
kept, every URI against the allowlists) and settles what the later stages read: the
folder, the fingerprint, the task's request and the generation options. A job the
fleet refuses is refused here, before it claims its id or reads a byte; each later
stage reads these facts from the `JobPlan` instead of working them out again.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks import registry
from tasks.base import ModelRequest, TaskSpec, VisionTask
from tasks.errors import InvalidJob
from tasks.model_families import media_resolution_for
from worker.contract.jobs import Job
from worker.contract.layout import job_folder
from worker.gemini import GenerationOptions
from worker.pipeline.artifacts import OVERLAY_TASKS
from worker.pipeline.ports import Ports
from worker.settings import Settings
from worker.storage.uris import check_allowed

# what an upload named by a batch request must have left: the API answers a batch within
# 24 hours, and a request that failed inside one is asked again in the next
BATCH_FILE_LIFE_S = 30 * 3600.0


@dataclass(frozen=True)
class JobPlan:
    """A job as the stages see it: read once, never changed."""

    job: Job
    attempt: int
    model: str
    input_uris: tuple[str, ...]  # parsed and allowlisted: what the I/O uses
    folder: str  # where the job's records go
    fingerprint: str
    task: VisionTask
    spec: TaskSpec
    request: ModelRequest
    options: GenerationOptions
    fit_px: int  # the side images are reduced to before sending (0: as prepared)
    draws: bool  # detect and segment: the first image's size places the masks
    keeps_pixels: bool  # an overlay is drawn on the first image
    looks_up: bool  # the answer cache is asked before the model
    results: str  # the results folder (the job's output, or GVW_RESULTS_URI)
    capped: bool  # its run has a cost cap: each call reserves from it

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def batch(self) -> bool:
        return self.job.options.mode == "batch"


def admit(job: Job, ports: Ports, *, attempt: int = 1) -> JobPlan:
    """The job's plan, or the `InvalidJob` / `InputNotAllowed` that refuses it."""
    settings = ports.settings
    check_model_allowed(job.model, settings)
    model = job.model or settings.gvw_model
    # a resolution this model does not take is the job's error, found before any I/O
    media_resolution_for(model, job.options.media_resolution)
    if job.notify:
        # where the job's end is told: only destinations the fleet's allow-list permits
        ports.events.check(job.notify)
    # Every URI is checked before any is read: one bad URI refuses the whole job. The
    # parsed spelling is what the I/O below uses (worker.storage.uris: one parser).
    output = (
        check_allowed(job.output, settings.allowed_output_prefixes, role="output").text
        if job.output is not None
        else None
    )
    results = output or settings.gvw_results_uri
    capped = ports.runs.capped(job.run, results)
    if (ports.budget.enabled or capped) and ports.prices.price_of(model) is None:
        raise InvalidJob(
            f"model {model[:200]!r} has no price in the price table, and this job "
            + (
                f"is counted in a run with a cost cap ({job.run})"
                if capped
                else "spends within a budget (GVW_BUDGET_USD_PER_DAY)"
            )
            + ": add it with GVW_PRICES_FILE",
            field="model",
        )
    input_uris = tuple(
        check_allowed(uri, settings.allowed_input_prefixes, role="input").text for uri in job.images
    )
    folder = job_folder(job.job_id, output, settings)
    task = registry.get_task(job.task)
    spec = job.spec()
    request = task.build_request(spec)
    draws = job.task in OVERLAY_TASKS
    return JobPlan(
        job=job,
        attempt=attempt,
        model=model,
        input_uris=input_uris,
        folder=folder,
        fingerprint=job.fingerprint(folder),
        task=task,
        spec=spec,
        request=request,
        options=GenerationOptions(
            temperature=job.options.temperature,
            thinking_budget=job.options.thinking_budget,
            max_output_tokens=job.options.max_output_tokens,
            media_resolution=job.options.media_resolution,
        ),
        # tasks that ask for it (segment) get a reduced copy; 0 in the settings disables it
        fit_px=settings.gvw_fit_within_px if request.fit_within_px is not None else 0,
        draws=draws,
        keeps_pixels=draws and job.options.overlay,
        # the answer cache is looked up once every image is known (by its bytes as sent)
        looks_up=ports.answer_cache.enabled and not job.options.fresh,
        results=results,
        capped=capped,
    )


def check_model_allowed(model: str | None, settings: Settings) -> None:
    allowed = settings.allowed_models
    if model is not None and allowed and model not in allowed:
        raise InvalidJob(
            f"model {model[:200]!r} is not one this fleet runs (GVW_ALLOWED_MODELS: "
            f"{', '.join(sorted(allowed))})",
            field="model",
        )


def metric_model(model: str, settings: Settings) -> str:
    """The model as a metric label: one the fleet knows (GVW_MODEL, GVW_ALLOWED_MODELS),
    or "other", so a producer's made-up model names cannot grow the series without end."""
    return model if model == settings.gvw_model or model in settings.allowed_models else "other"
