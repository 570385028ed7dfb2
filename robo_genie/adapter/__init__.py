"""Latent-to-real action adapter: LAM codes <-> robot commands, and a goal-reaching policy."""

from robo_genie.adapter.adapter import Adapter, AdapterError
from robo_genie.adapter.policy import LatentPolicy

__all__ = ["Adapter", "AdapterError", "LatentPolicy"]
