variable "region" {
  description = "The AWS region of the bucket and the cluster (cluster/aws-gpu.yaml's provider.region)."
  type        = string
  default     = "us-west-2"
}

variable "bucket" {
  description = "The S3 bucket for ganflow runs and data sets (globally unique, 3-63 characters)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket))
    error_message = "bucket: 3-63 lowercase letters, digits, dots or hyphens, starting and ending with a letter or digit."
  }
}

variable "prefix" {
  description = "The one prefix in the bucket the cluster may read and write (runs go to s3://BUCKET/PREFIX/runs)."
  type        = string
  default     = "ganflow"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._/-]*[A-Za-z0-9]$", var.prefix)) && !strcontains(var.prefix, "*")
    error_message = "prefix: a key prefix without leading or trailing '/' and without wildcards, e.g. ganflow or teams/vision."
  }
}

variable "cluster_name" {
  description = "cluster/aws-gpu.yaml's cluster_name: the head may only terminate instances Ray tagged with it."
  type        = string
  default     = "ganflow"
}

variable "create_bucket" {
  description = "false: use an existing bucket (the IAM policy is still scoped to it and the prefix)."
  type        = bool
  default     = true
}
