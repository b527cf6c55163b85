"""Publish: an attempt's artifacts, then its result.json, committed once.

Key layout under `{output}/{job_id}/` (docs/contract.md, "Results"):

    result.json                       written last, once (conditional create)
    error.json                        instead of result.json when the job failed for good
    attempts/{attempt_id}/overlay.jpg artifacts of one attempt (overlay.png for non-photos);
                                      result.json names them
    attempts/{attempt_id}/masks/...

Artifacts go under a folder unique to the attempt, so two attempts racing on an
at-least-once queue never overwrite each other's files, and the winner's result.json
references only its own.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence

from worker.contract.layout import RESULT_NAME
from worker.contract.records import Outcome, ResultRecord, ReusedAnswer, Usage
from worker.observability import StageTimer
from worker.pipeline.acquire import Sent
from worker.pipeline.artifacts import write_artifacts
from worker.pipeline.obtain import Obtained, answer_cost_usd
from worker.pipeline.plan import JobPlan
from worker.pipeline.ports import Ports
from worker.pipeline.record_store import JSON_TYPE
from worker.storage import join_uri

log = logging.getLogger(__name__)


def publish(
    plan: JobPlan, ports: Ports, sent: Sent, obtained: Obtained, timer: StageTimer
) -> Outcome:
    job, answer = plan.job, obtained.answer
    with timer.stage("publish"):
        attempt_id = f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
        facts = sent.facts
        artifacts = write_artifacts(
            job,
            ports.stores,
            ports.settings.gvw_overlay_max_side_px,
            plan.folder,
            attempt_id,
            (facts[0].width_px, facts[0].height_px) if plan.draws else None,
            sent.first,
            obtained.parsed,
        )
        reused = obtained.reused
        record = ResultRecord(
            job_id=job.job_id,
            task=job.task,
            model=plan.model,
            model_version=answer.model_version,
            images=[f.record(t) for f, t in zip(facts, obtained.transports, strict=True)],
            output=artifacts.output,
            artifacts=artifacts.named,
            usage=Usage(
                prompt_tokens=answer.usage.prompt_tokens,
                output_tokens=answer.usage.output_tokens,
                total_tokens=answer.usage.total_tokens,
                thoughts_tokens=answer.usage.thoughts_tokens,
                estimated_image_tokens=sent.image_tokens,
                # a redelivery publishing its own paid answer records what that answer cost
                cost_usd=answer_cost_usd(ports, plan.model, answer),
            ),
            warnings=[
                *(f"image {i}: {w}" for i, f in enumerate(facts) for w in f.decoder_warnings),
                *sent.notes,
                *obtained.parsed.warnings,
            ],
            timings_ms={
                **{k: round(v * 1000, 1) for k, v in timer.seconds.items()},
                # a batch answer: the run that prepared the request, before the batch
                **(
                    {f"batch_{k}": v for k, v in ports.batches.timings_ms(job.job_id).items()}
                    if answer.batch and ports.batches is not None
                    else {}
                ),
            },
            attempt=plan.attempt,
            attempt_id=attempt_id,
            finish_reason=answer.finish_reason,
            fingerprint=plan.fingerprint,
            media_resolution=plan.options.media_resolution,
            mode="batch" if answer.batch else "interactive",
            answer_reused_from=(
                ReusedAnswer(job_id=reused.job_id, answered_at=reused.answered_at)
                if reused is not None
                else None
            ),
            run=job.run,
        )
        if answer.batch and plan.capped and job.run is not None:
            # the batch's answer is paid: its reservation under the run's cap settles
            ports.runs.settle(job.run, job.job_id, record.usage.cost_usd or 0.0)
        result_uri = join_uri(plan.folder, RESULT_NAME)
        created = ports.stores.create_exclusive(
            result_uri, record.to_json_bytes(), content_type=JSON_TYPE
        )
        # committed (by us or a racing attempt): the paid answer has done its job
        ports.answers.forget(job.job_id)
        if not created:
            # Another attempt committed first: its result stands, ours is discarded.
            _delete_quietly(ports, artifacts.written)
            return Outcome(
                job_id=job.job_id,
                status="succeeded",
                record_uri=result_uri,
                already_done=True,
                timings_s=timer.seconds,
                cost_usd=record.usage.cost_usd,
                fingerprint=plan.fingerprint,
            )
    log.info("job committed", extra={"job_id": job.job_id, "task": job.task, "uri": result_uri})
    return Outcome(
        job_id=job.job_id,
        status="succeeded",
        record_uri=result_uri,
        timings_s=timer.seconds,
        cost_usd=record.usage.cost_usd,
        fingerprint=plan.fingerprint,
    )


def _delete_quietly(ports: Ports, uris: Sequence[str]) -> None:
    for uri in uris:
        try:
            ports.stores.delete(uri)
        except Exception:  # orphans are harmless: nothing references them
            log.debug("could not delete orphan artifact %s", uri, exc_info=True)
