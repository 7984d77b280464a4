"""Deployment targets: one module each, registered by `base.register` (deploycc/targets/base.py)."""
