# One EC2 instance running the compose stack (docker-compose.yml at the repository root).
data "aws_ami" "ubuntu" {
  most_recent = true
  owners      = ["099720109477"] # Canonical

  filter {
    name   = "name"
    values = ["ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

resource "aws_instance" "qsf" {
  #checkov:skip=CKV_AWS_88:The dashboard is served from this address, to allowed_cidr only (the security group); nothing else listens on it.
  ami                         = data.aws_ami.ubuntu.id
  instance_type               = var.instance_type
  subnet_id                   = sort(data.aws_subnets.default.ids)[0]
  vpc_security_group_ids      = [aws_security_group.qsf.id]
  iam_instance_profile        = aws_iam_instance_profile.qsf.name
  key_name                    = var.key_name
  associate_public_ip_address = true
  monitoring                  = true
  ebs_optimized               = true

  # No secret in here: the instance reads them from SSM Parameter Store when it boots.
  user_data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
    region          = var.region
    ssm_prefix      = var.ssm_prefix
    project_git_url = var.project_git_url
    project_git_ref = var.project_git_ref
    compose_script  = file("${path.module}/qsf_compose.py")
  })

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1          # containers cannot reach the instance's credentials
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_gb
    encrypted             = true
    delete_on_termination = true
  }

  tags = {
    Name = "qsframework"
  }

  lifecycle {
    # a newer Ubuntu image must not replace the instance (and its data) on the next apply
    ignore_changes = [ami]
  }
}
