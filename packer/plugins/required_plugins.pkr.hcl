# Added to the staging folder by bakery only for Packer >= 1.7 (1.6 rejects this block
# and has these builders compiled in); bakery then runs `packer init` first.
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.2.0"
    }
    googlecompute = {
      source  = "github.com/hashicorp/googlecompute"
      version = ">= 1.1.0"
    }
  }
}
