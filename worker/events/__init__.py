"""Completion events: a job's end told to the destinations it names (docs/events.md).

records.py       the event (Standard Webhooks' shape), its stable id, `job.completed`
destinations.py  a destination's syntax, the allow-list, the address check of a webhook
signing.py       Standard Webhooks headers (webhook-id, -timestamp, -signature)
outbox.py        the outbox in Redis and its in-memory twin: dedup, leases, backoff
senders.py       webhook (httpx2), SQS and SNS (boto3); Celery's is injected by queue/
deliverer.py     one delivery run: claim what is due, send, settle each delivery
emitter.py       THE port (`Events`): `emit(event, destinations)`, `check(notify)`
"""
