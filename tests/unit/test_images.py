"""worker.images.prepare: untrusted bytes in, an upright image Gemini may be sent out.

Inputs are made here with Pillow (and pillow-heif), so every test says what it feeds in.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile

from tasks.errors import InvalidImage, TooLarge
from worker.images.prepare import (
    DEFAULT_MAX_PIXELS,
    ImageFacts,
    prepare_image,
    read_header,
)
from worker.images.sniff import sniff_image_format

# ---------------------------------------------------------------- helpers

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def encode(im: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def marked_image(width_px: int = 64, height_px: int = 48) -> Image.Image:
    """Blue, with a red 12x12 square in the top-left corner: the marker whose landing
    place shows how the image was turned."""
    im = Image.new("RGB", (width_px, height_px), BLUE)
    im.paste(RED, (0, 0, 12, 12))
    return im


def corner_colours(im: Image.Image) -> dict[str, tuple[int, ...]]:
    rgb = im.convert("RGB")
    w, h = rgb.size
    inset = 4
    return {
        "top-left": rgb.getpixel((inset, inset)),  # type: ignore[dict-item]
        "top-right": rgb.getpixel((w - 1 - inset, inset)),  # type: ignore[dict-item]
        "bottom-left": rgb.getpixel((inset, h - 1 - inset)),  # type: ignore[dict-item]
        "bottom-right": rgb.getpixel((w - 1 - inset, h - 1 - inset)),  # type: ignore[dict-item]
    }


def reddest_corner(im: Image.Image) -> str:
    corners = corner_colours(im)
    return max(corners, key=lambda name: corners[name][0] - corners[name][2])


def jpeg_with_orientation(stored: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + kind
        + body
        + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def png_header_only(width_px: int, height_px: int) -> bytes:
    """A PNG that claims a size and holds no pixels: costs nothing to make, and must be
    refused from its header alone."""
    ihdr = struct.pack(">IIBBBBB", width_px, height_px, 8, 0, 0, 0, 0)  # 8-bit gray
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def one_colour_bilevel_png(width_px: int, height_px: int) -> bytes:
    """A real, complete PNG of one colour, compressed by streaming rows: a few kB that
    decode to width*height pixels (a decompression bomb)."""
    return _one_colour_png(width_px, height_px, bit_depth=1)


def one_colour_gray_png(width_px: int, height_px: int) -> bytes:
    """A real, complete 8-bit gray PNG of one colour, compressed by streaming rows: under
    100 kB for 95 MP, and width*height bytes once decoded (mode L, sent as it is)."""
    return _one_colour_png(width_px, height_px, bit_depth=8)


def _one_colour_png(width_px: int, height_px: int, *, bit_depth: int) -> bytes:
    pixels = b"\x00" * ((width_px + 7) // 8) if bit_depth == 1 else b"\x80" * width_px
    row = b"\x00" + pixels  # filter byte + the row's pixels
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row * 500) for _ in range(height_px // 500)]
    chunks.append(compressor.compress(row * (height_px % 500)))
    chunks.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width_px, height_px, bit_depth, 0, 0, 0, 0)  # gray
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", b"".join(chunks))
        + png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width_px: int, height_px: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) claims another size: what a header
    read sees of a huge photo, for the cost of a tiny one."""
    data = bytearray(encode(Image.new("RGB", (16, 16)), "JPEG"))
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height, width
    struct.pack_into(">HH", data, sof + 5, height_px, width_px)
    return bytes(data)


PILLOW_DEFAULT_THRESHOLD = 89_478_485  # Image.MAX_IMAGE_PIXELS as Pillow ships it


@pytest.fixture(autouse=True)
def pillow_threshold_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare_image may raise Pillow's process-global bomb threshold (a limit above it),
    and earlier tests of this process did: each test starts from Pillow's shipped value,
    and leaves the threshold as it found it."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PILLOW_DEFAULT_THRESHOLD)


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


# ---------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(encode(marked_image(), "PNG"), "PNG", id="png"),
        pytest.param(encode(marked_image(), "JPEG"), "JPEG", id="jpeg"),
        pytest.param(encode(marked_image(), "WEBP"), "WEBP", id="webp"),
        pytest.param(encode(marked_image(), "GIF"), "GIF", id="gif"),
        pytest.param(encode(marked_image(), "BMP"), "BMP", id="bmp"),
        pytest.param(encode(marked_image(), "TIFF"), "TIFF", id="tiff"),
        pytest.param(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC", id="heic"),
        pytest.param(b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "HEIC", id="mif1-heic"),
        pytest.param(b"\x00\x00\x00\x14ftypmif1\x00\x00\x00\x00mif1", "HEIF", id="mif1-only"),
        pytest.param(b"\x00\x00\x00\x18ftypmsf1\x00\x00\x00\x00msf1hevc", "HEIC", id="msf1-hevc"),
        pytest.param(b"\x00\x00\x00\x18ftypavif\x00\x00\x00\x00mif1avif", None, id="avif"),
        pytest.param(b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1avif", None, id="mif1-avif"),
        pytest.param(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", None, id="mp4"),
        pytest.param(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", None, id="pdf"),
        pytest.param(b"BM hello, this is text", None, id="text-starting-bm"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"GIF8", None, id="short-gif-magic"),
    ],
)
def test_sniff_image_format_reads_magic_numbers(data: bytes, expected: str | None) -> None:
    assert sniff_image_format(data) == expected


# ---------------------------------------------------------------- sent untouched


def test_upright_png_is_sent_byte_for_byte() -> None:
    data = encode(marked_image(), "PNG")
    prepared = prepare_image(data)
    assert prepared.data is data
    assert prepared.converted is False
    assert prepared.mime_type == "image/png"
    assert prepared.source_format == "PNG"
    assert (prepared.width_px, prepared.height_px) == (64, 48)
    assert prepared.sha256 == prepared.sent_sha256 == hashlib.sha256(data).hexdigest()
    assert prepared.upright.mode == "RGB"
    assert prepared.upright.size == (64, 48)
    assert reddest_corner(prepared.upright) == "top-left"


def test_upright_jpeg_with_orientation_1_is_sent_untouched() -> None:
    data = jpeg_with_orientation(marked_image(), 1)
    prepared = prepare_image(data)
    assert prepared.data is data
    assert prepared.converted is False
    assert prepared.mime_type == "image/jpeg"
    assert prepared.exif_orientation == 1


def test_grayscale_jpeg_is_sent_untouched_and_upright_is_rgb() -> None:
    data = encode(Image.new("L", (20, 10), 128), "JPEG")
    prepared = prepare_image(data)
    assert prepared.data is data
    assert prepared.upright.mode == "RGB"


def test_webp_is_kept_as_webp() -> None:
    data = encode(marked_image(), "WEBP", lossless=True)
    prepared = prepare_image(data)
    assert prepared.data is data
    assert prepared.mime_type == "image/webp"
    assert prepared.converted is False


def test_webp_with_alpha_is_kept() -> None:
    data = encode(Image.new("RGBA", (16, 16), (1, 2, 3, 100)), "WEBP", lossless=True)
    prepared = prepare_image(data)
    assert prepared.data is data
    assert prepared.upright.mode == "RGBA"


def test_rgba_png_is_sent_untouched() -> None:
    data = encode(Image.new("RGBA", (16, 16), (1, 2, 3, 100)), "PNG")
    prepared = prepare_image(data)
    assert prepared.data is data
    assert prepared.upright.mode == "RGBA"


def test_heic_round_trip_is_kept_as_heic() -> None:
    from worker.images.prepare import _register_heif_opener_once

    _register_heif_opener_once()
    data = encode(marked_image(64, 48), "HEIF", quality=90)
    assert sniff_image_format(data) == "HEIC"
    prepared = prepare_image(data)
    assert prepared.data is data
    assert prepared.mime_type == "image/heic"
    assert prepared.source_format == "HEIC"
    assert prepared.converted is False
    assert (prepared.width_px, prepared.height_px) == (64, 48)
    assert reddest_corner(prepared.upright) == "top-left"


def test_heic_with_exif_orientation_is_rotated_once_by_the_container() -> None:
    # pillow-heif writes EXIF orientation 6 as the container's own rotation (irot) and
    # reads it back applied, with the EXIF tag reset: the original bytes, which any HEIF
    # decoder shows rotated, are sent, and the size is the rotated one.
    from worker.images.prepare import _register_heif_opener_once

    _register_heif_opener_once()
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(marked_image(64, 48), "HEIF", quality=90, exif=exif.tobytes())
    prepared = prepare_image(data)
    assert prepared.data is data
    assert (prepared.width_px, prepared.height_px) == (48, 64)
    assert reddest_corner(prepared.upright) == "top-right"


# ---------------------------------------------------------------- EXIF orientation


@pytest.mark.parametrize(
    ("orientation", "stored_marker_corner"),
    [
        # The camera stored the pixels turned; a viewer turns them back. We store the
        # upright marked image turned the *other* way, so applying the tag must bring the
        # red marker back to the top-left.
        pytest.param(6, Image.Transpose.ROTATE_90, id="orientation-6-rotate-90-cw-to-view"),
        pytest.param(8, Image.Transpose.ROTATE_270, id="orientation-8-rotate-90-ccw-to-view"),
        pytest.param(3, Image.Transpose.ROTATE_180, id="orientation-3-rotate-180"),
        pytest.param(2, Image.Transpose.FLIP_LEFT_RIGHT, id="orientation-2-mirror"),
    ],
)
def test_exif_rotated_jpeg_is_sent_upright(
    orientation: int, stored_marker_corner: Image.Transpose
) -> None:
    upright = marked_image(64, 48)
    stored = upright.transpose(stored_marker_corner)
    data = jpeg_with_orientation(stored, orientation)

    prepared = prepare_image(data)

    assert prepared.converted is True
    assert prepared.mime_type == "image/jpeg"
    assert prepared.exif_orientation == orientation
    assert (prepared.width_px, prepared.height_px) == (64, 48)
    assert prepared.sha256 == hashlib.sha256(data).hexdigest()
    assert prepared.sent_sha256 == hashlib.sha256(prepared.data).hexdigest()
    assert prepared.sent_sha256 != prepared.sha256
    # the bytes sent decode upright with no orientation left to apply twice
    sent = decode(prepared.data)
    assert sent.size == (64, 48)
    assert sent.getexif().get(0x0112) in (None, 1)
    assert reddest_corner(sent) == "top-left"
    assert reddest_corner(prepared.upright) == "top-left"


def test_orientation_6_swaps_width_and_height() -> None:
    stored = Image.new("RGB", (80, 20), BLUE)  # landscape as stored, portrait to view
    prepared = prepare_image(jpeg_with_orientation(stored, 6))
    assert (prepared.width_px, prepared.height_px) == (20, 80)
    assert prepared.upright.size == (20, 80)


def test_rotated_jpeg_keeps_its_icc_profile() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 8
    data = encode(marked_image(), "JPEG", quality=95, exif=exif.tobytes(), icc_profile=icc)
    prepared = prepare_image(data)
    assert decode(prepared.data).info.get("icc_profile") == icc


def test_png_with_exif_orientation_stays_png_upright() -> None:
    upright = marked_image(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(upright.transpose(Image.Transpose.ROTATE_90), "PNG", exif=exif.tobytes())
    prepared = prepare_image(data)
    assert prepared.converted is True
    assert prepared.mime_type == "image/png"
    assert (prepared.width_px, prepared.height_px) == (64, 48)
    assert reddest_corner(decode(prepared.data)) == "top-left"


def test_out_of_range_orientation_is_ignored() -> None:
    data = jpeg_with_orientation(marked_image(), 9)
    prepared = prepare_image(data)
    assert prepared.data is data
    assert prepared.exif_orientation == 1


# ---------------------------------------------------------------- conversions


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (30, 20), colour) for colour in (RED, BLUE, (0, 255, 0))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)


def multipage_tiff() -> bytes:
    pages = [Image.new("RGB", (30, 20), RED), Image.new("RGB", (50, 50), BLUE)]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def animated_webp() -> bytes:
    frames = [Image.new("RGB", (30, 20), colour) for colour in (RED, BLUE)]
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)


def animated_png() -> bytes:
    frames = [Image.new("RGB", (30, 20), colour) for colour in (RED, BLUE)]
    return encode(frames[0], "PNG", save_all=True, append_images=frames[1:])


@pytest.mark.parametrize(
    ("data", "source_format", "size", "first_frame_colour"),
    [
        pytest.param(animated_gif(), "GIF", (30, 20), RED, id="animated-gif-first-frame"),
        pytest.param(encode(marked_image(), "BMP"), "BMP", (64, 48), BLUE, id="bmp"),
        pytest.param(multipage_tiff(), "TIFF", (30, 20), RED, id="tiff-first-page"),
        pytest.param(animated_webp(), "WEBP", (30, 20), RED, id="animated-webp-first-frame"),
        pytest.param(animated_png(), "PNG", (30, 20), RED, id="apng-first-frame"),
    ],
)
def test_unsupported_or_animated_formats_become_png_of_the_first_frame(
    data: bytes, source_format: str, size: tuple[int, int], first_frame_colour: tuple[int, ...]
) -> None:
    prepared = prepare_image(data)
    assert prepared.source_format == source_format
    assert prepared.converted is True
    assert prepared.mime_type == "image/png"
    assert (prepared.width_px, prepared.height_px) == size
    sent = Image.open(io.BytesIO(prepared.data))
    assert sent.format == "PNG"
    assert not getattr(sent, "is_animated", False)
    assert sent.convert("RGB").getpixel((size[0] - 2, size[1] - 2)) == first_frame_colour
    assert prepared.sent_sha256 == hashlib.sha256(prepared.data).hexdigest()


def test_cmyk_jpeg_becomes_rgb_jpeg() -> None:
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red ink
    data = encode(cmyk, "JPEG", quality=95)
    prepared = prepare_image(data)
    assert prepared.converted is True
    assert prepared.mime_type == "image/jpeg"
    sent = decode(prepared.data)
    assert sent.mode == "RGB"
    r, g, b = sent.getpixel((16, 16))  # type: ignore[misc]
    assert r > 200 and g < 60 and b < 60


def test_palette_png_becomes_rgb_png() -> None:
    data = encode(marked_image().convert("P", palette=Image.Palette.ADAPTIVE), "PNG")
    prepared = prepare_image(data)
    assert prepared.converted is True
    assert prepared.mime_type == "image/png"
    assert decode(prepared.data).mode == "RGB"
    assert reddest_corner(prepared.upright) == "top-left"


def test_palette_png_with_transparency_keeps_alpha() -> None:
    im = Image.new("P", (16, 16), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.paste(1, (0, 0, 8, 16))
    data = encode(im, "PNG", transparency=0)
    prepared = prepare_image(data)
    sent = decode(prepared.data)
    assert sent.mode == "RGBA"
    assert sent.getpixel((12, 8))[3] == 0  # type: ignore[index]
    assert sent.getpixel((2, 8)) == (0, 0, 255, 255)


def test_la_png_becomes_rgba_png() -> None:
    data = encode(Image.new("LA", (8, 8), (200, 50)), "PNG")
    prepared = prepare_image(data)
    sent = decode(prepared.data)
    assert sent.mode == "RGBA"
    assert sent.getpixel((0, 0)) == (200, 200, 200, 50)


def test_16_bit_grayscale_png_is_scaled_not_clipped_to_8_bit() -> None:
    ramp = np.linspace(0, 65535, 256, dtype=np.uint16).reshape(1, 256).repeat(4, axis=0)
    data = encode(Image.fromarray(ramp), "PNG")
    assert decode(data).mode in ("I;16", "I")
    prepared = prepare_image(data)
    sent = np.asarray(decode(prepared.data))
    assert decode(prepared.data).mode == "L"
    assert sent[0, 0] == 0
    assert sent[0, 255] == 255
    assert 120 <= sent[0, 128] <= 135  # mid-grey, not clipped white


def test_32_bit_integer_tiff_becomes_8_bit_gray_png() -> None:
    values = np.arange(0, 100_000, 1000, dtype=np.int32).reshape(10, 10)
    data = encode(Image.fromarray(values), "TIFF")
    prepared = prepare_image(data)
    sent = np.asarray(decode(prepared.data))
    assert sent.dtype == np.uint8
    assert sent.min() == 0 and sent.max() == 255


def test_bilevel_png_becomes_gray() -> None:
    data = encode(Image.new("1", (9, 9), 1), "PNG")
    prepared = prepare_image(data)
    assert decode(prepared.data).mode == "L"


# ---------------------------------------------------------------- refused: not images


TRUNCATED_JPEG = encode(marked_image(256, 256).effect_spread(8), "JPEG", quality=90)[:-600]
TRUNCATED_PNG = encode(Image.effect_noise((128, 128), 64).convert("RGB"), "PNG")[:-2000]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", r"not an image: empty \(0 bytes\)", id="zero-bytes"),
        pytest.param(os.urandom(4096).replace(b"\x89P", b"xx"), "not an image", id="random"),
        pytest.param(
            b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
            "not an image: looks like PDF",
            id="pdf-named-png",
        ),
        pytest.param(b"hello, world\n", "not an image: looks like text", id="text"),
        pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG", id="svg"),
        pytest.param(b"PK\x03\x04" + bytes(100), "ZIP", id="zip"),
        pytest.param(
            b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf",
            "unsupported image format: AVIF",
            id="avif",
        ),
        pytest.param(TRUNCATED_JPEG, "cannot decode JPEG", id="truncated-jpeg"),
        pytest.param(TRUNCATED_PNG, "cannot decode PNG", id="truncated-png"),
        pytest.param(b"\x89PNG\r\n\x1a\n", "cannot decode PNG", id="png-signature-only"),
        pytest.param(b"\xff\xd8\xff\xe0" + bytes(50), "cannot decode JPEG", id="jpeg-garbage"),
        pytest.param(b"GIF89a" + bytes(3), "cannot decode GIF", id="gif-header-cut"),
        pytest.param(
            b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64),
            "cannot decode HEIC",
            id="heic-garbage",
        ),
    ],
)
def test_bad_input_is_invalid_image(data: bytes, message: str) -> None:
    with pytest.raises(InvalidImage, match=message) as info:
        prepare_image(data)
    assert info.value.code == "invalid_image"


def test_truncated_inputs_are_really_truncated() -> None:
    # guard the fixtures themselves: a lenient decoder would accept them
    for data in (TRUNCATED_JPEG, TRUNCATED_PNG):
        with pytest.raises(OSError):
            decode(data)


def test_load_truncated_images_stays_false() -> None:
    prepare_image(encode(marked_image(), "PNG"))
    with pytest.raises(InvalidImage):
        prepare_image(TRUNCATED_JPEG)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_refuses_to_run_if_someone_allowed_truncated_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        prepare_image(TRUNCATED_JPEG)


# ---------------------------------------------------------------- refused: too large


def test_default_limit_passes_common_camera_sizes() -> None:
    for width_px, height_px in ((4032, 3024), (4000, 3000), (8064, 6048)):
        assert width_px * height_px <= DEFAULT_MAX_PIXELS
    prepared = prepare_image(encode(Image.new("RGB", (4032, 3024), BLUE), "JPEG"))
    assert (prepared.width_px, prepared.height_px) == (4032, 3024)


def test_bomb_above_small_limit_is_too_large_before_decoding() -> None:
    data = one_colour_bilevel_png(2000, 2000)
    started = time.monotonic()
    with pytest.raises(TooLarge, match="2000x2000") as info:
        prepare_image(data, max_pixels=1_000_000)
    assert time.monotonic() - started < 0.5
    assert info.value.code == "too_large"
    assert info.value.details["max_pixels"] == 1_000_000


@pytest.mark.parametrize(
    ("width_px", "height_px"),
    [
        pytest.param(9000, 9000, id="above-default-limit"),
        pytest.param(10000, 10000, id="above-pillow-warning-threshold"),
        pytest.param(20000, 20000, id="above-pillow-error-threshold"),
        pytest.param(1, 2**31 - 1, id="one-pixel-wide"),
    ],
)
def test_oversized_header_is_too_large_with_default_settings(width_px: int, height_px: int) -> None:
    with pytest.raises(TooLarge, match="too large"):
        prepare_image(png_header_only(width_px, height_px))


def test_bomb_is_refused_without_allocating_its_pixels(tmp_path: Path) -> None:
    # 20000 x 20000 of one colour: a few kB on disk, 400 MB once decoded. Run in a fresh
    # interpreter so its peak resident memory tells whether the pixels were allocated.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(one_colour_bilevel_png(20000, 20000))
    assert bomb.stat().st_size < 100_000
    script = textwrap.dedent(
        f"""
        import resource, sys, time
        from worker.images.prepare import prepare_image
        from tasks.errors import TooLarge
        data = open({str(bomb)!r}, "rb").read()
        before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        try:
            prepare_image(data)
        except TooLarge as exc:
            print("TooLarge", exc)
        elapsed_s = time.monotonic() - started
        grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kb
        print(f"grown_kb={{grown_kb}} elapsed_s={{elapsed_s:.3f}}")
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("TooLarge"), done.stdout + done.stderr
    fields = dict(part.split("=") for part in lines[-1].split())
    assert int(fields["grown_kb"]) < 50_000  # the pixels alone would be 400,000 kB
    assert float(fields["elapsed_s"]) < 1.0


# ---- GVW_MAX_IMAGE_PIXELS is the limit both ways, whatever Pillow's own threshold --------


def test_pillow_ships_the_threshold_these_tests_are_about() -> None:
    # read in a fresh process: this one's may have been raised by earlier tests
    shipped = subprocess.run(
        [sys.executable, "-c", "from PIL import Image; print(Image.MAX_IMAGE_PIXELS)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert int(shipped) == PILLOW_DEFAULT_THRESHOLD


def test_a_limit_above_pillows_threshold_lets_a_95_megapixel_image_through() -> None:
    data = one_colour_gray_png(10000, 9500)  # 95,000,000 px: above Pillow's 89,478,485
    prepared = prepare_image(data, max_pixels=100_000_000, keep_pixels=False)
    assert (prepared.width_px, prepared.height_px) == (10000, 9500)
    assert prepared.data is data and not prepared.converted
    assert prepared.decoder_warnings == ()  # no DecompressionBombWarning either


@pytest.mark.parametrize(
    ("width_px", "height_px", "max_pixels"),
    [
        pytest.param(12000, 12000, 150_000_000, id="144-MP-above-pillows-warning"),
        pytest.param(20000, 10000, 250_000_000, id="200-MP-above-pillows-error"),
    ],
)
def test_a_raised_limit_is_the_only_size_check(
    width_px: int, height_px: int, max_pixels: int
) -> None:
    # a header with no pixels behind it: past every size check it fails as what it is,
    # a truncated file, and not as too large
    with pytest.raises(InvalidImage, match="cannot decode PNG"):
        prepare_image(png_header_only(width_px, height_px), max_pixels=max_pixels)


def test_a_large_gray_image_only_sent_costs_its_own_pixels(tmp_path: Path) -> None:
    # 95 MP of gray is 95 MB decoded; an RGB copy nobody keeps would be 285 MB more. Run
    # in a fresh interpreter so its peak resident memory tells what was allocated.
    image = tmp_path / "gray.png"
    image.write_bytes(one_colour_gray_png(10000, 9500))
    script = textwrap.dedent(
        f"""
        import resource
        from worker.images.prepare import prepare_image
        data = open({str(image)!r}, "rb").read()
        before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        prepared = prepare_image(data, max_pixels=100_000_000, keep_pixels=False)
        grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kb
        print(prepared.width_px, prepared.height_px, grown_kb)
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    width_px, height_px, grown_kb = map(int, done.stdout.split())
    assert (width_px, height_px) == (10000, 9500)
    assert grown_kb < 150_000, done.stdout  # the pixels: 95,000 kB


def test_with_the_default_limit_a_95_megapixel_image_is_too_large_in_our_words() -> None:
    # above Pillow's threshold too: its warning must not speak first
    with pytest.raises(TooLarge) as caught:
        prepare_image(png_header_only(10000, 9500))
    assert str(caught.value) == (
        "image too large: 10000x9500 px is 95000000 pixels,"
        f" above the limit of {DEFAULT_MAX_PIXELS}"
    )
    assert caught.value.code == "too_large"
    assert caught.value.details["max_pixels"] == DEFAULT_MAX_PIXELS


def test_a_limit_below_pillows_threshold_still_refuses_what_is_above_it() -> None:
    with pytest.raises(TooLarge, match="above the limit of 50000000") as caught:
        prepare_image(png_header_only(8000, 7000), max_pixels=50_000_000)  # 56 MP
    assert caught.value.details["max_pixels"] == 50_000_000


def test_a_jpeg_header_is_judged_by_the_same_limit() -> None:
    # GVW_TRANSPORT=url: the header read decides alone whether Gemini gets a URL
    huge = jpeg_claiming(12000, 12000)  # 144 MP
    facts = read_header(huge, max_pixels=150_000_000)
    assert facts is not None and (facts.width_px, facts.height_px) == (12000, 12000)
    with pytest.raises(TooLarge, match=f"above the limit of {DEFAULT_MAX_PIXELS}$"):
        read_header(huge)


def test_pillows_threshold_is_raised_to_the_limit_in_use_and_never_lowered() -> None:
    small = encode(marked_image(), "PNG")
    prepare_image(small, max_pixels=1_000_000)
    assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_THRESHOLD  # never lowered
    prepare_image(small, max_pixels=150_000_000)
    raised = Image.MAX_IMAGE_PIXELS
    assert raised is not None and raised >= 150_000_000
    prepare_image(small)  # the default limit after a larger one: nothing moves back
    assert raised == Image.MAX_IMAGE_PIXELS


def test_decoder_warnings_are_recorded_not_raised() -> None:
    # a cut EXIF block: Pillow warns and reads on; the warning belongs in the result, and
    # must not escape as a warning (which this test suite turns into an error)
    broken_exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03"
    data = encode(marked_image(), "JPEG", exif=broken_exif)
    prepared = prepare_image(data)
    assert prepared.data is data
    assert prepared.exif_orientation == 1
    assert any("Corrupt EXIF" in note for note in prepared.decoder_warnings)


def test_concurrent_calls_each_get_the_right_answer() -> None:
    # the worker runs a thread pool; catch_warnings is process-global, so the size limits
    # must hold without it
    from concurrent.futures import ThreadPoolExecutor

    good = encode(marked_image(), "PNG")
    bomb = png_header_only(20000, 20000)
    rotated = jpeg_with_orientation(marked_image(64, 48), 6)

    def run(n: int) -> str:
        data = (good, bomb, rotated)[n % 3]
        try:
            prepared = prepare_image(data)
        except TooLarge:
            return "too_large"
        return f"{prepared.width_px}x{prepared.height_px}"

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(run, range(60)))
    assert answers == ["64x48", "too_large", "48x64"] * 20


# ---- read_header: what a JPEG's first bytes settle (GVW_TRANSPORT=url) -----------------


def _jpeg(size: tuple[int, int], *, mode: str = "RGB", exif: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def _orientation_exif(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def test_an_upright_jpeg_header_gives_its_size() -> None:
    facts = read_header(_jpeg((640, 480))[:4096])
    assert facts is not None and facts.sendable_as_is
    assert (facts.width_px, facts.height_px, facts.exif_orientation) == (640, 480, 1)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_jpeg((64, 48), exif=_orientation_exif(6)), id="rotated"),
        pytest.param(_jpeg((64, 48), mode="CMYK"), id="cmyk"),
    ],
)
def test_a_jpeg_that_needs_preparing_says_so(data: bytes) -> None:
    facts = read_header(data)
    assert facts is not None and not facts.sendable_as_is


def test_a_header_cut_short_or_another_type_settles_nothing() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48)).save(buffer, format="PNG")
    png_bytes = buffer.getvalue()
    big_exif = Image.Exif()
    big_exif[0x010E] = "x" * 30_000  # a long description: the header passes 4 KB
    data = _jpeg((64, 48), exif=big_exif.tobytes())
    assert read_header(data[:4096]) is None
    assert read_header(data) is not None
    assert read_header(png_bytes) is None  # a PNG may keep its EXIF after the pixels


def test_a_header_past_the_pixel_cap_is_too_large() -> None:
    with pytest.raises(TooLarge):
        read_header(_jpeg((400, 300)), max_pixels=100_000)


def test_image_facts_survive_json_for_a_batch_and_refuse_anything_else() -> None:
    # batch mode keeps a job's image facts in Redis (as JSON) until its answer arrives
    image = prepare_image(encode(marked_image(), "PNG"))
    facts = image.facts("s3://inbox/a.png")
    assert ImageFacts.from_json(json.loads(json.dumps(facts.to_json()))) == facts
    with pytest.raises((TypeError, KeyError, ValueError)):
        ImageFacts.from_json({"uri": "s3://inbox/a.png"})
    with pytest.raises((TypeError, KeyError, ValueError)):
        ImageFacts.from_json({**facts.to_json(), "colour": "red"})


# ---- one reading of a decoder's failure: TooLarge, InvalidImage, or the worker's own ----


def gif_with_first_frame(width_px: int, height_px: int) -> bytes:
    """A GIF whose logical screen says 10x10 and whose first frame says otherwise: a frame
    larger than the header, which only Pillow's own bomb check sees (when it opens it)."""
    screen = struct.pack("<HHBBB", 10, 10, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width_px, height_px, 0)
    return b"GIF89a" + screen + frame + b"\x02\x02\x44\x01\x00" + b"\x3b"


@pytest.mark.parametrize(
    ("width_px", "height_px"),
    [
        pytest.param(10000, 9000, id="past-pillows-warning"),
        pytest.param(20000, 10000, id="past-pillows-error"),
    ],
)
def test_pillows_own_bomb_check_is_too_large_in_its_words(width_px: int, height_px: int) -> None:
    with pytest.raises(TooLarge, match=r"^image too large: Image size \(") as caught:
        prepare_image(gif_with_first_frame(width_px, height_px), max_pixels=1_000_000)
    assert caught.value.details["max_pixels"] == 1_000_000


def test_a_jpeg_header_past_pillows_own_check_is_too_large() -> None:
    with pytest.raises(TooLarge, match=r"^image too large: Image size \(") as caught:
        read_header(jpeg_claiming(65535, 65535))
    assert caught.value.details["max_pixels"] == DEFAULT_MAX_PIXELS


def _raising(error: BaseException) -> object:
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    return fail


@pytest.mark.parametrize("where", ["open", "load"])
@pytest.mark.parametrize(
    ("error", "expected", "message"),
    [
        pytest.param(
            Image.DecompressionBombError("bomb"), TooLarge, "image too large: bomb", id="bomb"
        ),
        pytest.param(
            Image.DecompressionBombWarning("bomb?"),
            TooLarge,
            r"image too large: bomb\?",
            id="bomb-warning",
        ),
        pytest.param(OSError("broken"), InvalidImage, "cannot decode PNG image: broken", id="os"),
        pytest.param(MemoryError("no room"), MemoryError, "no room", id="memory"),
    ],
)
def test_a_decoders_failure_means_one_thing_wherever_it_happens(
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    error: BaseException,
    expected: type[BaseException],
    message: str,
) -> None:
    # the header read and the decode: a MemoryError is the worker's, not the image's
    target = Image if where == "open" else ImageFile.ImageFile
    monkeypatch.setattr(target, where, _raising(error))
    with pytest.raises(expected, match=f"^{message}$") as caught:
        prepare_image(encode(marked_image(), "PNG"))
    if expected is not MemoryError:
        assert caught.value.__cause__ is error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(Image.DecompressionBombError("bomb"), TooLarge, id="bomb"),
        pytest.param(MemoryError("no room"), MemoryError, id="memory"),
    ],
)
def test_a_header_read_refuses_a_bomb_and_leaves_a_memory_error_alone(
    monkeypatch: pytest.MonkeyPatch, error: BaseException, expected: type[BaseException]
) -> None:
    monkeypatch.setattr(Image, "open", _raising(error))
    with pytest.raises(expected):
        read_header(_jpeg((64, 48)))


def test_a_header_pillow_cannot_read_settles_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "open", _raising(SyntaxError("not a JPEG after all")))
    assert read_header(_jpeg((64, 48))) is None
