variable "region" {
  description = "AWS region of the buckets and the queue"
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Prefix for the names of the queues and roles"
  type        = string
  default     = "gvw"
}

variable "input_bucket" {
  description = "Existing bucket whose uploads become jobs (S3 bucket names are global: set yours)"
  type        = string
  default     = "inbox"
}

variable "input_prefix" {
  description = "Key prefix under input_bucket that workers may read and that triggers jobs (\"\" = the whole bucket; else end it with /)"
  type        = string
  default     = ""
}

variable "input_suffixes" {
  description = "Key suffixes that trigger a notification, one S3 filter each ([] = every key under the prefix)"
  type        = list(string)
  default     = [".jpg", ".jpeg", ".png"]
}

variable "results_bucket" {
  description = "Existing bucket the workers write results to"
  type        = string
  default     = "results"
}

variable "results_prefix" {
  description = "Key prefix under results_bucket for results (GVW_RESULTS_URI = s3://<results_bucket>/<results_prefix>), ending with /"
  type        = string
  default     = "vision/"
}

variable "max_receive_count" {
  description = "Receives of one notification before SQS moves it to the dead-letter queue"
  type        = number
  default     = 5
}

variable "queue_visibility_timeout_seconds" {
  description = "How long a received notification stays hidden while the bridge turns it into a job"
  type        = number
  default     = 60
}

variable "dlq_alarm_actions" {
  description = "SNS topic ARNs (or other alarm actions) notified when the dead-letter queue is not empty"
  type        = list(string)
  default     = []
}

# IAM roles for service accounts (EKS). The roles trust these Kubernetes service
# accounts through the cluster's OIDC provider (infra/k8s/serviceaccounts.yaml).
variable "oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider"
  type        = string
}

variable "oidc_provider_url" {
  description = "Issuer URL of the EKS cluster's OIDC provider (https://oidc.eks.<region>.amazonaws.com/id/...)"
  type        = string
}

variable "k8s_namespace" {
  description = "Namespace of the worker and bridge service accounts"
  type        = string
  default     = "gvw"
}

variable "worker_service_account" {
  description = "Kubernetes service account of the workers"
  type        = string
  default     = "gvw-worker"
}

variable "bridge_service_account" {
  description = "Kubernetes service account of the SQS bridge"
  type        = string
  default     = "gvw-bridge"
}
