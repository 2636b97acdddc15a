# One build for every builder. Cloud sources provision over SSH with `shell`; the local
# source runs the same shared scripts inside its chroot through scripts/local/*.sh.
build {
  sources = [
    "source.amazon-ebs.bakery",
    "source.googlecompute.bakery",
    "source.null.local",
  ]

  provisioner "shell" {
    except          = ["null.local"]
    execute_command = "sudo -E bash '{{ .Path }}'"
    environment_vars = [
      "KUBERNETES_VERSION=${var.kubernetes_version}",
      "CONTROL_PLANE_IMAGES=${join(" ", var.control_plane_images)}",
    ]
    scripts = [
      "${path.root}/scripts/base.sh",
      "${path.root}/scripts/kubernetes.sh",
      "${path.root}/scripts/images.sh",
      "${path.root}/scripts/cleanup.sh",
    ]
  }

  provisioner "shell-local" {
    only            = ["null.local"]
    execute_command = ["/bin/bash", "-c", "{{ .Vars }} /bin/bash '{{ .Script }}'"]
    environment_vars = [
      "ROOT=${var.local_work_dir}/root",
      "DEBIAN_MIRROR=${var.debian_mirror}",
      "DEBIAN_SUITE=${var.debian_suite}",
      "DEBIAN_PACKAGES=${join(",", var.debian_packages)}",
      "FILES=${path.root}/files/local",
      "BAKERY_SRC=${path.root}/files/bakery",
      "SCRIPTS=${path.root}/scripts",
      "OUTPUT_DIR=${var.local_output_dir}",
      "DISK_SIZE=${var.local_disk_size}",
    ]
    scripts = [
      "${path.root}/scripts/local/rootfs.sh",
      "${path.root}/scripts/local/configure.sh",
      "${path.root}/scripts/local/disk.sh",
    ]
  }

  post-processor "manifest" {
    output     = "${path.root}/manifest.json"
    strip_path = false
    custom_data = {
      image_name         = var.image_name
      kubernetes_version = var.kubernetes_version
      local_output_dir   = var.local_output_dir
    }
  }
}
