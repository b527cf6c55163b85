"""The S3 event bridge: object notifications in, `vision.analyze` jobs out.

    notification (SQS message, webhook POST, Lambda event)
      -> notifications.decode_notification   every shape met in practice -> ObjectEvents
      -> rules.match_rule                    bucket / prefix / suffix -> a job template
      -> planner.plan_job                    template + object -> job with a deterministic id
      -> dispatch.Dispatcher                 parse_job, send, count, log
      -> runners: sqs_runner, webhook, lambda_handler; `gvw bridge ...` in cli.py

Everything up to the dispatcher is pure and tested with tables; the runners are thin. The
job id is a function of the object's identity (bucket, key, version or ETag) and the
rule, so a notification delivered twice becomes the same job twice, which the worker's
idempotency turns into one result. See docs/bridge.md.
"""
