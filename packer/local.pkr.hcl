# The local (QEMU) image. The qemu builder would boot an installer and provision over SSH
# inside a TCG-emulated VM: many times slower than building the root directly on the host
# with no KVM here. So a `null` source drives shell-local steps (build.pkr.hcl):
# debootstrap a root, configure it in a chroot, then mkfs.ext4 -d + qemu-img to qcow2,
# with the kernel and initrd copied out for direct kernel boot.
source "null" "local" {
  communicator = "none"
}
