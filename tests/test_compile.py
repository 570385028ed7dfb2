"""torch.compile (inductor, CPU) compiles a training step of each part, forward and backward, to the
eager step's loss and gradients. Compiling the tokenizer (the library's in-place VQ training step) and
the LAM (a replicate pad on a channels-last view) used to fail."""

import pytest
import torch
from omegaconf import OmegaConf

from robo_genie.bench.train import step_fn, synthetic_batch
from robo_genie.config import TINY, ModelConfig
from robo_genie.models import build_part


@pytest.mark.parametrize("part", ["tokenizer", "lam", "dynamics"])
def test_a_compiled_training_step_matches_the_eager_one(part):
    # the demo's tiny parts (the failures needed its conv head and decoder kernel), at 32x32
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.structured(TINY), {"image_size": 32})
    torch.manual_seed(0)
    eager = build_part(part, cfg).train()
    compiled_model = build_part(part, cfg).train()
    compiled_model.load_state_dict(eager.state_dict())
    if part == "lam":     # past the continuous warm-up, so the quantiser is in the step
        for m in (eager, compiled_model):
            m.train_steps.fill_(cfg.lam.continuous_warmup_steps)
    batch = synthetic_batch(part, cfg, batch_size=2, clip_len=2, device=torch.device("cpu"))
    compiled = torch.compile(compiled_model, backend="inductor")
    losses = []
    for model in (eager, compiled):
        torch.manual_seed(1)      # the same mask draws for the dynamics model
        loss, _ = step_fn(part)(model, batch)
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1], rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(eager.named_parameters(), compiled_model.parameters()):
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-5), name
