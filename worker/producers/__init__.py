"""What a backend service needs to send jobs and learn their fate: light (no image,
numeric or Gemini library; import-linter's "light" contract holds it so).

    from worker.producers import VisionClient
"""

from worker.producers.client import (
    JobStatus,
    JobWaitTimeout,
    ResultsElsewhere,
    VisionClient,
    result,
    status,
    submit,
    wait,
)
from worker.producers.producer import BrokerUnavailable

__all__ = [
    "BrokerUnavailable",
    "JobStatus",
    "JobWaitTimeout",
    "ResultsElsewhere",
    "VisionClient",
    "result",
    "status",
    "submit",
    "wait",
]
