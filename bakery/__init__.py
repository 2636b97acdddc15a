"""bakery: highly available Kubernetes control planes from golden images."""

__version__ = "0.1.0"
