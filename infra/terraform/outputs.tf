output "instance_id" {
  description = "The instance; open a shell with: aws ssm start-session --target <id>"
  value       = aws_instance.qsf.id
}

output "public_ip" {
  description = "The instance's public address."
  value       = aws_instance.qsf.public_ip
}

output "dashboard_url" {
  description = "The live dashboard (its password is the QSF_DASHBOARD_PASSWORD parameter), open from allowed_cidr."
  value       = "http://${aws_instance.qsf.public_ip}:2718"
}
