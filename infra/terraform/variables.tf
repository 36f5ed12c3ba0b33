variable "region" {
  description = "AWS region of the instance and of the SSM parameters holding the secrets."
  type        = string
  default     = "eu-central-1"
}

variable "instance_type" {
  description = "EC2 instance type; the compose stack's memory limits add up to 3.5 GB, which a t3.medium (4 GB) holds."
  type        = string
  default     = "t3.medium"
}

variable "allowed_cidr" {
  description = "The only addresses that may open the dashboard (port 2718), e.g. your own address as 203.0.113.7/32."
  type        = string

  validation {
    condition     = can(cidrhost(var.allowed_cidr, 0)) && var.allowed_cidr != "0.0.0.0/0"
    error_message = "allowed_cidr must be a CIDR block (e.g. 203.0.113.7/32) and not 0.0.0.0/0."
  }
}

variable "key_name" {
  description = "Optional EC2 key pair. No SSH port is opened either way: shell access is through SSM Session Manager."
  type        = string
  default     = null
}

variable "project_git_url" {
  description = "Git URL the instance clones the project from (HTTPS, readable without credentials)."
  type        = string

  validation {
    condition     = can(regex("^https://", var.project_git_url))
    error_message = "project_git_url must be an https:// URL."
  }
}

variable "project_git_ref" {
  description = "Branch or tag of the project to deploy."
  type        = string
  default     = "main"
}

variable "ssm_prefix" {
  description = "SSM Parameter Store path holding the stack's settings as SecureString parameters named like .env's keys (e.g. /qsf/QSF_PG_PASSWORD)."
  type        = string
  default     = "/qsf"

  validation {
    condition     = can(regex("^/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", var.ssm_prefix))
    error_message = "ssm_prefix must be a parameter path such as /qsf."
  }
}

variable "ssm_kms_key_arn" {
  description = "Customer-managed KMS key that encrypts the SecureString parameters; null when they use the AWS-managed key aws/ssm."
  type        = string
  default     = null
}

variable "root_volume_gb" {
  description = "Size of the encrypted gp3 root volume (Docker images, Redpanda's log, TimescaleDB)."
  type        = number
  default     = 30
}
