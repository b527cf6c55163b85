# S3 ObjectCreated on the input prefix -> SQS (with a dead-letter queue) -> the bridge
# (`gvw bridge sqs --queue-url <queue_url>`) -> jobs on the Celery queue `vision`.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  s3_arn             = "arn:${data.aws_partition.current.partition}:s3:::"
  input_bucket_arn   = "${local.s3_arn}${var.input_bucket}"
  results_bucket_arn = "${local.s3_arn}${var.results_bucket}"
  # S3 rejects overlapping filters; one configuration per suffix, or one for all keys
  notification_suffixes = length(var.input_suffixes) > 0 ? var.input_suffixes : [""]
}

resource "aws_sqs_queue" "dead_letter" {
  name                      = "${var.name}-inbox-events-dlq"
  message_retention_seconds = 1209600 # 14 days, the maximum: time to look and redrive
  sqs_managed_sse_enabled   = true
}

resource "aws_sqs_queue" "events" {
  name                       = "${var.name}-inbox-events"
  visibility_timeout_seconds = var.queue_visibility_timeout_seconds
  message_retention_seconds  = 345600 # 4 days
  receive_wait_time_seconds  = 20     # long polling
  # SSE-SQS: S3 can publish to it (an SSE-KMS queue with the AWS-managed key cannot), and
  # the bridge needs no KMS permission
  sqs_managed_sse_enabled = true

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter.arn
    maxReceiveCount     = var.max_receive_count
  })
}

# only the events queue may use the dead-letter queue
resource "aws_sqs_queue_redrive_allow_policy" "dead_letter" {
  queue_url = aws_sqs_queue.dead_letter.id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.events.arn]
  })
}

# S3 may send to the queue, and only on behalf of the input bucket in this account
data "aws_iam_policy_document" "events_queue" {
  statement {
    sid       = "InputBucketNotifications"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.events.arn]

    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [local.input_bucket_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_sqs_queue_policy" "events" {
  queue_url = aws_sqs_queue.events.id
  policy    = data.aws_iam_policy_document.events_queue.json
}

# Note: this resource owns the bucket's whole notification configuration; merge any
# other notifications of the input bucket into it.
resource "aws_s3_bucket_notification" "input" {
  bucket = var.input_bucket

  dynamic "queue" {
    for_each = local.notification_suffixes
    content {
      id            = "${var.name}-object-created-${queue.key}"
      queue_arn     = aws_sqs_queue.events.arn
      events        = ["s3:ObjectCreated:*"]
      filter_prefix = var.input_prefix != "" ? var.input_prefix : null
      filter_suffix = queue.value != "" ? queue.value : null
    }
  }

  # S3 checks that it may send to the queue when the notification is created
  depends_on = [aws_sqs_queue_policy.events]
}

resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  alarm_name          = "${var.name}-inbox-events-dead-letters"
  alarm_description   = "Upload notifications the bridge could not turn into jobs after ${var.max_receive_count} receives"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dead_letter.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.dlq_alarm_actions
}
