"""The one URI parser: every `s3://` and `file://` URI the worker reads, writes or checks.

A URI is parsed once into an `ObjectUri`, and everything after works on that value: the
allowlist check (`is_within`), the storage adapters, the key layout (`join_uri`). No
percent-decoding anywhere: ``s3://inbox/a%20b.jpg`` is the key ``a%20b.jpg`` and
``file:///srv/a%2Fb`` is a file named ``a%2Fb``. A check that decoded what the write does
not (or the other way round) could be walked around; with one parser there is nothing
to disagree.

    form                          bucket    path (key or file path)
    ----------------------------  --------  ---------------------------------------
    s3://bucket/photos/a.jpg      bucket    photos/a.jpg
    file:///abs/path/x.jpg                  /abs/path/x.jpg
    file://./rel/x.jpg                      ./rel/x.jpg     (relative to the worker)
    file://localhost/abs/x                  /abs/x

Rules, by what the URI is for (`Role`):

    every URI        no control characters, no NUL; S3: a valid bucket, key <= 1024
                     bytes; file: absolute (``file:///``) or ``file://./``
    "input"          no ``.`` or ``..`` path segment (S3 servers and proxies may
                     normalise them, so a key's text would not be what is read)
    "output"         as "input", and no encoded separator (``%2F``, ``%5C``, any case),
                     no backslash, no empty segment: a job's output names a folder, and
                     one spelling of it
    "prefix"         an operator's allowlist entry: ``s3://`` or ``file://`` alone, a
                     bucket with no key, or a folder
    "object"         storage's own reads and writes: an object (S3: a key is required)
    "folder"         storage's listings: a bucket or a folder, the key may be empty
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Final, Literal

from tasks.errors import InputNotAllowed, InvalidJob

S3_SCHEME: Final = "s3://"
FILE_SCHEME: Final = "file://"

Role = Literal["input", "output", "prefix", "object", "folder"]

# botocore's own check (VALID_BUCKET), lenient enough for legacy us-east-1 names.
_BUCKET_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,255}")
S3_MAX_KEY_BYTES: Final = 1024
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_ENCODED_SEPARATOR_RE: Final = re.compile(r"%(2f|5c)", re.IGNORECASE)
_SHOWN_CHARS: Final = 200


@dataclass(frozen=True)
class ObjectUri:
    """A parsed `s3://` or `file://` URI. ``text`` is its one spelling, used for I/O."""

    scheme: Literal["s3", "file"]
    bucket: str  # "" for file URIs
    path: str  # the S3 key, or the file path as written (relative stays relative)

    @property
    def text(self) -> str:
        if self.scheme == "s3":
            return f"{S3_SCHEME}{self.bucket}/{self.path}"
        return FILE_SCHEME + self.path

    def __str__(self) -> str:
        return self.text


def parse_uri(uri: str, *, role: Role = "object") -> ObjectUri:
    """Parse ``uri`` under the rules of ``role`` (see the module docstring).

    Raises InvalidJob for a malformed URI and InputNotAllowed for a scheme other than
    ``s3://`` and ``file://``.
    """
    if not isinstance(uri, str):
        raise InvalidJob(f"a URI must be a string, got {type(uri).__name__}")
    if _CONTROL_RE.search(uri):
        raise InvalidJob(f"malformed URI {_shown(uri)}: contains a control character")
    if uri.startswith(S3_SCHEME):
        parsed = _parse_s3(uri, role)
    elif uri.startswith(FILE_SCHEME):
        parsed = _parse_file(uri, role)
    else:
        raise InputNotAllowed(f"unsupported URI scheme in {_shown(uri)}: only s3:// and file://")
    if role in ("input", "output"):
        _check_segments(parsed, uri, role)
    return parsed


def _parse_s3(uri: str, role: Role) -> ObjectUri:
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket and role == "prefix" and not key:
        return ObjectUri("s3", "", "")  # "s3://": every bucket
    if not _BUCKET_RE.fullmatch(bucket):
        raise InvalidJob(f"malformed S3 URI {_shown(uri)}: bad bucket name {_shown(bucket)}")
    if role in ("input", "object") and not key:
        raise InvalidJob(f"malformed S3 URI {_shown(uri)}: no object key after the bucket")
    if len(key.encode("utf-8", "surrogatepass")) > S3_MAX_KEY_BYTES:
        raise InvalidJob(f"malformed S3 URI: key longer than {S3_MAX_KEY_BYTES} bytes")
    return ObjectUri("s3", bucket, key)


def _parse_file(uri: str, role: Role) -> ObjectUri:
    path = uri[len(FILE_SCHEME) :]
    if role == "prefix" and not path:
        return ObjectUri("file", "", "")  # "file://": every path
    if path.startswith("localhost/"):
        path = path[len("localhost") :]
    if not (path.startswith("/") or path == "." or path.startswith("./")):
        raise InvalidJob(
            f"malformed file URI {_shown(uri)}: use file:///absolute/path or file://./relative/path"
        )
    if ".." in path.split("/"):
        # an allowed-prefix check done on the path's text must not be escapable upwards
        raise InvalidJob(f"file URI {_shown(uri)} must not contain '..' segments")
    return ObjectUri("file", "", path)


def _check_segments(parsed: ObjectUri, uri: str, role: Role) -> None:
    segments = parsed.path.split("/")
    if parsed.scheme == "file":
        segments = segments[1:]  # the leading "" of "/abs" or "." of "./rel"
    if role == "output":
        segments = segments[:-1] if segments and segments[-1] == "" else segments  # "dir/"
        if "\\" in parsed.path:
            raise InvalidJob(f"output {_shown(uri)} must not contain a backslash")
        if _ENCODED_SEPARATOR_RE.search(parsed.path):
            raise InvalidJob(
                f"output {_shown(uri)} must not contain an encoded separator (%2F, %5C)"
            )
        if "" in segments and parsed.path:
            raise InvalidJob(f"output {_shown(uri)} must not contain an empty path segment")
    if "." in segments or ".." in segments:
        raise InvalidJob(f"{role} {_shown(uri)} must not contain '.' or '..' path segments")


def parse_prefix(prefix: str) -> ObjectUri:
    """An allowlist entry (``GVW_ALLOWED_INPUTS``, ``GVW_ALLOWED_OUTPUTS``)."""
    return parse_uri(prefix, role="prefix")


def is_within(uri: ObjectUri, prefix: ObjectUri) -> bool:
    """Whether ``uri`` lies under the allowlist entry ``prefix``.

    S3: the same bucket (``s3://inbox`` never admits ``s3://inbox-other``) and the key
    starting with the prefix's key. Files: the real paths (symlinks resolved) of both, the
    file inside the folder. Both compare the parsed values, never a decoded spelling.
    """
    if uri.scheme != prefix.scheme:
        return False
    if uri.scheme == "s3":
        if not prefix.bucket:
            return True
        return uri.bucket == prefix.bucket and uri.path.startswith(prefix.path)
    if not prefix.path:
        return True
    root = os.path.realpath(prefix.path)
    real = os.path.realpath(uri.path)
    return real == root or real.startswith(root.rstrip("/") + "/")


def check_allowed(uri: str, prefixes: tuple[str, ...], *, role: Role) -> ObjectUri:
    """Parse ``uri`` as a ``role`` and return it, or raise InputNotAllowed when no
    allowlist entry admits it. Nothing is read here."""
    parsed = parse_uri(uri, role=role)
    if not any(is_within(parsed, parse_prefix(p)) for p in prefixes):
        raise InputNotAllowed(
            f"{role} {_shown(uri)} is outside the allowed prefixes "
            f"({', '.join(prefixes) or 'none'})"
        )
    return parsed


def join_uri(base: str, *parts: str) -> str:
    """``join_uri("s3://results/vision/", "job-1", "result.json")`` ->
    ``"s3://results/vision/job-1/result.json"``.

    Each part may hold several ``/``-separated segments; empty, ``.`` and ``..`` segments
    are refused (InvalidJob), so a joined URI never leaves ``base``.
    """
    scheme, sep, rest = base.partition("://")
    if not sep or not scheme:
        raise InvalidJob(f"not a URI: {_shown(base)}")
    for part in parts:
        for segment in part.split("/"):
            if segment in ("", ".", ".."):
                raise InvalidJob(f"bad URI part {_shown(part)}: empty, '.' or '..' segment")
            if "\x00" in segment:
                raise InvalidJob("bad URI part: contains a NUL byte")
    joined = "/".join((rest.rstrip("/"), *parts))
    return f"{scheme}://{joined}"


def _shown(text: str) -> str:
    """A URI in a message: quoted, and bounded (a producer controls its length)."""
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return repr(text[:_SHOWN_CHARS]) + f"… ({len(text)} characters)"


def parse_s3_uri(uri: str, *, require_key: bool = True) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``("bucket", "key")``; InvalidJob when malformed.

    With ``require_key=False`` the key may be empty (a bucket or a prefix). The rules are
    this module's rules.
    """
    if not uri.startswith(S3_SCHEME):
        raise InvalidJob(f"not an s3:// URI: {uri[:200]!r}")
    parsed = parse_uri(uri, role="object" if require_key else "folder")
    return parsed.bucket, parsed.path


def parse_file_uri(uri: str) -> str:
    """``file:///abs/path`` -> ``/abs/path``; ``file://./rel/path`` -> ``./rel/path``.

    ``..`` segments are refused: an allowed-prefix check done on the URI's text must not be
    escapable by walking up.
    """
    if not uri.startswith(FILE_SCHEME):
        raise InvalidJob(f"not a file:// URI: {uri[:200]!r}")
    return parse_uri(uri, role="object").path
