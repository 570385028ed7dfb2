"""torch.compile (inductor, CPU) compiles a training step to the eager step's loss and gradients: each
tiny part whole, and the two smallest dynamics ladder sizes block by block, as `STAGE.compile=true`
trains them. Compiling the tokenizer (the library's in-place VQ training step), the LAM (a replicate
pad on a channels-last view) and the dynamics model at dim 256-512 (inductor's C++ mixing mask
types) used to fail."""

import pytest
import torch
from omegaconf import OmegaConf

from robo_genie.bench.train import step_fn, synthetic_batch
from robo_genie.config import MODEL_PRESETS, TINY, ModelConfig
from robo_genie.models import build_part
from robo_genie.training.parallelize import parallelize


def _pair(part: str, cfg):
    """Two equal models; a fresh dynamics model gets random codes and a non-zero output head, else its
    loss and every gradient would be 0 and any compiled step would "match"."""
    torch.manual_seed(0)
    eager = build_part(part, cfg).train()
    if part == "dynamics" and hasattr(eager, "set_codebook"):
        eager.set_codebook(torch.randn_like(eager.codebook))
        with torch.no_grad():
            for p in (*eager.kernel_out.parameters(), *eager.delta_out.parameters()):
                p.normal_(0, 0.02)
    if part == "lam":     # past the continuous warm-up, so the quantiser is in the step
        eager.train_steps.fill_(cfg.lam.continuous_warmup_steps)
    compiled = build_part(part, cfg).train()
    compiled.load_state_dict(eager.state_dict())
    return eager, compiled


def _check_same_step(part: str, cfg, eager, compiled, run_compiled) -> None:
    batch = synthetic_batch(part, cfg, batch_size=2 if part != "dynamics" else 1, clip_len=2,
                            device=torch.device("cpu"))
    losses = []
    for model, run in ((eager, eager), (compiled, run_compiled)):
        torch.manual_seed(1)      # the same mask draws for a MaskGIT model
        loss, _ = step_fn(part)(run, batch)
        loss.backward()
        losses.append(loss.detach())
    assert float(losses[0]) > 0
    assert torch.allclose(losses[0], losses[1], rtol=1e-4, atol=1e-5)
    n_grads = 0
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        if a.grad is not None:
            n_grads += bool(a.grad.abs().max() > 0)
            assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-5), name
    assert n_grads > 0


@pytest.mark.parametrize("part, kind", [("tokenizer", None), ("lam", None), ("dynamics", "latent"),
                                        ("dynamics", "maskgit")])
def test_a_compiled_training_step_matches_the_eager_one(part, kind):
    # the demo's tiny parts (the failures needed its conv head and decoder kernel), at 32x32
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.structured(TINY), {"image_size": 32})
    if kind is not None:
        cfg.dynamics.kind = kind
    eager, compiled = _pair(part, cfg)
    _check_same_step(part, cfg, eager, compiled, torch.compile(compiled, backend="inductor"))


@pytest.mark.parametrize("size", ["dyn_40m", "dyn_150m"])
def test_the_smallest_ladder_sizes_compile_block_by_block(size):
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.structured(MODEL_PRESETS[size]),
                          {"image_size": 32})
    eager, compiled = _pair("dynamics", cfg)
    parallelize(compiled, None, torch.device("cpu"), compile_blocks=True)
    _check_same_step("dynamics", cfg, eager, compiled, compiled)
