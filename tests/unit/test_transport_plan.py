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


def test_planning_one_image_at_a_time_moves_what_the_whole_plan_moves() -> None:
    import random

    from tasks.transport_plan import InlinePlanner

    rng = random.Random(7)
    for _ in range(2000):
        count = rng.randint(1, 12)
        sizes = [rng.choice([rng.randint(1, 3 * MB), 2 * MB, 1 * MB]) for _ in range(count)]
        limit = rng.randint(1, 12) * MB
        expected = plan_transports(sizes, [False] * count, prompt_bytes=500, inline_max_bytes=limit)
        planner = InlinePlanner(prompt_bytes=500, inline_max_bytes=limit)
        moved: list[int] = []
        for index, size in enumerate(sizes):
            moved += planner.add(index, size)
        streamed = ["file_api" if i in moved else "inline" for i in range(count)]
        assert streamed == expected, (sizes, limit)
        assert planner.held == {i for i in range(count) if i not in moved}
