# The AWS image: a Debian AMI with bakery's provisioning (build.pkr.hcl), copied to
# aws_ami_regions. Tags carry the content hash so `bakery images` can find it.
source "amazon-ebs" "bakery" {
  region        = var.aws_region
  ami_regions   = var.aws_ami_regions
  instance_type = var.aws_instance_type
  ami_name      = var.image_name
  ssh_username  = "admin"

  source_ami_filter {
    owners      = [var.aws_source_ami_owner]
    most_recent = true
    filters = {
      name                = var.aws_source_ami_name
      architecture        = "x86_64"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
  }

  custom_endpoint_ec2        = var.aws_endpoint
  skip_credential_validation = var.aws_skip_checks
  skip_region_validation     = var.aws_skip_checks

  tags = {
    Name                = var.image_name
    "bakery:image"      = var.image_name
    "bakery:kubernetes" = var.kubernetes_version
    "bakery:etcd"       = var.etcd_version
  }
}
