"""The producer's library under the name it had before `worker/` had rooms (0.1 and the
README of issue 18): kept so a service that imports it keeps working. New code imports
`worker.producers`."""

from worker.producers.client import *  # noqa: F403
from worker.producers.client import JobStatus, JobWaitTimeout, ResultsElsewhere, VisionClient

__all__ = ["JobStatus", "JobWaitTimeout", "ResultsElsewhere", "VisionClient"]
