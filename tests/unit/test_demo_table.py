"""The table `gvw demo` ends with: as wide as the terminal, answers cut between words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from worker.cli import demo

CAPTION = (
    "A white background with 3 shapes: a red circle, a blue rectangle and a green "
    "triangle; the circle is in the upper left, the rectangle in the middle."
)


def records(results: Path) -> list[dict[str, Any]]:
    """What `gvw demo` reads back from its jobs' records (result.json, error.json)."""

    def record(job_id: str, task: str, **fields: Any) -> dict[str, Any]:
        path = results / job_id / ("error.json" if "error" in fields else "result.json")
        return {"job_id": job_id, "task": task, "_path": str(path), **fields}

    overlay = f"file://{results}/demo-detect-exif/attempts/1796289900-b075c7fa/overlay.jpg"
    return [
        record("demo-caption", "caption", status="succeeded", output={"text": CAPTION}),
        record("demo-vqa", "vqa", status="succeeded", output={"text": "There are 3 shapes."}),
        record(
            "demo-detect-exif",
            "detect",
            status="succeeded",
            output={"objects": [{"label": "orange rectangle"}, {"label": "purple circle"}]},
            artifacts={"overlay": overlay},
        ),
        record(
            "demo-batch",
            "caption",
            status="succeeded",
            mode="batch",
            output={"text": "Supercalifragilisticexpialidocious-and-then-some " * 3},
        ),
        record(
            "demo-too-large",
            "caption",
            status="failed",
            error={
                "code": "too_large",
                "message": "image too large: 10000x9500 px is 95000000 pixels,\nabove the "
                "limit of 89000000",
            },
        ),
    ]


def words(text: str) -> set[str]:
    return set(text.split())


def assert_no_cut_word(line: str, row: list[str] | tuple[str, ...]) -> None:
    """Every word of `line` is a whole word of the row it shows (an ellipsis aside)."""
    whole = words(" ".join(row))
    for word in line.split():
        kept = word.removesuffix("…")
        assert not kept or kept in whole, (word, line)


@pytest.mark.parametrize("columns", [60, 80, 100, 132])
def test_the_demo_table_fits_the_terminal_and_cuts_answers_between_words(
    columns: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # the paths shown are relative to here
    monkeypatch.setenv("COLUMNS", str(columns))
    demo._print_table(records(tmp_path / "results"), root=tmp_path)
    lines = capsys.readouterr().out.splitlines()
    overlay = "results/demo-detect-exif/attempts/1796289900-b075c7fa/overlay.jpg"
    assert overlay in lines  # whole, alone on its line: a path is never cut
    text = [line for line in lines if line != overlay]
    assert all(len(line) <= columns for line in text), "\n".join(lines)
    caption_line = next(line for line in lines if line.startswith("demo-caption "))
    assert "…" in caption_line  # the caption is longer than any of these terminals
    assert_no_cut_word(caption_line, ["demo-caption", "caption", "succeeded", CAPTION])
    # the job ids are whole, and so are the paths of the overlays
    for job_id in ("demo-caption", "demo-vqa", "demo-detect-exif", "demo-batch"):
        assert any(line.split()[:1] == [job_id] for line in lines), (job_id, lines)
    assert "records: results/<job>/result.json (or error.json)" in lines


ROWS = [
    ("job", "task", "status", "answer"),
    ("demo-caption", "caption", "succeeded", CAPTION),
    ("demo-detect-exif", "detect", "succeeded", "2 objects: orange rectangle, purple circle"),
    ("demo-json", "custom", "succeeded", '{"shape_count": 3, "colours": ["red", "blue"]}'),
    ("demo-long-word", "custom", "succeeded", "Pneumonoultramicroscopicsilicovolcanoconiosis"),
    ("demo-hyphens", "vqa", "succeeded", "a blue-green-yellow-orange-violet striped thing"),
    ("demo-failed", "caption", "failed", "too_large: image too large:\n10000x9500 px"),
]


@pytest.mark.parametrize("width", [20, 30, 45, 60, 80, 100, 200])
def test_table_lines_never_pass_the_width_nor_cut_a_word(width: int) -> None:
    lines = demo.render_table(ROWS, width)
    assert len(lines) == len(ROWS) + 1  # the header, a rule under it, one line a row
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    assert set(lines[1]) <= {"-", " "}
    for line, row in zip([lines[0], *lines[2:]], ROWS, strict=True):
        assert_no_cut_word(line, row)


def test_a_wide_enough_table_shows_every_cell_whole() -> None:
    lines = demo.render_table(ROWS, 200)
    for line, row in zip([lines[0], *lines[2:]], ROWS, strict=True):
        assert line.split() == " ".join(row).split()
        assert "…" not in line
    # the columns line up: each answer starts where the header's does
    start = lines[0].index("answer")
    assert lines[2][start:].startswith("A white background")


def test_the_answer_gives_way_before_the_job_ids() -> None:
    lines = demo.render_table(ROWS, 60)
    assert [line.split()[0] for line in lines[2:]] == [row[0] for row in ROWS[1:]]


def test_the_width_is_the_terminals_with_a_sane_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "132")
    assert demo.terminal_width_chars() == 132
    monkeypatch.setenv("COLUMNS", "12")
    assert demo.terminal_width_chars() == demo.MIN_TABLE_WIDTH_CHARS
