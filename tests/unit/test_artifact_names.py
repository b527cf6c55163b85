"""Model labels never become paths: every artifact key stays in the job's folder, unique."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tasks.base import TaskOutput
from tasks.masks import BoxMask
from worker.contract.jobs import parse_job
from worker.images.prepare import prepare_image
from worker.pipeline.artifacts import write_artifacts
from worker.settings import Settings
from worker.storage import StoreRouter

HOSTILE = ["../../x", "x" * 10_000, "猫 🐱", "", "cupcake", "cupcake", "/etc/passwd", "a/../../b"]


@pytest.fixture
def png_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 200, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_hostile_labels_give_safe_unique_names(tmp_path: Path, png_bytes: bytes) -> None:
    job = parse_job({"job_id": "j-1", "task": "segment", "images": ["s3://inbox/a.png"]})
    image = prepare_image(png_bytes)
    objects: list[dict[str, Any]] = [
        {"label": label, "box_2d": [0, 0, 500, 500], "box": [0, 0, 32, 24]} for label in HOSTILE
    ]
    masks = [BoxMask(0, 0, np.ones((24, 32), dtype=bool)) for _ in HOSTILE]
    parsed = TaskOutput(output={"objects": objects}, masks=list(masks))
    folder = f"file://{tmp_path}/out/j-1"
    overlay_max_side_px = Settings().gvw_overlay_max_side_px
    size_px = (image.width_px, image.height_px)
    done = write_artifacts(
        job, StoreRouter(), overlay_max_side_px, folder, "att-1", size_px, image, parsed
    )
    objects = done.output["objects"]
    written = done.written
    mask_uris = [o["mask"] for o in objects]
    assert len(set(mask_uris)) == len(HOSTILE)
    job_dir = (tmp_path / "out" / "j-1").resolve()
    for uri in written:
        path = Path(uri.removeprefix("file://")).resolve()
        assert path.is_relative_to(job_dir), uri
        assert path.exists()
        assert len(path.name) <= 3 + 1 + 48 + 4
    names = sorted(p.name for p in (job_dir / "attempts" / "att-1" / "masks").iterdir())
    assert names[0] == "000-x.png"
    assert all(all(c.isascii() and (c.isalnum() or c in "-.") for c in n) for n in names)
    assert [o["label"] for o in objects] == HOSTILE  # the raw label stays inside the JSON
