# The GCP image: a Debian image with bakery's provisioning (build.pkr.hcl), in an image
# family per Kubernetes minor so instance templates can follow the newest.
source "googlecompute" "bakery" {
  project_id          = var.gcp_project
  zone                = var.gcp_zone
  machine_type        = var.gcp_machine_type
  source_image_family = var.gcp_source_image_family
  image_name          = var.image_name
  image_family        = "bakery-k8s-${split(".", var.kubernetes_version)[0]}-${split(".", var.kubernetes_version)[1]}"
  account_file        = var.gcp_account_file
  ssh_username        = "packer"

  image_labels = {
    bakery-image      = var.image_name
    bakery-kubernetes = replace(var.kubernetes_version, ".", "-")
  }
}
