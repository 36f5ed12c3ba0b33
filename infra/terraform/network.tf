# The account's default VPC and one of its default subnets (public: the instance gets a public
# address for the dashboard).
data "aws_vpc" "default" {
  default = true
}

data "aws_subnets" "default" {
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default.id]
  }

  filter {
    name   = "default-for-az"
    values = ["true"]
  }
}

# No broker, database or SSH port: the dashboard alone, and only to allowed_cidr. Shell access is
# SSM Session Manager, which needs no inbound port. Outbound: HTTPS (Docker images, the project's
# Git host, SSM, Telegram), HTTP (Ubuntu's package mirrors) and Binance's WebSocket port.
resource "aws_security_group" "qsf" {
  name_prefix = "qsf-"
  description = "QuantStream: the dashboard to the allowed CIDR only"
  vpc_id      = data.aws_vpc.default.id

  ingress {
    description = "Live dashboard (marimo, password login)"
    protocol    = "tcp"
    from_port   = 2718
    to_port     = 2718
    cidr_blocks = [var.allowed_cidr]
  }

  egress {
    description = "HTTPS: images, project source, SSM, Telegram"
    protocol    = "tcp"
    from_port   = 443
    to_port     = 443
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "HTTP: Ubuntu package mirrors"
    protocol    = "tcp"
    from_port   = 80
    to_port     = 80
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "Binance market-data WebSocket"
    protocol    = "tcp"
    from_port   = 9443
    to_port     = 9443
    cidr_blocks = ["0.0.0.0/0"]
  }

  lifecycle {
    create_before_destroy = true
  }
}
