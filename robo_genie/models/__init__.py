"""The three Genie parts and the ST-transformer they share."""

from robo_genie.models.dynamics import DynamicsModel
from robo_genie.models.lam import LatentActionModel
from robo_genie.models.latent_dynamics import LatentDynamics
from robo_genie.models.st_transformer import STBlock, STTransformer
from robo_genie.models.tokenizer import VideoTokenizer

__all__ = ["DynamicsModel", "LatentActionModel", "STBlock", "STTransformer", "VideoTokenizer", "build_part"]

PARTS = ("tokenizer", "lam", "dynamics")


def build_part(name: str, model_cfg):
    """Build one part from a ModelConfig (works on the meta device for parameter counting)."""
    m = model_cfg
    if name == "tokenizer":
        return VideoTokenizer(m.tokenizer, m.image_size, m.max_frames)
    if name == "lam":
        return LatentActionModel(m.lam, m.image_size, m.max_frames)
    if name == "dynamics":
        grid = m.image_size // m.tokenizer.patch
        kinds = {"maskgit": DynamicsModel, "latent": LatentDynamics}
        if m.dynamics.kind not in kinds:
            raise ValueError(f"model.dynamics.kind={m.dynamics.kind!r}: expected one of {', '.join(kinds)}")
        if m.dynamics.kind == "maskgit" and m.dynamics.actions != "latent":
            raise ValueError("model.dynamics.actions=recorded needs model.dynamics.kind=latent")
        return kinds[m.dynamics.kind](m.dynamics, m.tokenizer.codebook_size, m.lam.num_actions, grid * grid,
                             m.max_frames, m.tokenizer.code_dim)
    raise ValueError(f"unknown part {name!r}; expected one of {PARTS}")
