"""A count of the latent actions a dynamics model saw in training, kept with its weights."""

from __future__ import annotations

import torch
from torch import nn

from robo_genie import distributed


class ActionCounts(nn.Module):
    """How often each latent action occurred in the training batches (a buffer, so checkpoints and
    bundles carry it). Eval draws frequency-matched random actions from it."""

    def __init__(self, num_actions: int):
        super().__init__()
        self.register_buffer("action_counts", torch.zeros(num_actions, dtype=torch.long))
        # bundles written before the counts existed load with zero counts
        self._register_load_state_dict_pre_hook(self._fill_missing)

    def count(self, actions: torch.Tensor) -> None:
        if self.training and not actions.is_floating_point():
            counts = torch.bincount(actions.flatten(), minlength=len(self.action_counts))
            self.action_counts += distributed.all_reduce_sum_(counts)      # the global batch's

    def _fill_missing(self, state_dict, prefix, *args) -> None:
        state_dict.setdefault(prefix + "action_counts", torch.zeros_like(self.action_counts))
