"""Full-size masks from Gemini's PNG maps: the guide's per-pixel loop against tasks.masks.

Inputs: the 20 real masks of ``segment_01`` (gemini-2.5-pro, cupcakes; 256x256 PNG maps)
placed on a 1024x1024 image and on a 4032x3024 one (a 12 MP phone photo). Per object:

- guide loop, as Google's image-understanding guide writes it: decode the PNG, resize it
  to the box with BILINEAR, ``np.array`` it, then a Python double loop over the box
  calling ``ImageDraw.point`` on an image-sized RGBA overlay for every pixel above the
  threshold (the full mask is the overlay's alpha);
- array loop: the same, but the loop sets ``full[y, x] = True`` in a numpy bool array
  (the cheapest form a per-pixel loop can take, to show what the loop itself costs);
- ours: `tasks.masks.decode_mask` (a box-sized crop: the PNG read with zlib and numpy,
  Pillow's resize, bilinear when enlarging and nearest when shrinking, the threshold),
  each full mask built in turn in one full-size array per image (`tasks.masks.FullMasks`,
  which clears the previous object's box: a fresh 12 MB array per object of a 12 MP
  image costs more than decoding its mask);
- supervision (with `pip install '.[bench]'`): `Detections.from_vlm(GOOGLE_GEMINI_2_5)`
  on the whole answer against ours on the whole answer (`tasks.segment` reading it, then
  every full mask).

Ours shrinks with nearest where the guide's bilinear averages (Pillow widens its filter
when shrinking): the agreement column shows what that changes. All three get the
same pixel boxes (from `tasks.geometry`; the guide truncates with int(),
which moves a box by up to a pixel and is not what is measured here) and the same
threshold, 127 (the guide writes ``> 128``; these maps hold only 0 and 255, so the two
agree). Agreement is the share of pixels, over every object's full mask, on which the
reference's full mask and ours are equal. Each reference runs once (the guide loop takes
seconds at 12 MP); ours runs --repeat times and the median is shown. With
--objects N only the first N objects are used, and the output says so.

    .venv/bin/python benchmarks/masks.py [--repeat 5] [--objects 20]
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from tasks.base import ImageSize, TaskSpec
from tasks.detect import Detection, parse_detections
from tasks.masks import FullMasks, decode_mask
from tasks.segment import TASK as SEGMENT

FIXTURE = (
    Path(__file__).resolve().parents[1]
    / "tests"
    / "fixtures"
    / "gemini_real"
    / "segment_01_cookbook_cupcakes-small-items_gemini-2.5-pro-exp-03-25.txt"
)
SIZES_PX = ((1024, 1024), (4032, 3024))
THRESHOLD_U8 = 127

Box = tuple[int, int, int, int]
FullMask = Callable[[dict[str, Any], Box, int, int], NDArray[np.bool_]]


def guide_loop(item: dict[str, Any], box: Box, width_px: int, height_px: int) -> NDArray[np.bool_]:
    """The guide's code for one object (only its output files left out)."""
    x0, y0, x1, y1 = box
    png_str = item["mask"]
    png_str = png_str.removeprefix("data:image/png;base64,")
    mask_data = base64.b64decode(png_str)
    mask: Image.Image = Image.open(io.BytesIO(mask_data))
    mask = mask.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR)
    mask_array = np.array(mask)
    overlay = Image.new("RGBA", (width_px, height_px), (0, 0, 0, 0))
    overlay_draw = ImageDraw.Draw(overlay)
    color = (255, 255, 255, 200)
    for y in range(y0, y1):
        for x in range(x0, x1):
            if mask_array[y - y0, x - x0] > THRESHOLD_U8:
                overlay_draw.point((x, y), fill=color)
    return np.asarray(overlay)[:, :, 3] > 0


def array_loop(item: dict[str, Any], box: Box, width_px: int, height_px: int) -> NDArray[np.bool_]:
    """The guide's steps, its loop writing a numpy bool array instead of drawing."""
    x0, y0, x1, y1 = box
    png_str = item["mask"].removeprefix("data:image/png;base64,")
    mask: Image.Image = Image.open(io.BytesIO(base64.b64decode(png_str)))
    mask = mask.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR)
    mask_array = np.array(mask)
    full = np.zeros((height_px, width_px), dtype=bool)
    for y in range(y0, y1):
        for x in range(x0, x1):
            if mask_array[y - y0, x - x0] > THRESHOLD_U8:
                full[y, x] = True
    return full


def ours(item: dict[str, Any], box: Box, canvas: FullMasks) -> NDArray[np.bool_]:
    crop = decode_mask(
        item["mask"], box, canvas.width_px, canvas.height_px, threshold_u8=THRESHOLD_U8
    )
    return canvas.of(crop)


def run_reference(
    reference: FullMask, objects: list[Detection], width_px: int, height_px: int
) -> tuple[float, float, int]:
    """Seconds for all objects, and the agreement with ours (share, differing pixels)."""
    seconds = 0.0
    equal_px = total_px = 0
    canvas = FullMasks(width_px, height_px)
    for detection in objects:
        item, box = dict(detection.item), detection.box_xyxy_px
        start = time.perf_counter()
        expected = reference(item, box, width_px, height_px)
        seconds += time.perf_counter() - start
        got = ours(item, box, canvas)
        equal_px += int(np.count_nonzero(expected == got))
        total_px += expected.size
        del expected, got  # one pair of full masks alive at a time, as in a worker
    return seconds, equal_px / total_px, total_px - equal_px


def time_ours(objects: list[Detection], width_px: int, height_px: int, repeat: int) -> float:
    def once() -> float:
        start = time.perf_counter()
        canvas = FullMasks(width_px, height_px)  # one per image, as a worker would
        for detection in objects:
            ours(dict(detection.item), detection.box_xyxy_px, canvas)
        return time.perf_counter() - start

    return statistics.median(once() for _ in range(repeat))


def zlib_streams(objects: list[Detection]) -> list[bytes]:
    """Each map's PNG zlib stream (its IDAT chunks joined)."""
    streams = []
    for detection in objects:
        png = base64.b64decode(detection.item["mask"].removeprefix("data:image/png;base64,"))
        pos, parts = 8, []
        while pos < len(png):
            (length,) = struct.unpack_from(">I", png, pos)
            if png[pos + 4 : pos + 8] == b"IDAT":
                parts.append(png[pos + 8 : pos + 8 + length])
            pos += 12 + length
        streams.append(b"".join(parts))
    return streams


def time_inflate(objects: list[Detection], repeat: int) -> float:
    """Inflating the maps' zlib streams: the floor every approach shares."""
    streams = zlib_streams(objects)

    def once() -> float:
        start = time.perf_counter()
        for stream in streams:
            zlib.decompress(stream)
        return time.perf_counter() - start

    return statistics.median(once() for _ in range(repeat))


def ours_whole_answer(text: str, width_px: int, height_px: int) -> list[NDArray[np.bool_]]:
    """What a worker does with the answer: `tasks.segment` reads it (boxes, labels, box
    crops of the masks), then each full-size mask is built."""
    spec = TaskSpec(task="segment", image_count=1, max_items=25, mask_threshold_u8=THRESHOLD_U8)
    parsed = SEGMENT.parse(text, spec, [ImageSize(width_px, height_px)])
    return [m.to_full(width_px, height_px) for m in parsed.masks or [] if m is not None]


def compare_supervision(text: str, width_px: int, height_px: int, repeat: int) -> None:
    """supervision's `Detections.from_vlm(GOOGLE_GEMINI_2_5)` on the whole answer, against
    ours on the whole answer: both end with every object's full-size mask."""
    try:
        import supervision as sv
    except ImportError:
        print(f"{'':>9}  supervision: not installed (pip install '.[bench]')")
        return

    def theirs() -> Any:
        return sv.Detections.from_vlm(
            sv.VLM.GOOGLE_GEMINI_2_5, text, resolution_wh=(width_px, height_px)
        ).mask

    def timed(run: Callable[[], Any]) -> float:
        def once() -> float:
            start = time.perf_counter()
            run()
            return time.perf_counter() - start

        return statistics.median(once() for _ in range(repeat))

    theirs_s = timed(theirs)
    ours_s = timed(lambda: ours_whole_answer(text, width_px, height_px))
    their_masks, our_masks = theirs(), ours_whole_answer(text, width_px, height_px)
    equal_px = sum(
        int(np.count_nonzero(a == b)) for a, b in zip(their_masks, our_masks, strict=True)
    )
    total_px = sum(m.size for m in our_masks)
    print(
        f"{f'{width_px}x{height_px}':>9}  {'supervision':<13} {'':>7} {theirs_s:>11.4f} "
        f"{ours_s * 1e3:>7.1f} {theirs_s / ours_s:>7.1f}x {equal_px / total_px:>10.4%} "
        f"{total_px - equal_px:>9}   (whole answer: parse + full masks, supervision "
        f"{sv.__version__})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of ours (median shown)")
    parser.add_argument("--objects", type=int, default=20, help="use the first N of 20 objects")
    args = parser.parse_args()
    text = FIXTURE.read_text()

    print(f"segment_01: {args.objects} of 20 real masks (256x256 PNG maps), foreground > 127")
    print(
        f"{'image':>9}  {'reference':<13} {'box Mpx':>7} {'reference s':>11} {'ours ms':>7} "
        f"{'speed-up':>8} {'agreement':>10} {'differ px':>9}"
    )
    for width_px, height_px in SIZES_PX:
        found = parse_detections(text, ImageSize(width_px, height_px), max_items=25)
        assert len(found.objects) == 20, found.warnings
        objects = found.objects[: args.objects]
        box_mpx = (
            sum(
                (d.box_xyxy_px[2] - d.box_xyxy_px[0]) * (d.box_xyxy_px[3] - d.box_xyxy_px[1])
                for d in objects
            )
            / 1e6
        )
        ours_s = time_ours(objects, width_px, height_px, args.repeat)
        inflate_s = time_inflate(objects, args.repeat)
        for name, reference in (("guide loop", guide_loop), ("array loop", array_loop)):
            seconds, agreement, differ_px = run_reference(reference, objects, width_px, height_px)
            print(
                f"{f'{width_px}x{height_px}':>9}  {name:<13} {box_mpx:>7.2f} {seconds:>11.2f} "
                f"{ours_s * 1e3:>7.1f} {seconds / ours_s:>7.0f}x {agreement:>10.4%} {differ_px:>9}"
            )
        print(
            f"{'':>9}  of ours, inflating the PNG maps (every approach must): "
            f"{inflate_s * 1e3:.1f} ms ({inflate_s / ours_s:.0%})"
        )
        if args.objects == 20:
            compare_supervision(text, width_px, height_px, args.repeat)


if __name__ == "__main__":
    main()
