"""Standard Webhooks signatures (https://www.standardwebhooks.com), by its own library.

Each attempt is signed afresh (its ``webhook-timestamp`` is the attempt's time: receivers
refuse signatures older than five minutes), over ``{id}.{timestamp}.{body}`` with
HMAC-SHA256 and the destination's ``whsec_`` secret. A receiver verifies with the same
library: ``Webhook(secret).verify(body, headers)`` (docs/events.md).
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import SecretStr
from standardwebhooks import Webhook


def signed_headers(secret: SecretStr, event_id: str, body: str, now: datetime) -> dict[str, str]:
    """The three headers of a signed webhook request."""
    when = now.astimezone(UTC)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(when.timestamp())),
        # the library reads the timestamp's seconds as UTC (it replaces the tzinfo)
        "webhook-signature": Webhook(secret.get_secret_value()).sign(event_id, when, body),
    }
