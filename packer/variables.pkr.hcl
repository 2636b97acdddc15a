# Inputs of every bakery image. bakery writes the content-hashed ones into
# bakery.auto.pkrvars.hcl in the staging folder; locations and credentials (which must not
# change the image's hash) come as -var on the command line.
# Validation conditions use only functions Packer 1.6 evaluates there: regex() is unknown
# in its variable validation, and can(regex(...)) is therefore always false.

variable "image_name" {
  type        = string
  description = "Name of the image: bakery-k8s-<kubernetes version>-<content hash>, computed by bakery."
  default     = "bakery-k8s-dev"
  validation {
    # GCE's rule is the strictest: lowercase, digits, '-', at most 63 characters.
    condition     = length(var.image_name) <= 63 && trim(var.image_name, "abcdefghijklmnopqrstuvwxyz0123456789-") == "" && trim(substr(var.image_name, 0, 1), "abcdefghijklmnopqrstuvwxyz") == ""
    error_message = "The image_name must be lowercase letters, digits and '-', start with a letter, at most 63 characters."
  }
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes release whose kubelet and kubectl are installed, e.g. 1.31.4."
  default     = "1.31.4"
  validation {
    condition     = length(split(".", var.kubernetes_version)) == 3 && trim(var.kubernetes_version, "0123456789.") == "" && length([for x in split(".", var.kubernetes_version) : x if x == ""]) == 0
    error_message = "The kubernetes_version must look like 1.31.4 (no leading v)."
  }
}

variable "etcd_version" {
  type        = string
  description = "etcd release the control-plane image list pins, e.g. 3.5.17."
  default     = "3.5.17"
  validation {
    condition     = length(split(".", var.etcd_version)) == 3 && trim(var.etcd_version, "0123456789.") == "" && length([for x in split(".", var.etcd_version) : x if x == ""]) == 0
    error_message = "The etcd_version must look like 3.5.17 (no leading v)."
  }
}

variable "control_plane_images" {
  type        = list(string)
  description = "Container images pre-pulled into the cloud images: etcd, kube-apiserver, kube-scheduler, kube-controller-manager, pause, podmaster."
  default     = []
  validation {
    condition     = length([for ref in var.control_plane_images : ref if length(split(":", ref)) < 2 && length(split("@", ref)) < 2]) == 0
    error_message = "Every control_plane_images entry must be a full reference with a tag or digest."
  }
}

# -- amazon-ebs ---------------------------------------------------------------------

variable "aws_region" {
  type        = string
  description = "Region the AMI is built in."
  default     = "us-east-1"
}

variable "aws_ami_regions" {
  type        = list(string)
  description = "Further regions the AMI is copied to (one AMI id per region in images.json)."
  default     = []
}

variable "aws_instance_type" {
  type        = string
  description = "Instance type of the temporary build instance."
  default     = "t3.medium"
}

variable "aws_source_ami_owner" {
  type        = string
  description = "Account that publishes the base AMI (136693071363: Debian)."
  default     = "136693071363"
  validation {
    condition     = length(var.aws_source_ami_owner) == 12 && trim(var.aws_source_ami_owner, "0123456789") == ""
    error_message = "The aws_source_ami_owner must be a 12-digit AWS account id."
  }
}

variable "aws_source_ami_name" {
  type        = string
  description = "Name filter of the base AMI; the newest match is used."
  default     = "debian-12-amd64-*"
}

variable "aws_endpoint" {
  type        = string
  description = "EC2 endpoint override (a local test server); empty for AWS itself."
  default     = ""
}

variable "aws_skip_checks" {
  type        = bool
  description = "Skip credential and region validation (offline `packer validate` only)."
  default     = false
}

# -- googlecompute ------------------------------------------------------------------

variable "gcp_project" {
  type        = string
  description = "GCP project the image is built in and stored in."
  default     = "my-project"
}

variable "gcp_zone" {
  type        = string
  description = "Zone of the temporary build instance."
  default     = "us-central1-a"
}

variable "gcp_machine_type" {
  type        = string
  description = "Machine type of the temporary build instance."
  default     = "e2-standard-2"
}

variable "gcp_source_image_family" {
  type        = string
  description = "Base image family (from project debian-cloud)."
  default     = "debian-12"
}

variable "gcp_account_file" {
  type        = string
  description = "Service account key file; empty for application default credentials."
  default     = ""
}

# -- local (QEMU) -------------------------------------------------------------------

variable "debian_mirror" {
  type        = string
  description = "Debian mirror debootstrap reads (bakery passes the one apt uses on this machine)."
  default     = "http://deb.debian.org/debian"
  validation {
    condition     = substr(var.debian_mirror, 0, 7) == "http://" || substr(var.debian_mirror, 0, 8) == "https://" || substr(var.debian_mirror, 0, 7) == "file://"
    error_message = "The debian_mirror must be an http(s):// or file:// URL."
  }
}

variable "debian_suite" {
  type        = string
  description = "Debian release of the local image."
  default     = "bookworm"
}

variable "debian_packages" {
  type        = list(string)
  description = "Packages debootstrap adds to the minbase root of the local image."
  default = [
    "systemd-sysv", "linux-image-cloud-amd64", "cloud-init", "openssh-server", "monit",
    "iproute2", "ca-certificates", "python3-httpx",
    "python3-cffi-backend",
  ]
  validation {
    condition     = contains(var.debian_packages, "cloud-init") && contains(var.debian_packages, "linux-image-cloud-amd64")
    error_message = "The debian_packages must include cloud-init and linux-image-cloud-amd64 (the VMs boot its kernel directly)."
  }
}

variable "local_binaries" {
  type        = list(string)
  description = "sha256 and name of each real program the local image carries (etcd, kube-apiserver, ...): part of the image's hash."
  default     = []
}

variable "local_binary_paths" {
  type        = list(string)
  description = "Where bakery's cache holds those programs on the build host (not hashed: the sums are)."
  default     = []
}

variable "local_disk_size" {
  type        = string
  description = "Size of the local image's ext4 root (mkfs.ext4 size syntax); overlays grow into it."
  default     = "2G"
  validation {
    condition     = length(var.local_disk_size) > 1 && contains(["M", "G"], substr(var.local_disk_size, length(var.local_disk_size) - 1, 1)) && trim(substr(var.local_disk_size, 0, length(var.local_disk_size) - 1), "0123456789") == ""
    error_message = "The local_disk_size must be a number followed by M or G, e.g. 2G."
  }
}

variable "local_output_dir" {
  type        = string
  description = "Folder that receives disk.qcow2, vmlinuz and initrd.img (created whole at the end)."
  default     = "output/local"
}

variable "local_work_dir" {
  type        = string
  description = "Scratch folder for the debootstrap root (removed when the image is made)."
  default     = "work/local"
}
