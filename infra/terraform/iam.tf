# Least privilege, one role per process kind, assumed through EKS IAM roles for service
# accounts. The worker needs no SQS and the bridge no S3.

locals {
  oidc_issuer = replace(var.oidc_provider_url, "https://", "")
}

data "aws_iam_policy_document" "worker_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.k8s_namespace}:${var.worker_service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "bridge_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.k8s_namespace}:${var.bridge_service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

# The worker reads inputs under the input prefix and writes results under the results
# prefix. It also reads and lists its own results: before any work it checks whether the
# job's result.json / error.json exists (HEAD needs s3:GetObject, and S3 answers a HEAD
# of a missing key with 403 instead of 404 unless the caller may list the bucket), and
# after a lost conditional-create race it reads the winner's result.json.
data "aws_iam_policy_document" "worker" {
  statement {
    sid       = "ReadInputs"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = ["${local.input_bucket_arn}/${var.input_prefix}*"]
  }

  statement {
    sid       = "WriteAndCheckResults"
    effect    = "Allow"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${local.results_bucket_arn}/${var.results_prefix}*"]
  }

  statement {
    sid       = "MissingResultsAre404"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [local.results_bucket_arn]
  }
}

# The SQS bridge receives upload notifications and deletes each once its job is queued.
data "aws_iam_policy_document" "bridge" {
  statement {
    sid       = "ConsumeUploadNotifications"
    effect    = "Allow"
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.events.arn]
  }
}

resource "aws_iam_role" "worker" {
  name               = "${var.name}-worker"
  description        = "gemini-vision-worker: read inputs, write results"
  assume_role_policy = data.aws_iam_policy_document.worker_trust.json
}

resource "aws_iam_role_policy" "worker" {
  name   = "${var.name}-worker-s3"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker.json
}

resource "aws_iam_role" "bridge" {
  name               = "${var.name}-bridge"
  description        = "gemini-vision-worker SQS bridge: consume upload notifications"
  assume_role_policy = data.aws_iam_policy_document.bridge_trust.json
}

resource "aws_iam_role_policy" "bridge" {
  name   = "${var.name}-bridge-sqs"
  role   = aws_iam_role.bridge.id
  policy = data.aws_iam_policy_document.bridge.json
}
