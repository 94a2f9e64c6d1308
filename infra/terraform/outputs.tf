output "storage_uri" {
  description = "What jobs put in storage.uri."
  value       = "s3://${var.bucket}/${var.prefix}/runs"
}

output "head_instance_profile_arn" {
  description = "cluster/aws-gpu.yaml: available_node_types.head.node_config.IamInstanceProfile.Arn"
  value       = aws_iam_instance_profile.head.arn
}

output "worker_instance_profile_arn" {
  description = "cluster/aws-gpu.yaml: available_node_types.gpu_worker.node_config.IamInstanceProfile.Arn"
  value       = aws_iam_instance_profile.worker.arn
}
