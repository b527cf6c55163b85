"""Untrusted bytes in, an image Gemini may be sent out.

Every image a job names passes through `prepare_image` before anything else looks at it:

1. **Type by the bytes.** `sniff_image_format` reads magic numbers; the name and the
   ``Content-Type`` of the object are never consulted (a PDF named ``.png`` is a PDF). Only
   formats we decode are accepted; everything else is `InvalidImage` with a message that
   says what the bytes look like.
2. **Decode with a guard.** Pillow opens the bytes with exactly one decoder (the sniffed
   one), the pixel count is checked against ``max_pixels`` *before* ``load()`` allocates
   anything, Pillow's ``DecompressionBombWarning`` is an error inside the call, and
   ``load()`` runs inside the guard so truncated or corrupt data is `InvalidImage`.
3. **Upright.** An EXIF orientation other than 1 is applied, so the bytes sent, the size
   recorded and the pixels drawn on all share one frame: the upright image.
4. **Send the original when we can.** An upright PNG, JPEG, WebP or HEIC/HEIF in a plain
   mode (RGB, RGBA, L) goes out byte for byte. Everything else is re-encoded once:
   a rotated or CMYK JPEG as JPEG (quality 95), anything else as PNG (lossless).

What is sent and why:

    source                         sent as
    -----------------------------  -------------------------------------------
    PNG/JPEG/WebP/HEIC, upright    the original bytes, untouched
    JPEG with orientation 2..8     JPEG q95, upright, ICC profile kept, no EXIF
    CMYK JPEG                      RGB JPEG q95 (ICC-converted to sRGB if it has a profile)
    other with orientation 2..8    PNG, upright
    GIF, BMP, TIFF                 PNG of the first frame / page
    animated PNG/WebP, HEIF seq.   PNG of the first (primary) frame
    P, PA, LA, 1, I;16, I, F ...   PNG in RGB, RGBA or L (16-bit scaled to 8-bit)
"""

from __future__ import annotations

import hashlib
import io
import math
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

import numpy as np
from PIL import Image, ImageFile, ImageOps

from tasks.base import ImageSize
from tasks.errors import InvalidImage, TooLarge
from tasks.sent_size import fit_plan
from worker.contract.records import ImageRecord
from worker.images.sniff import (
    MIME_BY_FORMAT,
    UNSUPPORTED_IMAGE_KINDS,
    describe_bytes,
    sniff_image_format,
)

# 70 MP: every common camera (64 MP phone sensors, 61 MP full-frame bodies) passes. RGBA
# at this size is 280 MB before any conversion copy; Gemini downsamples far below it
# anyway. The limit is exactly ``max_pixels``, above or below Pillow's own bomb threshold
# (see `raise_pillow_threshold`).
DEFAULT_MAX_PIXELS: Final = 70_000_000

# Pillow's bomb threshold is kept at no less than this many times the limit in use: our
# check (`check_pixels`), with its clear message, speaks for any image up to that far past
# the limit; Pillow's warning (an error here) from there, and its own error from twice
# that, stay a second line above ours (a GIF frame or a TIFF tile larger than the header
# says is checked by Pillow alone).
PILLOW_THRESHOLD_HEADROOM: Final = 2

# Re-encoding a rotated or CMYK JPEG costs one generation of loss; 95 keeps it invisible.
JPEG_REENCODE_QUALITY: Final = 95

# The one Pillow decoder allowed for each sniffed format: bytes that sniff as PNG are never
# handed to the TIFF or any other decoder, which keeps the attack surface to what we expect.
_PILLOW_DECODER: Final[dict[str, str]] = {
    "PNG": "PNG",
    "JPEG": "JPEG",  # also yields MPO (multi-picture JPEG); its first picture is the JPEG
    "WEBP": "WEBP",
    "GIF": "GIF",
    "BMP": "BMP",
    "TIFF": "TIFF",
    "HEIC": "HEIF",  # pillow-heif's plugin
    "HEIF": "HEIF",
}

# Modes every Gemini-accepted format carries without surprises.
_PLAIN_MODES: Final = frozenset({"RGB", "RGBA", "L"})


@dataclass(frozen=True)
class PreparedImage:
    """An image ready to send, and what the result records about it.

    ``width_px`` and ``height_px`` are the upright image's (EXIF orientation applied): the
    frame in which the model's boxes and masks are read. ``upright`` is that image, decoded
    once, in RGB or RGBA, for drawing overlays and reduced copies: treat it as read-only
    (``copy()`` it before drawing on it), it may share memory with the decoder. It is None
    when the caller did not ask to keep the pixels (``keep_pixels=False``): a 24 MP image
    is 72 MB decoded, and most images of a job are only sent, never drawn on.
    """

    data: bytes
    mime_type: str
    width_px: int
    height_px: int
    sha256: str
    """Hex SHA-256 of the original input bytes (the identity of the input)."""
    sent_sha256: str
    """Hex SHA-256 of ``data`` (equal to ``sha256`` when the original is sent)."""
    source_format: str
    """What the bytes were, as `sniff_image_format` names it: "JPEG", "GIF", "HEIC", ..."""
    converted: bool
    """True when ``data`` is a re-encoding, False when it is the original bytes."""
    upright: Image.Image | None = field(repr=False, compare=False)
    exif_orientation: int = 1
    """The EXIF orientation found and applied (1 = already upright)."""
    decoder_warnings: tuple[str, ...] = ()
    """Warnings the decoder raised on these bytes (e.g. corrupt EXIF), for the result."""
    sent_size_px: tuple[int, int] | None = None
    """(width, height) of ``data`` when it is a reduced copy (see `fit_within`)."""

    @property
    def sent_width_height_px(self) -> tuple[int, int]:
        return self.sent_size_px or (self.width_px, self.height_px)

    def facts(self, uri: str) -> ImageFacts:
        """What the result records about this image, without its bytes or pixels."""
        return ImageFacts(
            uri=uri,
            sha256=self.sha256,
            mime_type=self.mime_type,
            width_px=self.width_px,
            height_px=self.height_px,
            sent_width_height_px=self.sent_width_height_px,
            decoder_warnings=self.decoder_warnings,
            sent_sha256=self.sent_sha256,
        )


@dataclass(frozen=True)
class ImageFacts:
    """One image of a job as its result.json describes it: kept for every image of the
    job while the bytes and pixels of each are let go as soon as the request has them."""

    uri: str
    sha256: str | None
    mime_type: str
    width_px: int
    height_px: int
    sent_width_height_px: tuple[int, int]
    decoder_warnings: tuple[str, ...]
    sent_sha256: str = ""
    """The identity of the bytes sent, what the answer cache is keyed by: their hex
    SHA-256, or for an object Gemini fetches itself its S3 checksum or ETag and size."""
    object_etag: str | None = None  # transport "url": the object Gemini fetched
    object_version_id: str | None = None
    object_size_bytes: int | None = None
    object_checksum_sha256: str | None = None

    @property
    def size(self) -> ImageSize:
        return ImageSize(self.width_px, self.height_px)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageFacts:
        """What `to_json` wrote (TypeError, KeyError or ValueError on anything else)."""
        width, height = data["sent_width_height_px"]
        return cls(
            **{
                **data,
                "sent_width_height_px": (int(width), int(height)),
                "decoder_warnings": tuple(str(w) for w in data["decoder_warnings"]),
            }
        )

    def record(self, transport: str) -> ImageRecord:
        """The entry of result.json's `images`."""
        return ImageRecord(
            uri=self.uri,
            sha256=self.sha256,
            mime_type=self.mime_type,
            width=self.width_px,
            height=self.height_px,
            transport=transport,
            sent_width=self.sent_width_height_px[0],
            sent_height=self.sent_width_height_px[1],
            size_bytes=self.object_size_bytes,
            etag=self.object_etag,
            version_id=self.object_version_id,
            s3_checksum_sha256=self.object_checksum_sha256,
        )


def fit_within(image: PreparedImage, max_side_px: int) -> PreparedImage:
    """A copy whose bytes to send are scaled to fit `max_side_px` square (the guide's
    `thumbnail([1024, 1024])` before segmentation), or the image itself when it fits.

    `width_px` and `height_px` stay the upright original's: the model answers in relative
    coordinates (box_2d on 0-1000, masks relative to their box), so its answer about the
    reduced copy maps straight onto the original.
    """
    if max_side_px <= 0 or max(image.width_px, image.height_px) <= max_side_px:
        return image
    if image.upright is None:
        raise ValueError("fit_within needs the pixels: prepare the image with keep_pixels=True")
    reduced = _fitted(image.upright, max_side_px)
    if image.mime_type == "image/jpeg" and reduced.mode == "RGB":
        data, mime_type = _encode_jpeg(reduced, icc_profile=None, subsampling=-1), "image/jpeg"
    else:
        data, mime_type = _encode_png(reduced, icc_profile=None), "image/png"
    return replace(
        image,
        data=data,
        mime_type=mime_type,
        sent_sha256=hashlib.sha256(data).hexdigest(),
        converted=True,
        sent_size_px=reduced.size,
    )


def _fitted(upright: Image.Image, max_side_px: int) -> Image.Image:
    """`upright` scaled to fit `max_side_px` square, by `tasks.sent_size.fit_plan`.

    A whole-factor `reduce` is a box filter in one pass (2 ms for 3 MP); against
    `thumbnail(LANCZOS)` on a full copy (140 ms for 12 MP) no visible difference at the
    size the model sees. The result is a new image: the caller's stays untouched.
    """
    plan = fit_plan(*upright.size, max_side_px)
    reduced = upright.reduce(plan.reduce_factor) if plan.reduce_factor > 1 else upright
    if plan.resize_to_px is None:
        return reduced if reduced is not upright else upright.copy()
    return reduced.resize(plan.resize_to_px, Image.Resampling.BILINEAR)


def prepare_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    keep_pixels: bool = True,
    job_pixels_left: int | None = None,
    pixels_side_px: int | None = None,
    sent_side_px: int = 0,
) -> PreparedImage:
    """Check, decode and, where needed, convert untrusted image bytes.

    Raises `InvalidImage` (not an image, an unsupported format, truncated or corrupt data)
    or `TooLarge` (more than ``max_pixels`` pixels, more than ``job_pixels_left`` (what the
    job's pixel budget, ``GVW_MAX_JOB_PIXELS``, has left), or a decompression bomb). Both
    are permanent: retrying the same bytes cannot help. The pixel limits are checked from
    the header, before anything is decoded. With ``keep_pixels=False`` the decoded image
    is let go on return (``upright`` is None).

    ``pixels_side_px``: the caller uses the pixels reduced by a whole factor to fit this
    long side (an overlay; None: at full size; 0: not at all, the decode only checks the
    bytes), and ``sent_side_px`` for the copy it sends (0: none). A JPEG whose bytes are
    sent as they are, or whose sent copy is reduced anyway, is then
    decoded by libjpeg's DCT scaling at 1/2, 1/4 or 1/8 of its size, still at least that
    large: every byte is still entropy-decoded (a truncated or corrupt file is still
    refused), only the inverse transforms shrink. ``upright`` is then that smaller
    picture; ``width_px``/``height_px`` stay the full image's.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # process-global: someone switched it on, and truncated inputs would be padded
        # with grey and sent as if whole. Refuse to run rather than decode silently.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")
    if not data:
        raise InvalidImage("not an image: empty (0 bytes)")
    source_format = sniff_image_format(data)
    if source_format is None:
        what = describe_bytes(data)
        if what in UNSUPPORTED_IMAGE_KINDS or what.startswith("HEIF with brand"):
            raise InvalidImage(f"unsupported image format: {what}")
        raise InvalidImage(f"not an image: looks like {what}")
    if source_format in ("HEIC", "HEIF"):
        _register_heif_opener_once()

    # catch_warnings swaps process-global state, so under a thread pool another thread's
    # exit can restore the filters mid-call; the explicit pixel checks below are the real
    # guard, the warning-as-error is a second line.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        prepared = _decode_and_prepare(
            data,
            source_format,
            max_pixels,
            job_pixels_left,
            pixels_side_px,
            sent_side_px,
            keep_pixels=keep_pixels,
        )
    notes = tuple(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    if notes:
        prepared = replace(prepared, decoder_warnings=notes)
    return prepared


def _decode_and_prepare(
    data: bytes,
    source_format: str,
    max_pixels: int,
    job_pixels_left: int | None,
    pixels_side_px: int | None = None,
    sent_side_px: int = 0,
    *,
    keep_pixels: bool = True,
) -> PreparedImage:
    im = _open_guarded(data, source_format, max_pixels, job_pixels_left)
    full_size = im.size
    with _decoder_errors(source_format):
        if source_format == "JPEG" and pixels_side_px is not None:
            _draft(im, pixels_side_px, sent_side_px)
        drafted = im.size != full_size
        # before load(): finding out walks the frame headers, and for GIF it moves the
        # decoder off frame 0, which would throw away already-loaded pixels.
        # A multi-picture JPEG (MPO) is still a JPEG whose first picture every decoder shows.
        animated = bool(getattr(im, "is_animated", False)) and source_format != "JPEG"
        im.load()  # after the size checks, inside the warning guard
        # after load(): a PNG may keep its EXIF after the pixel data
        orientation = _exif_orientation(im)
        working: Image.Image = im
        if orientation != 1:
            working = ImageOps.exif_transpose(im)
        target_mode = _target_mode(working)
        mode_changes = target_mode != working.mode

    sha256 = hashlib.sha256(data).hexdigest()
    # the full picture's size, upright (a quarter turn swaps the sides)
    full_width, full_height = full_size if orientation < 5 else full_size[::-1]
    sendable_as_is = (
        source_format in MIME_BY_FORMAT and orientation == 1 and not animated and not mode_changes
    )
    if sendable_as_is:
        return PreparedImage(
            data=data,
            mime_type=MIME_BY_FORMAT[source_format],
            width_px=full_width,
            height_px=full_height,
            sha256=sha256,
            sent_sha256=sha256,
            source_format=source_format,
            converted=False,
            exif_orientation=orientation,
            # an RGB copy of a gray image is three times its pixels: only when kept
            upright=_as_rgb_or_rgba(working) if keep_pixels else None,
        )

    icc_profile = im.info.get("icc_profile") if _same_colour_family(im.mode, target_mode) else None
    # a JPEG stays a JPEG (re-encoding it as PNG would only grow it); all else is lossless PNG
    out_format = "JPEG" if source_format == "JPEG" else "PNG"
    try:
        converted = _convert_mode(working, target_mode)
        if out_format == "JPEG":
            out = _encode_jpeg(converted, icc_profile=icc_profile, subsampling=_jpeg_sampling(im))
        else:
            out = _encode_png(converted, icc_profile=icc_profile)
    except MemoryError:
        raise
    except Exception as exc:
        raise InvalidImage(f"cannot convert {source_format} image to {out_format}: {exc}") from exc
    return PreparedImage(
        data=out,
        mime_type=MIME_BY_FORMAT[out_format],
        width_px=full_width,
        height_px=full_height,
        sha256=sha256,
        sent_sha256=hashlib.sha256(out).hexdigest(),
        source_format=source_format,
        converted=True,
        exif_orientation=orientation,
        upright=_as_rgb_or_rgba(converted) if keep_pixels else None,
        # drafted: what is sent is the smaller picture (and reduced further by the caller)
        sent_size_px=converted.size if drafted else None,
    )


def _draft(im: ImageFile.ImageFile, pixels_side_px: int, sent_side_px: int) -> None:
    """Have libjpeg decode ``im`` at the smallest DCT scale (1/2, 1/4, 1/8) that keeps
    its long side at least what the caller uses: ``sent_side_px`` (a reduced copy to
    send), and the whole-factor reduction of it that fits ``pixels_side_px`` (an
    overlay); nothing at all when both are 0. Only when nothing needs the full picture:
    its bytes are sent as they are (upright, a plain mode), or its sent copy is reduced."""
    long_side = max(im.size)
    target = sent_side_px
    if pixels_side_px > 0:
        # the caller reduces by a whole factor to fit pixels_side_px (an overlay)
        target = max(target, math.ceil(long_side / math.ceil(long_side / pixels_side_px)))
    target = max(target, 1)
    if long_side < 2 * target:
        return  # no scale would keep the target
    as_is = _exif_orientation(im) == 1 and im.mode in ("RGB", "L")
    if not as_is and not (0 < sent_side_px <= target):
        return  # re-encoded at full size for sending: the full picture is needed
    width, height = im.size
    scale = target / long_side
    im.draft(im.mode, (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))


_pillow_threshold_lock = threading.Lock()


def raise_pillow_threshold(max_pixels: int) -> None:
    """Make Pillow's decompression-bomb threshold (``Image.MAX_IMAGE_PIXELS``) at least
    `PILLOW_THRESHOLD_HEADROOM` times ``max_pixels``, so that a limit above Pillow's own
    (89,478,485 as shipped) is not silently capped by it.

    The threshold is process-global and read by every thread and every Pillow user in the
    process, so it only ever goes up (under a lock), never down and never per call: a
    smaller limit is our own check's to enforce, a larger one raises it once for good.
    A threshold of None (someone turned Pillow's check off) is left alone.
    """
    wanted = PILLOW_THRESHOLD_HEADROOM * max_pixels
    current = Image.MAX_IMAGE_PIXELS
    if current is None or current >= wanted:
        return  # the common case, without the lock
    with _pillow_threshold_lock:
        current = Image.MAX_IMAGE_PIXELS
        if current is not None and current < wanted:
            Image.MAX_IMAGE_PIXELS = wanted


@contextmanager
def _decoder_errors(source_format: str, *, max_pixels: int | None = None) -> Iterator[None]:
    """What a decoder's failure on untrusted bytes means to the job, for every Pillow call
    on them: Pillow's decompression-bomb error, or its warning (an error inside the guard),
    is `TooLarge` (with ``max_pixels`` among its details when given); any other exception
    is `InvalidImage`, since decoders of untrusted bytes fail in many ways (OSError "image
    file is truncated", SyntaxError "broken PNG file", ValueError, struct.error,
    zlib.error, ...) that all mean the same thing to the job. A `MemoryError` is the
    worker's trouble, not the image's, and passes as it is, like our own `TooLarge` and
    `InvalidImage`."""
    try:
        yield
    except (TooLarge, InvalidImage):
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        details = {} if max_pixels is None else {"max_pixels": max_pixels}
        raise TooLarge(f"image too large: {exc}", **details) from exc
    except MemoryError:
        raise
    except Exception as exc:
        raise InvalidImage(f"cannot decode {source_format} image: {exc}") from exc


def _open_guarded(
    data: bytes, source_format: str, max_pixels: int, job_pixels_left: int | None = None
) -> ImageFile.ImageFile:
    """Read the header only, and refuse what is too large before any pixel is allocated."""
    raise_pillow_threshold(max_pixels)
    # a bomb here is far past the limit (the threshold is at least twice it): Pillow's words
    with _decoder_errors(source_format, max_pixels=max_pixels):
        im = Image.open(io.BytesIO(data), formats=[_PILLOW_DECODER[source_format]])
    check_pixels(im.size, source_format, max_pixels, job_pixels_left)
    return im


def check_pixels(
    size_px: tuple[int, int], source_format: str, max_pixels: int, job_pixels_left: int | None
) -> None:
    """Refuse an image too large to decode (more than ``max_pixels``, GVW_MAX_IMAGE_PIXELS,
    whatever Pillow's own threshold) or to fit what the job's pixel budget has left, from
    its header's size."""
    width_px, height_px = size_px
    if width_px <= 0 or height_px <= 0:
        raise InvalidImage(f"{source_format} image has an empty size {width_px}x{height_px}")
    pixels = width_px * height_px
    if pixels > max_pixels:
        raise TooLarge(
            f"image too large: {width_px}x{height_px} px is {pixels} pixels,"
            f" above the limit of {max_pixels}",
            width_px=width_px,
            height_px=height_px,
            max_pixels=max_pixels,
        )
    if job_pixels_left is not None and pixels > job_pixels_left:
        raise TooLarge(
            f"job too large: this {width_px}x{height_px} px image would take the job's images "
            f"past their budget of decoded pixels (GVW_MAX_JOB_PIXELS; {max(job_pixels_left, 0)}"
            " pixels were left)",
            width_px=width_px,
            height_px=height_px,
        )


@dataclass(frozen=True)
class HeaderFacts:
    """What an image's first bytes say about it, nothing decoded."""

    source_format: str
    mode: str
    width_px: int
    height_px: int
    exif_orientation: int

    @property
    def sendable_as_is(self) -> bool:
        """Gemini takes it as stored: a type it reads, upright, in a plain mode."""
        return (
            self.source_format in MIME_BY_FORMAT
            and self.exif_orientation == 1
            and self.mode in _PLAIN_MODES
        )


def read_header(
    head: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, job_pixels_left: int | None = None
) -> HeaderFacts | None:
    """The size, mode and EXIF orientation of a JPEG from its first bytes (``head``).

    JPEG only: its EXIF block comes before the image data, so the first bytes settle the
    orientation; a PNG or WebP may keep its EXIF after the pixels, so only a whole read
    would. None when ``head`` is not a JPEG or ends inside its header (a large EXIF or
    ICC block). Raises `TooLarge` like `prepare_image`, from the header's size.
    """
    if sniff_image_format(head) != "JPEG":
        return None
    raise_pillow_threshold(max_pixels)
    try:
        with _decoder_errors("JPEG", max_pixels=max_pixels), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the decode path reports them; nothing decodes here
            with Image.open(io.BytesIO(head), formats=["JPEG"]) as im:
                facts = HeaderFacts("JPEG", im.mode, *im.size, _exif_orientation(im))
    except InvalidImage:
        return None  # cut inside the header, or not a JPEG Pillow reads: the bytes way
    check_pixels((facts.width_px, facts.height_px), "JPEG", max_pixels, job_pixels_left)
    return facts


def header_size_px(head: bytes) -> tuple[int, int] | None:
    """An image's upright (width, height) from its first bytes, nothing decoded; None
    when they do not give it (a header cut short, HEIC/HEIF, bytes Pillow cannot read).
    What `gvw enqueue-prefix --dry-run` prices a sampled object's image tokens by."""
    fmt = sniff_image_format(head)
    if fmt is None or fmt in ("HEIC", "HEIF"):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(head), formats=[fmt]) as im:
                width, height = im.size
                orientation = im.getexif().get(0x0112, 1) if fmt == "JPEG" else 1
    except Exception:  # a header cut short, or bytes Pillow cannot read: no size
        return None
    # orientations 5-8 turn the picture a quarter: what is sent is the other way round
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8), 1 when absent, unreadable or out of range.

    For HEIC/HEIF, pillow-heif has already applied the container's own rotation and reset
    the EXIF tag to 1, so the orientation is never applied twice.
    """
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:
        # a corrupt EXIF block says nothing reliable about orientation; the pixels are fine
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _target_mode(im: Image.Image) -> str:
    """The plain mode (RGB, RGBA or L) this image is sent in."""
    mode = im.mode
    if mode in _PLAIN_MODES:
        return mode
    if mode in ("P", "PA", "LA", "La", "RGBa"):
        return "RGBA" if mode != "P" or im.has_transparency_data else "RGB"
    if mode == "1" or mode.startswith(("I", "F")):
        return "L"
    return "RGB"  # CMYK, RGBX, YCbCr, LAB, HSV


def _convert_mode(im: Image.Image, target_mode: str) -> Image.Image:
    if im.mode == target_mode:
        return im
    if im.mode == "CMYK":
        return _cmyk_to_rgb(im)
    if target_mode == "L" and (im.mode.startswith(("I", "F"))):
        return _deep_gray_to_l(im)
    return im.convert(target_mode)


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    # a naive CMYK -> RGB is visibly off for print-profiled images; use the embedded
    # profile when there is one and littlecms is available.
    icc = im.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(im, source, srgb, outputMode="RGB")
            if converted is not None:
                return converted
        except (ImportError, OSError, ValueError, TypeError):
            pass  # PyCMSError is an OSError; fall back to the plain conversion
    return im.convert("RGB")


def _deep_gray_to_l(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit or float grayscale -> 8-bit L, scaled rather than clipped.

    Pillow's own ``convert("L")`` clips I/I;16 values at 255, which turns a 16-bit image
    almost white.
    """
    pixels = np.asarray(im)
    if pixels.size == 0:
        return Image.fromarray(np.zeros(pixels.shape, dtype=np.uint8))
    low, high = float(pixels.min()), float(pixels.max())
    if np.issubdtype(pixels.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        scaled = pixels * 255.0
    elif np.issubdtype(pixels.dtype, np.integer) and low >= 0 and high <= 255:
        scaled = pixels
    elif np.issubdtype(pixels.dtype, np.integer) and low >= 0 and high <= 65535:
        scaled = pixels.astype(np.float64) * (255.0 / 65535.0)
    elif high > low:
        # unknown range (signed 32-bit, float depth maps): stretch to 0..255
        scaled = (pixels.astype(np.float64) - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros(pixels.shape)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _as_rgb_or_rgba(im: Image.Image) -> Image.Image:
    return im if im.mode in ("RGB", "RGBA") else im.convert("RGB")


def _same_colour_family(source_mode: str, target_mode: str) -> bool:
    """Whether an ICC profile of ``source_mode`` still describes ``target_mode`` pixels."""
    return _colour_family(source_mode) == _colour_family(target_mode)


def _colour_family(mode: str) -> str:
    if mode in ("1", "L", "LA", "La") or mode.startswith(("I", "F")):
        return "gray"
    if mode in ("RGB", "RGBA", "RGBa", "RGBX", "P", "PA"):
        return "rgb"
    return mode.lower()  # cmyk, ycbcr, lab, hsv: a profile for them never fits RGB


def _jpeg_sampling(im: Image.Image) -> int:
    from PIL import JpegImagePlugin

    return JpegImagePlugin.get_sampling(im)


def _encode_jpeg(im: Image.Image, *, icc_profile: bytes | None, subsampling: int) -> bytes:
    options: dict[str, Any] = {"quality": JPEG_REENCODE_QUALITY}
    if subsampling != -1:
        options["subsampling"] = subsampling  # keep the source's chroma resolution
    if icc_profile:
        options["icc_profile"] = icc_profile
    # no EXIF: the orientation is now in the pixels, and nothing else in it is for the model
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def _encode_png(im: Image.Image, *, icc_profile: bytes | None) -> bytes:
    options: dict[str, Any] = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    buffer = io.BytesIO()
    im.save(buffer, "PNG", **options)
    return buffer.getvalue()


_heif_lock = threading.Lock()
_heif_registered = False


def _register_heif_opener_once() -> None:
    """Teach Pillow HEIC/HEIF via pillow-heif, on first need (not at import time)."""
    global _heif_registered
    if _heif_registered:
        return
    with _heif_lock:
        if not _heif_registered:
            import pillow_heif

            # no options: they are pillow-heif's process-wide settings, not ours to change
            pillow_heif.register_heif_opener()
            _heif_registered = True
