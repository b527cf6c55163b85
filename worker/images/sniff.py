"""What bytes are, by their magic numbers: no image library, no decode.

`sniff_image_format` names the formats the worker decodes; `describe_bytes` says what
anything else looks like, for error messages. Producers (`gvw enqueue-prefix --dry-run`)
and the URL transport's header read use it without loading Pillow or numpy.
"""

from __future__ import annotations

from typing import Final

MIME_BY_FORMAT: Final[dict[str, str]] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "HEIC": "image/heic",
    "HEIF": "image/heif",
}
"""Formats Gemini accepts as they are, by `sniff_image_format` name."""


# ISO-BMFF brands (the `ftyp` box). HEVC-coded ones are HEIC; the generic image/sequence
# brands are HEIF unless a compatible brand says HEVC.
_HEIC_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
)
_HEIF_BRANDS: Final = frozenset({b"mif1", b"msf1", b"mif2"})
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
# pillow-heif only accepts these as the *major* brand; anything else would not decode.
_PILLOW_HEIF_MAJOR_BRANDS: Final = _HEIC_BRANDS | frozenset({b"mif1", b"msf1"})
_VIDEO_BRANDS: Final = frozenset(
    {b"isom", b"iso2", b"mp41", b"mp42", b"avc1", b"M4V ", b"M4A ", b"qt  ", b"3gp4", b"3gp5"}
)

# BITMAPINFOHEADER and its relatives: a real BMP names one of these sizes at offset 14.
_BMP_DIB_HEADER_SIZES: Final = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def sniff_image_format(data: bytes) -> str | None:
    """The image format of ``data`` by its magic number, or None if it is not one we take.

    Names: "PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "HEIC", "HEIF". AVIF, JPEG 2000,
    JPEG XL and everything else are None (see `describe_bytes` for what they look like).
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:2] == b"BM" and len(data) >= 18:
        if int.from_bytes(data[14:18], "little") in _BMP_DIB_HEADER_SIZES:
            return "BMP"
        return None
    # classic TIFF (42) and BigTIFF (43), both byte orders
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if data[4:8] == b"ftyp":
        major, brands = _ftyp_brands(data)
        if major not in _PILLOW_HEIF_MAJOR_BRANDS:
            return None
        if major in _HEIC_BRANDS or brands & _HEIC_BRANDS:
            return "HEIC"
        if brands & _AVIF_BRANDS:
            return None  # an AVIF in a generic mif1 wrapper
        return "HEIF"
    return None


def describe_bytes(data: bytes) -> str:
    """A short human description of what ``data`` looks like, for error messages."""
    if not data:
        return "empty (0 bytes)"
    fmt = sniff_image_format(data)
    if fmt is not None:
        return fmt
    head = data[:512]
    if data[4:8] == b"ftyp":
        major, brands = _ftyp_brands(data)
        if major in _AVIF_BRANDS or brands & _AVIF_BRANDS:
            return "AVIF"
        if major in _VIDEO_BRANDS or major == b"qt  ":
            return "MP4/QuickTime video"
        if major in _HEIF_BRANDS or brands & (_HEIF_BRANDS | _HEIC_BRANDS):
            return f"HEIF with brand {major.decode('latin-1')!r}"
        return f"ISO media with brand {major.decode('latin-1')!r}"
    for magic, name in _OTHER_MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF":
        return f"RIFF {head[8:12].decode('latin-1')!r} (not WebP)"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if stripped.startswith((b"<svg", b"<?xml")):
        return "SVG or XML"
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    if stripped.startswith((b"{", b"[")):
        return "JSON or text"
    if _looks_like_text(head):
        return "text"
    if head[:2] == b"BM":
        return "BMP with an unknown header"
    return f"unrecognised binary data (starts with {data[:8].hex()})"


_OTHER_MAGIC: Final[tuple[tuple[bytes, str], ...]] = (
    (b"%PDF-", "PDF"),
    (b"PK\x03\x04", "ZIP archive (or an Office document)"),
    (b"\x1f\x8b", "gzip"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"%!PS", "PostScript"),
    (b"8BPS", "Photoshop PSD"),
    (b"\x00\x00\x01\x00", "Windows icon (ICO)"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000 codestream"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\x7fELF", "ELF executable"),
)
# images, but not ones we decode: named as such rather than "not an image"
UNSUPPORTED_IMAGE_KINDS: Final = frozenset(
    {"AVIF", "JPEG 2000", "JPEG 2000 codestream", "JPEG XL", "Photoshop PSD", "Windows icon (ICO)"}
)


def _ftyp_brands(data: bytes) -> tuple[bytes, frozenset[bytes]]:
    """(major brand, compatible brands) of an ISO-BMFF `ftyp` box at the start of ``data``."""
    box_size = int.from_bytes(data[0:4], "big")
    end = min(max(box_size, 16), len(data), 4096)
    compatible = frozenset(data[i : i + 4] for i in range(16, end - 3, 4))
    return data[8:12], compatible


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at the end of the sample is still text
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(ch.isprintable() or ch in "\t\r\n\f" for ch in text)
