"""Building without storage and initialising afterwards (training/deferred_init.py) gives the plain
build's weights at the same seed; a model it cannot replay is refused by name. Under torchrun the
2-process tests in test_distributed.py run this path with sharding in between."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from robo_genie.config import MODEL_PRESETS
from robo_genie.models import build_part
from robo_genie.training.deferred_init import build_deferred, is_deferred, materialise


def _variant(micro_cfg, kind: str, actions: str = "latent"):
    cfg = micro_cfg.copy()
    cfg.dynamics.kind, cfg.dynamics.actions = kind, actions
    if actions == "recorded":
        cfg.dynamics.action_dim = 7
    return cfg


@pytest.mark.parametrize("part,kind,actions", [("tokenizer", "maskgit", "latent"), ("lam", "maskgit", "latent"),
                                               ("dynamics", "maskgit", "latent"), ("dynamics", "latent", "latent"),
                                               ("dynamics", "latent", "recorded")])
def test_a_deferred_build_gets_the_plain_builds_weights(micro_cfg, part, kind, actions):
    cfg = _variant(micro_cfg, kind, actions)
    torch.manual_seed(5)
    plain = build_part(part, cfg).state_dict()
    torch.manual_seed(5)
    model = build_deferred(lambda: build_part(part, cfg))
    assert is_deferred(model) and all(p.is_meta for p in model.parameters())
    torch.manual_seed(123)            # whatever ran in between, the replay starts from the build's state
    materialise(model, torch.device("cpu"))
    assert not is_deferred(model)
    state = model.state_dict()
    assert state.keys() == plain.keys()
    assert all(torch.equal(state[k], plain[k]) for k in plain), [k for k in plain if not torch.equal(state[k], plain[k])]
    torch.manual_seed(6)
    other = build_part(part, cfg).state_dict()
    assert any(not torch.equal(other[k], plain[k]) for k in plain)     # the seed matters: not a vacuous match


def test_the_2p5b_dynamics_model_is_built_without_storage():
    cfg = OmegaConf.structured(MODEL_PRESETS["robo_2p5b"])
    model = build_deferred(lambda: build_part("dynamics", cfg))
    assert all(p.is_meta for p in model.parameters())
    with torch.device("meta"):
        expected = sum(p.numel() for p in build_part("dynamics", cfg).parameters())
    assert sum(p.numel() for p in model.parameters()) == expected > 2e9


def test_a_parameter_without_an_init_call_is_refused_by_name():
    class FactoryValue(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(2, 2)
            self.gain = nn.Parameter(torch.ones(2))     # its value comes from the factory: nothing to replay

    with pytest.raises(RuntimeError, match="FactoryValue: no init call for gain"):
        build_deferred(FactoryValue)


@pytest.mark.parametrize("checkpointing", ["full", "selective"])
def test_wrapping_between_build_and_materialise_keeps_the_weights(micro_cfg, checkpointing):
    """Activation checkpointing wraps blocks (their parameters' names change) before initialisation."""
    from robo_genie.training.parallelize import parallelize
    torch.manual_seed(2)
    plain = build_part("dynamics", micro_cfg).state_dict()
    torch.manual_seed(2)
    model = parallelize(build_deferred(lambda: build_part("dynamics", micro_cfg)), None, torch.device("cpu"),
                        checkpointing)
    state = materialise(model, torch.device("cpu")).state_dict()
    assert state.keys() == plain.keys() and all(torch.equal(state[k], plain[k]) for k in plain)
