"""Deterministic job ids for object events: duplicates collapse, new content does not.

    s3-<slug of the file name>-<40 hex of sha256>      e.g. s3-cat-on-mat.jpg-3f0c...e1

The digest covers the bucket, the key, the object's identity (version id, else ETag) and
the rule (its name and the hash of its template). So:
- the same notification delivered twice, or through two routes (S3 records and
  EventBridge carry the same ETag and version), gives the same id, and the worker's
  idempotency commits one result;
- a new version of the object, or new bytes under an unversioned key, gives a new id;
- editing a rule's template gives new ids, so its objects are analysed again as they
  are next written.
The slug is only for people reading ids; the digest alone decides identity. The id always
matches the contract's `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata

from worker.bridge.notifications import ObjectEvent
from worker.bridge.rules import Rule

ID_PREFIX = "s3-"
DIGEST_HEX_CHARS = 40
SLUG_MAX_CHARS = 40
# Bump when the digest's input changes, so old and new ids never collide by accident.
_SCHEME = "gvw-bridge/1"


def bridge_job_id(event: ObjectEvent, rule: Rule) -> str:
    kind, identity = event.identity()
    material = json.dumps(
        [_SCHEME, event.bucket, event.key, kind, identity, rule.name, rule.template_sha256],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    digest = hashlib.sha256(material.encode("utf-8")).hexdigest()[:DIGEST_HEX_CHARS]
    slug = key_slug(event.key)
    return f"{ID_PREFIX}{slug}-{digest}" if slug else f"{ID_PREFIX}{digest}"


def key_slug(key: str, *, max_chars: int = SLUG_MAX_CHARS) -> str:
    """The key's last path segment in the id alphabet: accents folded to ASCII, anything
    else a dash, lower case. May be empty (a name of only CJK characters, say)."""
    name = key.rstrip("/").rsplit("/", 1)[-1]
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_name).lower()
    slug = re.sub(r"-{2,}", "-", slug)
    return slug[:max_chars].strip("-._")
