from __future__ import annotations

import pytest

from tasks.transport_plan import REQUEST_OVERHEAD_BYTES, base64_size, plan_transports

MB = 1_000_000


@pytest.mark.parametrize(
    ("sizes", "cached", "limit", "expected"),
    [
        pytest.param([1 * MB], [False], 20 * MB, ["inline"], id="small-inline"),
        pytest.param([25 * MB], [False], 20 * MB, ["file_api"], id="large-uploaded"),
        pytest.param([100], [True], 20 * MB, ["file_api"], id="cached-goes-by-uri-whatever-size"),
        pytest.param(
            [6 * MB, 9 * MB, 5 * MB],
            [False, False, False],
            20 * MB,
            ["inline", "file_api", "inline"],
            id="largest-first-until-under",
        ),
        pytest.param(
            [8 * MB, 8 * MB, 8 * MB],
            [False, False, False],
            20 * MB,
            ["file_api", "file_api", "inline"],
            id="ties-by-order",
        ),
        pytest.param(
            [9 * MB, 9 * MB], [True, False], 20 * MB, ["file_api", "inline"], id="cached-frees-room"
        ),
        pytest.param([15 * MB], [False], 20 * MB, ["file_api"], id="base64-counts-not-raw-bytes"),
    ],
)
def test_plan(sizes: list[int], cached: list[bool], limit: int, expected: list[str]) -> None:
    assert plan_transports(sizes, cached, prompt_bytes=100, inline_max_bytes=limit) == expected


def test_inline_request_stays_under_the_limit() -> None:
    sizes = [3 * MB, 7 * MB, 2 * MB, 5 * MB, 1 * MB]
    plan = plan_transports(sizes, [False] * 5, prompt_bytes=1000, inline_max_bytes=10 * MB)
    inline = sum(base64_size(s) for s, t in zip(sizes, plan, strict=True) if t == "inline")
    assert inline + 1000 + REQUEST_OVERHEAD_BYTES <= 10 * MB
    assert plan.count("file_api") == 2  # the 7 MB and the 5 MB
