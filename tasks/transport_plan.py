"""Which images of one request go inline and which through the File API.

Pure arithmetic over sizes. The inline limit is on the whole request as sent, so an
inline image counts at its base64 size (4/3 of its bytes) plus the prompt and a margin
for the JSON around them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

# how one image went: as bytes, by a File API URI, or by a URL Gemini fetched itself
Transport = Literal["inline", "file_api", "url"]
# GVW_TRANSPORT: how a deployment sends images
TransportMode = Literal["auto", "inline", "file_api", "url"]

# JSON keys, mime types and generation config around the parts of a request
REQUEST_OVERHEAD_BYTES = 4096


def base64_size(size_bytes: int) -> int:
    return 4 * ((size_bytes + 2) // 3)


def plan_transports(
    sizes_bytes: Sequence[int],
    cached: Sequence[bool],
    *,
    prompt_bytes: int,
    inline_max_bytes: int,
) -> list[Transport]:
    """Cached uploads go by URI whatever their size; then, while the inline request would
    pass `inline_max_bytes`, the largest remaining image moves to the File API."""
    if len(sizes_bytes) != len(cached):
        raise ValueError("sizes_bytes and cached differ in length")
    plan: list[Transport] = ["file_api" if hit else "inline" for hit in cached]
    total = (
        REQUEST_OVERHEAD_BYTES
        + prompt_bytes
        + sum(base64_size(size) for size, hit in zip(sizes_bytes, cached, strict=True) if not hit)
    )
    # largest first: the fewest uploads that bring the request under the limit
    candidates = sorted(
        (i for i, hit in enumerate(cached) if not hit), key=lambda i: (-sizes_bytes[i], i)
    )
    for index in candidates:
        if total <= inline_max_bytes:
            break
        plan[index] = "file_api"
        total -= base64_size(sizes_bytes[index])
    return plan


class InlinePlanner:
    """`plan_transports` one image at a time, so a job never holds more than one request's
    worth of image bytes: each image is held for the inline request as it arrives, and
    whenever the request would pass `inline_max_bytes`, the largest held images move to
    the File API (to be uploaded at once, and their bytes let go).

    It moves the same images the whole-list plan would: that plan keeps the smallest
    images whose request fits, and adding an image can only push out the largest ones.
    Images already uploaded (cached) are never held, so they are not added here.
    """

    def __init__(self, *, prompt_bytes: int, inline_max_bytes: int) -> None:
        self._inline_max_bytes = inline_max_bytes
        self._total = REQUEST_OVERHEAD_BYTES + prompt_bytes
        self._held: dict[int, int] = {}  # index -> size in bytes

    @property
    def held(self) -> frozenset[int]:
        return frozenset(self._held)

    def add(self, index: int, size_bytes: int) -> list[int]:
        """Hold image `index` inline; return the indexes (largest first) that must move
        to the File API now to keep the request within the limit."""
        if index in self._held:
            raise ValueError(f"image {index} was added twice")
        self._held[index] = size_bytes
        self._total += base64_size(size_bytes)
        moved: list[int] = []
        while self._total > self._inline_max_bytes and self._held:
            # the same order as plan_transports: largest first, then the lowest index
            largest = min(self._held, key=lambda i: (-self._held[i], i))
            self._total -= base64_size(self._held.pop(largest))
            moved.append(largest)
        return moved
