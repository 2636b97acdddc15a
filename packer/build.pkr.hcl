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
    ]
  }

  # bakery-node and its modules: fetched by the build host's pip (the builder instance
  # needs no PyPI access), uploaded, installed by the same script as the local image's.
  provisioner "shell-local" {
    except           = ["null.local"]
    environment_vars = ["LIB=${path.root}/work/bakery-lib", "EXTRA=httpx>=0.23 boto3>=1.34 google-cloud-storage>=2.14"]
    script           = "${path.root}/scripts/lib.sh"
  }

  provisioner "file" {
    except      = ["null.local"]
    sources     = ["${path.root}/files/bakery", "${path.root}/files/local", "${path.root}/work/bakery-lib"]
    destination = "/tmp/"
  }

  provisioner "shell" {
    except          = ["null.local"]
    execute_command = "sudo -E bash '{{ .Path }}'"
    environment_vars = [
      "ROOT=",
      "BAKERY_SRC=/tmp/bakery",
      "FILES=/tmp/local",
      "LIB=/tmp/bakery-lib",
    ]
    scripts = [
      "${path.root}/scripts/bakery.sh",
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
      "BINARIES=${join(" ", var.local_binary_paths)}",
      "BINARY_SUMS=${join(",", var.local_binaries)}",
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
