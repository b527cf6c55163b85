output "queue_url" {
  description = "For the bridge: gvw bridge sqs --queue-url <this>"
  value       = aws_sqs_queue.events.id
}

output "queue_arn" {
  description = "The upload-notification queue"
  value       = aws_sqs_queue.events.arn
}

output "dead_letter_queue_url" {
  description = "Notifications that failed max_receive_count times"
  value       = aws_sqs_queue.dead_letter.id
}

output "worker_role_arn" {
  description = "Annotate the gvw-worker ServiceAccount: eks.amazonaws.com/role-arn"
  value       = aws_iam_role.worker.arn
}

output "bridge_role_arn" {
  description = "Annotate the gvw-bridge ServiceAccount: eks.amazonaws.com/role-arn"
  value       = aws_iam_role.bridge.arn
}

output "results_uri" {
  description = "GVW_RESULTS_URI for the workers"
  value       = "s3://${var.results_bucket}/${var.results_prefix}"
}

output "allowed_inputs" {
  description = "GVW_ALLOWED_INPUTS for the workers, matching the worker role's read grant"
  value       = "s3://${var.input_bucket}/${var.input_prefix}"
}
