# The bucket ganflow keeps runs in, and the two instance profiles cluster/aws-gpu.yaml names:
#   ganflow-ray-worker: read/write the one bucket prefix, nothing else;
#   ganflow-ray-head:   the same, plus what Ray's autoscaler needs to start and stop the GPU
#                       workers (and to hand them the worker profile, and no other role).
# The policies are JSON templates in policies/ so that tests can read exactly what is granted.

locals {
  bucket_arn = "arn:aws:s3:::${var.bucket}"
  storage_policy = templatefile("${path.module}/policies/storage.json", {
    bucket = var.bucket
    prefix = var.prefix
  })
}

resource "aws_s3_bucket" "runs" {
  count  = var.create_bucket ? 1 : 0
  bucket = var.bucket
}

resource "aws_s3_bucket_public_access_block" "runs" {
  count                   = var.create_bucket ? 1 : 0
  bucket                  = aws_s3_bucket.runs[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "runs" {
  count  = var.create_bucket ? 1 : 0
  bucket = aws_s3_bucket.runs[0].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

# Multipart uploads that a killed worker left behind cost storage until they are aborted.
resource "aws_s3_bucket_lifecycle_configuration" "runs" {
  count  = var.create_bucket ? 1 : 0
  bucket = aws_s3_bucket.runs[0].id
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {
      prefix = "${var.prefix}/"
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_policy" "storage" {
  name        = "ganflow-storage-${var.cluster_name}"
  description = "ganflow: read and write s3://${var.bucket}/${var.prefix}/ only"
  policy      = local.storage_policy
}

resource "aws_iam_role" "worker" {
  name               = "ganflow-ray-worker"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy_attachment" "worker_storage" {
  role       = aws_iam_role.worker.name
  policy_arn = aws_iam_policy.storage.arn
}

resource "aws_iam_instance_profile" "worker" {
  name = "ganflow-ray-worker"
  role = aws_iam_role.worker.name
}

resource "aws_iam_role" "head" {
  name               = "ganflow-ray-head"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy_attachment" "head_storage" {
  role       = aws_iam_role.head.name
  policy_arn = aws_iam_policy.storage.arn
}

resource "aws_iam_role_policy" "head_autoscaler" {
  name = "ganflow-ray-autoscaler"
  role = aws_iam_role.head.id
  policy = templatefile("${path.module}/policies/autoscaler.json", {
    cluster_name    = var.cluster_name
    worker_role_arn = aws_iam_role.worker.arn
  })
}

resource "aws_iam_instance_profile" "head" {
  name = "ganflow-ray-head"
  role = aws_iam_role.head.name
}
