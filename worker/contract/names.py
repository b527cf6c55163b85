"""The names a producer and a worker must agree on (docs/contract.md): the task and its queue.

Both sides import them from here, so a producer needs nothing of the worker's runtime and
the worker nothing of a producer's sending code.
"""

from typing import Final

TASK_NAME: Final = "vision.analyze"
QUEUE: Final = "vision"
