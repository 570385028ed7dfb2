"""The three Genie parts and the ST-transformer they share."""

from robo_genie.models.dynamics import DynamicsModel
from robo_genie.models.lam import LatentActionModel
from robo_genie.models.latent_dynamics import LatentDynamics
from robo_genie.models.st_transformer import STBlock, STTransformer
from robo_genie.models.tokenizer import VideoTokenizer

__all__ = ["DynamicsModel", "LatentActionModel", "STBlock", "STTransformer", "VideoTokenizer", "build_part"]

PARTS = ("tokenizer", "lam", "dynamics")


def check_sizes(name: str, m) -> None:
    """Refuse sizes no model can have, naming the setting (before torch meets a zero or a remainder)."""
    nets = {"tokenizer": ("encoder", "decoder"), "lam": ("encoder", "decoder"), "dynamics": ("net",)}
    positive = {"model.image_size": m.image_size,
                "model.tokenizer.patch": m.tokenizer.patch, "model.tokenizer.code_dim": m.tokenizer.code_dim}
    positive.update({"model.lam.patch": m.lam.patch} if name == "lam" else {})
    for n in nets[name]:
        positive.update({f"model.{name}.{n}.{k}": m[name][n][k] for k in ("dim", "depth", "heads")})
    for key, value in positive.items():
        if value < 1:
            raise ValueError(f"{key}={value}: must be at least 1")
    counts = {"model.tokenizer.codebook_size": m.tokenizer.codebook_size, "model.lam.num_actions": m.lam.num_actions}
    for key, value in counts.items():
        if value < 2:
            raise ValueError(f"{key}={value}: needs at least 2 codes")
    patch = m.lam.patch if name == "lam" else m.tokenizer.patch
    if m.image_size % patch:
        raise ValueError(f"model.image_size={m.image_size} is not a multiple of model.{'lam' if name == 'lam' else 'tokenizer'}"
                         f".patch={patch}")
    for n in nets[name]:
        net = m[name][n]
        if net.dim % net.heads:
            raise ValueError(f"model.{name}.{n}.dim={net.dim} is not divisible by model.{name}.{n}.heads={net.heads}")
        if n != "encoder" and name != "lam" and (net.dim // net.heads) % 2:      # the nets with rotary time positions
            raise ValueError(f"model.{name}.{n}.dim / heads = {net.dim // net.heads}: the head dim must be even "
                             f"(rotary time positions rotate pairs of channels)")


def build_part(name: str, model_cfg):
    """Build one part from a ModelConfig (works on the meta device for parameter counting)."""
    m = model_cfg
    if name not in PARTS:
        raise ValueError(f"unknown part {name!r}; expected one of {PARTS}")
    check_sizes(name, m)
    if name == "tokenizer":
        return VideoTokenizer(m.tokenizer, m.image_size)
    if name == "lam":
        return LatentActionModel(m.lam, m.image_size)
    if name == "dynamics":
        grid = m.image_size // m.tokenizer.patch
        kinds = {"maskgit": DynamicsModel, "latent": LatentDynamics}
        if m.dynamics.kind not in kinds:
            raise ValueError(f"model.dynamics.kind={m.dynamics.kind!r}: expected one of {', '.join(kinds)}")
        if m.dynamics.kind == "maskgit" and m.dynamics.actions != "latent":
            raise ValueError("model.dynamics.actions=recorded needs model.dynamics.kind=latent")
        return kinds[m.dynamics.kind](m.dynamics, m.tokenizer.codebook_size, m.lam.num_actions, grid * grid,
                                             m.tokenizer.code_dim)
    raise ValueError(f"unknown part {name!r}; expected one of {PARTS}")
