"""Scenarios 15-18 of docs/reliability.md: what a job or a model hands the worker is hostile.

15. Decompression bomb, truncated image, zero bytes, PDF named `.png` -> `invalid_image`
    or `too_large`, no retry, low memory.
16. EXIF-rotated JPEG -> boxes and masks line up with the upright image.
17. Hostile labels (`../../x`, 10 kB, unicode, empty, duplicates) -> every key stays inside
    the job's folder, unique.
18. An input outside `GVW_ALLOWED_INPUTS` (another bucket, `file:///etc/passwd`) ->
    `input_not_allowed`, nothing read.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from tasks.detect import EMPTY_LABEL, LABEL_MAX_CHARS
from tests.conftest import GEMINI_REAL
from tests.harness import list_job_keys
from tests.reliability.conftest import FleetFactory, assert_invariant
from tests.reliability.fakes import GeminiStub, S3Proxy
from worker.emulator.scenes import Scene, encode_png, make_scene


def s3_bytes(stack: Any, uri: str) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return bytes(stack.s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def box_iou(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


# --- 15. bad bytes ---------------------------------------------------------------------------


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def zero_png(width: int, height: int, *, colour_type: int, bit_depth: int, rows: int = -1) -> bytes:
    """A valid PNG of one colour, built row by row so the test never holds the decoded
    image: a few hundred kB on disk for hundreds of MB decoded. `rows` < height gives a
    header that claims more than the data holds."""
    channels = {0: 1, 2: 3}[colour_type]
    row = b"\x00" * (1 + (width * channels * bit_depth + 7) // 8)
    compressor = zlib.compressobj(6)
    idat = b"".join(compressor.compress(row) for _ in range(height if rows < 0 else rows))
    idat += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> bool:
    """Start a new VmHWM measurement (Linux: writing 5 to clear_refs resets the peak)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


MAX_IMAGE_PIXELS = 20_000_000
MAX_INPUT_BYTES = 8_000_000
# What a bad input may add to the worker's peak memory. Decoding any of the bombs below
# would add at least 144 MB (8000 x 6000 RGB); the largest would add 400 MB or more.
PEAK_GROWTH_LIMIT_KIB = 64 * 1024


def test_bad_bytes_end_in_one_error_record_without_retry_or_memory_spike(
    fleet: FleetFactory,
) -> None:
    scene = make_scene(640, 480, shapes=["red circle", "blue rectangle"], seed=15)
    png, jpeg = scene.png_bytes(), scene.jpeg_bytes()
    bad = {
        # 400 MP of 1-bit pixels: ~50 kB on disk, above Pillow's own bomb threshold
        "bomb-400mp-1bit": (zero_png(20_000, 20_000, colour_type=0, bit_depth=1), "too_large"),
        # 48 MP RGB: under Pillow's threshold, above GVW_MAX_IMAGE_PIXELS (144 MB decoded)
        "bomb-48mp-rgb": (zero_png(8_000, 6_000, colour_type=2, bit_depth=8), "too_large"),
        # the header claims 10 gigapixels, the data holds one row
        "header-claims-10gp": (
            zero_png(100_000, 100_000, colour_type=0, bit_depth=8, rows=1),
            "too_large",
        ),
        "truncated-png": (png[: len(png) // 2], "invalid_image"),
        "truncated-jpeg": (jpeg[: len(jpeg) // 2], "invalid_image"),
        "zero-bytes": (b"", "invalid_image"),
        "pdf-named-png": (
            b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n",
            "invalid_image",
        ),
        # bigger than GVW_MAX_INPUT_BYTES: refused from its length, before the body is read
        "oversized-object": (os.urandom(MAX_INPUT_BYTES + 1_000_000), "too_large"),
    }
    env = {
        "GVW_MAX_IMAGE_PIXELS": str(MAX_IMAGE_PIXELS),
        "GVW_MAX_INPUT_BYTES": str(MAX_INPUT_BYTES),
    }
    # one worker process (thread pool), so its peak RSS covers every job it runs
    with fleet(workers=1, concurrency=2, extra_env=env) as stack:
        pid = stack.worker.proc.pid
        good_uri = stack.put(f"good/{uuid.uuid4().hex}.png", png)
        warm_up = stack.submit({"task": "detect", "images": [good_uri]})
        assert assert_invariant(stack, [warm_up])[0]["status"] == "succeeded"
        calls_before = stack.model_calls()

        resettable = reset_peak_rss(pid)
        baseline_kib = vm_kib(pid, "VmRSS" if resettable else "VmHWM")
        uris = {name: stack.put(f"bad/{name}.png", data) for name, (data, _) in bad.items()}
        job_ids = {
            name: stack.submit({"task": "detect", "images": [uri]}) for name, uri in uris.items()
        }
        records = dict(zip(job_ids, assert_invariant(stack, list(job_ids.values())), strict=True))
        peak_kib = vm_kib(pid, "VmHWM")

        # the worker is still healthy afterwards
        after = stack.submit({"task": "detect", "images": [good_uri]})
        assert assert_invariant(stack, [after])[0]["status"] == "succeeded"
        assert stack.worker.proc.poll() is None
        model_calls = stack.model_calls() - calls_before

    for name, (_, code) in bad.items():
        record = records[name]
        assert record["status"] == "failed", (name, record)
        assert record["error"]["code"] == code, (name, record["error"])
        assert record["error"]["retryable"] is False
        assert record["attempts"] == 1, (name, record)  # no retry
    assert model_calls == 1  # only the healthy job after them asked the model
    growth_kib = peak_kib - baseline_kib
    assert growth_kib < PEAK_GROWTH_LIMIT_KIB, (
        f"peak RSS grew by {growth_kib / 1024:.0f} MiB while refusing bad images"
    )


# --- 16. EXIF orientation --------------------------------------------------------------------

# What a viewer does for each EXIF orientation (Pillow's exif_transpose table), and the
# inverse the test applies to store the upright scene under that tag.
_VIEWER_OP = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_INVERSE = {
    Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
    Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
}


def stored_with_orientation(scene: Scene, orientation: int) -> bytes:
    """JPEG whose stored pixels are transformed so that a viewer applying the EXIF tag
    shows `scene` upright."""
    op = _VIEWER_OP[orientation]
    stored = scene.image.transpose(_INVERSE.get(op, op))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, subsampling=0, exif=exif)
    data = buffer.getvalue()
    # the test's own premise: what a viewer shows is the upright scene
    shown = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert shown.size == scene.image.size
    diff = np.abs(np.asarray(shown, np.int16) - np.asarray(scene.image, np.int16))
    assert float(diff.mean()) < 3, (orientation, float(diff.mean()))
    return data


ORIENTATIONS = (2, 3, 4, 5, 6, 7, 8)


def test_exif_rotated_jpegs_give_boxes_and_masks_on_the_upright_image(
    fleet: FleetFactory,
) -> None:
    # not square, shapes away from the centre: any frame mix-up moves every box
    scene = make_scene(800, 600, shapes=["red circle", "blue rectangle", "green triangle"], seed=16)
    with fleet(workers=2, concurrency=2) as stack:
        jobs: dict[tuple[str, int], str] = {}
        for orientation in ORIENTATIONS:
            uri = stack.put(
                f"exif/{orientation}-{uuid.uuid4().hex}.jpg",
                stored_with_orientation(scene, orientation),
            )
            for task in ("detect", "segment"):
                jobs[task, orientation] = stack.submit({"task": task, "images": [uri]})
        records = dict(zip(jobs, assert_invariant(stack, list(jobs.values())), strict=True))

        for (task, orientation), record in records.items():
            where = (task, orientation)
            assert record["status"] == "succeeded", (where, record)
            image = record["images"][0]
            assert (image["width"], image["height"]) == scene.image.size, where
            objects = record["output"]["objects"]
            assert sorted(o["label"] for o in objects) == sorted(scene.labels), (where, objects)
            overlay = Image.open(io.BytesIO(s3_bytes(stack, record["artifacts"]["overlay"])))
            assert overlay.size == scene.image.size, where
            for shape in scene.shapes:
                (obj,) = [o for o in objects if o["label"] == shape.label]
                score = box_iou(obj["box"], shape.box_xyxy_px)
                assert score >= 0.9, (where, shape.label, obj["box"], shape.box_xyxy_px)
                if task == "segment":
                    png = Image.open(io.BytesIO(s3_bytes(stack, obj["mask"])))
                    assert png.size == scene.image.size, where
                    found = np.asarray(png) == 255
                    score = mask_iou(found, shape.mask)
                    assert score >= 0.9, (where, shape.label, score)


# --- 17. hostile labels ----------------------------------------------------------------------


def real_mask_data_uri() -> str:
    """A mask exactly as Gemini 2.5 Flash wrote one (the cookbook's cupcakes)."""
    text = next(GEMINI_REAL.glob("segment_02_*.txt")).read_text()
    match = re.search(r'"mask":\s*"(data:image/png;base64,[A-Za-z0-9+/=]+)"', text)
    assert match, "no mask in the fixture"
    return match.group(1)


HOSTILE_LABELS: list[Any] = [
    "../../x",
    "../../../../etc/passwd",
    "A" * 10_000,
    "猫 🐱 Ünïcödé ẞ",
    "",
    "   ",
    "dup",
    "dup",
    "/absolute/path",
    "a/b\\c",
    "..",
    ".",
    "x\x00y",
    "CON",
    "line\nbreak",
    "%2e%2e%2f",
    "\u202egnp.exe",
    "🐱" * 300,
    "  padded  ",
    None,
    42,
    {"nested": "../x"},
]


def expected_label(raw: Any) -> str:
    """What detect keeps of a raw label: stripped, capped, never empty (tasks/detect.py)."""
    if raw is None:
        return EMPTY_LABEL
    if isinstance(raw, str):
        text = raw.strip()
    elif isinstance(raw, dict | list):
        text = json.dumps(raw, ensure_ascii=False)
    else:
        text = str(raw)
    return text[:LABEL_MAX_CHARS] if text else EMPTY_LABEL


def hostile_answer(mask: str) -> str:
    """A segmentation answer in Gemini's fenced style: one box per cell of a grid, each
    with a real mask and a hostile label."""
    items = []
    for index, label in enumerate(HOSTILE_LABELS):
        row, col = divmod(index, 6)
        y0, x0 = 20 + row * 240, 20 + col * 160
        items.append({"box_2d": [y0, x0, y0 + 200, x0 + 130], "mask": mask, "label": label})
    return "```json\n" + json.dumps(items, ensure_ascii=False) + "\n```"


MASK_NAME = re.compile(r"[0-9]{3}-[a-z0-9-]{1,48}\.png")


def test_hostile_labels_never_leave_the_job_folder(fleet: FleetFactory) -> None:
    assert len(HOSTILE_LABELS) <= 25  # within the default max_items: every label is used
    stub = GeminiStub(hostile_answer(real_mask_data_uri()))
    stub.start()
    try:
        with fleet(workers=1, concurrency=2, extra_env={"GEMINI_BASE_URL": stub.url}) as stack:
            scene = make_scene(640, 480, shapes=["red circle"], seed=17)
            uri = stack.put(f"labels/{uuid.uuid4().hex}.png", encode_png(scene.image))
            job_ids = {
                task: stack.submit({"task": task, "images": [uri]})
                for task in ("segment", "detect")
            }
            records = dict(
                zip(job_ids, assert_invariant(stack, list(job_ids.values())), strict=True)
            )
            all_keys = [
                obj["Key"]
                for page in stack.s3.get_paginator("list_objects_v2").paginate(Bucket="results")
                for obj in page.get("Contents", [])
            ]
            keys = {task: list_job_keys(stack.s3, job_id) for task, job_id in job_ids.items()}
            mask_pngs = {
                o["mask"]: Image.open(io.BytesIO(s3_bytes(stack, o["mask"])))
                for o in records["segment"]["output"]["objects"]
            }
    finally:
        stub.stop()
    assert stub.calls == 2

    # nothing anywhere in the results bucket outside the two jobs' folders
    folders = tuple(f"vision/{job_id}/" for job_id in job_ids.values())
    assert all(key.startswith(folders) for key in all_keys), all_keys
    for task, job_id in job_ids.items():
        record = records[task]
        assert record["status"] == "succeeded", record
        objects = record["output"]["objects"]
        # the raw labels, as the code keeps them: inside the JSON, never in a path
        assert [o["label"] for o in objects] == [expected_label(r) for r in HOSTILE_LABELS]
        assert all(len(o["label"]) <= LABEL_MAX_CHARS for o in objects)
        assert any("cut to" in w for w in record["warnings"]), record["warnings"]
        attempt = f"vision/{job_id}/attempts/{record['attempt_id']}/"
        for key in keys[task]:
            assert key.startswith(f"vision/{job_id}/"), key
            assert "/../" not in key and "\x00" not in key, key
            assert key == f"vision/{job_id}/result.json" or key.startswith(attempt), key

    # one mask per object, each under its own safe, unique name
    objects = records["segment"]["output"]["objects"]
    masks = [o["mask"] for o in objects]
    assert len(masks) == len(set(masks)) == len(HOSTILE_LABELS)
    prefix = f"s3://results/vision/{job_ids['segment']}/attempts/"
    for index, uri in enumerate(masks):
        assert uri.startswith(prefix), uri
        folder, _, name = uri.rpartition("/")
        assert folder.endswith("/masks"), uri
        assert MASK_NAME.fullmatch(name), uri
        assert name.startswith(f"{index:03d}-"), uri
        assert mask_pngs[uri].size == (640, 480)
    assert [k for k in keys["detect"] if "/masks/" in k] == []  # detect draws no masks


# --- 18. inputs outside the allowlist ----------------------------------------------------------


def test_inputs_outside_the_allowlist_are_refused_before_anything_is_read(
    fleet: FleetFactory, tmp_path: Path
) -> None:
    png = make_scene(320, 240, shapes=["red circle"], seed=18).png_bytes()
    # a FIFO: opening it for reading blocks until a writer comes, so a worker that tried to
    # read it would hang there instead of writing input_not_allowed
    fifo = tmp_path / "secret.png"
    os.mkfifo(fifo)
    proxy = S3Proxy()  # every S3 request the workers make, logged
    proxy.start()
    try:
        # outputs limited too (the default, "s3://", lets a job write to any bucket)
        env = {"AWS_ENDPOINT_URL_S3": proxy.url, "GVW_ALLOWED_OUTPUTS": "s3://results/"}
        with fleet(workers=2, concurrency=2, extra_env=env) as stack:
            proxy.upstream = stack.moto.endpoint
            stack.s3.create_bucket(Bucket="inbox-evil")
            # valid images everywhere: reading any of them would let the job succeed
            stack.put("secret.png", png, bucket="other")
            stack.put("secret.png", png, bucket="inbox-evil")
            allowed_key = f"allowed/{uuid.uuid4().hex}.png"
            allowed = stack.put(allowed_key, png)
            refused = {
                "other-bucket": {"images": ["s3://other/secret.png"]},
                "prefix-trick": {"images": ["s3://inbox-evil/secret.png"]},
                "etc-passwd": {"images": ["file:///etc/passwd"]},
                "fifo": {"images": [f"file://{fifo}"]},
                "http-metadata": {"images": ["http://169.254.169.254/latest/meta-data/"]},
                # one bad image refuses the whole job: the allowed one is not read either
                "mixed": {"images": [allowed, "s3://other/secret.png"], "task": "compare"},
                # a disallowed output is refused too, before any input is read or written
                "other-output": {"images": [allowed], "output": "s3://other/out"},
            }
            job_ids = {
                name: stack.submit({"task": "caption", **job}) for name, job in refused.items()
            }
            records = dict(
                zip(job_ids, assert_invariant(stack, list(job_ids.values())), strict=True)
            )
            model_calls = stack.model_calls()
            refused_log = proxy.log()
            assert_fifo_never_opened(fifo)  # while the workers still run

            # control: an allowed job is read through the proxy
            control = stack.submit({"task": "caption", "images": [allowed]})
            assert assert_invariant(stack, [control])[0]["status"] == "succeeded"
            control_log = proxy.log()[len(refused_log) :]

            # Dot segments in an S3 key pass the prefix check as text. botocore sends the
            # path as is ("/inbox/../other/secret.png"); S3 and moto read it as a literal
            # key of the inbox. What must never happen is a read of the other bucket.
            seen = len(proxy.log())
            dotted = stack.submit({"task": "caption", "images": ["s3://inbox/../other/secret.png"]})
            (dotted_record,) = assert_invariant(stack, [dotted])
            dotted_log = proxy.log()[seen:]
            other_keys = {
                obj["Key"] for obj in stack.s3.list_objects_v2(Bucket="other").get("Contents", [])
            }
    finally:
        proxy.stop()

    for name, record in records.items():
        assert record["status"] == "failed", (name, record)
        assert record["error"]["code"] == "input_not_allowed", (name, record["error"])
        assert record["attempts"] == 1, (name, record)
    assert model_calls == 0
    # nothing was read outside the inbox, and nothing at all from the inbox
    assert refused_log, "the workers' S3 requests did not go through the proxy"
    touched = {(r.method, r.bucket) for r in refused_log}
    assert {bucket for _, bucket in touched} == {"results"}, touched
    assert all(r.key.startswith("vision/") for r in refused_log), refused_log
    # nothing written to the other bucket either
    assert other_keys == {"secret.png"}, other_keys
    assert ("GET", "inbox") in {(r.method, r.bucket) for r in control_log}, control_log
    assert dotted_record["status"] == "failed", dotted_record
    # a ".." segment is refused outright (worker.storage.uris): nothing of the inbox is read
    assert dotted_record["error"]["code"] == "invalid_job"
    assert {r.bucket for r in dotted_log} <= {"results"}, dotted_log


def assert_fifo_never_opened(fifo: Path) -> None:
    """A non-blocking open for writing fails with ENXIO exactly when no process has the
    FIFO open for reading; a worker that had tried to read it would still be blocked in
    open(), holding it."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        assert exc.errno == errno.ENXIO, exc
        return
    os.close(fd)
    raise AssertionError(f"a process holds {fifo} open for reading")
