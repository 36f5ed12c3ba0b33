data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "qsf" {
  name_prefix        = "qsf-"
  description        = "QuantStream instance: SSM Session Manager and reading its own settings"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
}

# Session Manager (shell and port forwarding) instead of SSH.
resource "aws_iam_role_policy_attachment" "ssm_core" {
  role       = aws_iam_role.qsf.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

locals {
  ssm_path_arn = "arn:${data.aws_partition.current.partition}:ssm:${var.region}:${data.aws_caller_identity.current.account_id}:parameter${var.ssm_prefix}"
}

# Read (and decrypt) the parameters under ssm_prefix, nothing else.
data "aws_iam_policy_document" "read_settings" {
  statement {
    actions   = ["ssm:GetParametersByPath", "ssm:GetParameters", "ssm:GetParameter"]
    resources = [local.ssm_path_arn, "${local.ssm_path_arn}/*"]
  }

  dynamic "statement" {
    for_each = var.ssm_kms_key_arn == null ? [] : [var.ssm_kms_key_arn]

    content {
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "read_settings" {
  name_prefix = "qsf-settings-"
  role        = aws_iam_role.qsf.id
  policy      = data.aws_iam_policy_document.read_settings.json
}

resource "aws_iam_instance_profile" "qsf" {
  name_prefix = "qsf-"
  role        = aws_iam_role.qsf.name
}
