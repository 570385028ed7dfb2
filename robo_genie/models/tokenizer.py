"""Video tokenizer: an ST-ViViT VQ-VAE, causal in time (tokens of frame t see frames <= t)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from robo_genie.config import TokenizerConfig
from robo_genie.models.quantizer import Quantizer, codebook_stats
from robo_genie.models.st_transformer import WINDOW_FRAMES, STTransformer, TemporalCache


def patchify(video: torch.Tensor, p: int) -> torch.Tensor:
    """[B, T, H, W, C] -> [B, T, (H/p)*(W/p), p*p*C]."""
    return rearrange(video, "b t (h p1) (w p2) c -> b t (h w) (p1 p2 c)", p1=p, p2=p)


def unpatchify(patches: torch.Tensor, p: int, h: int) -> torch.Tensor:
    """[B, T, (H/p)*(W/p), p*p*C] -> [B, T, H, W, C] with H = h * p."""
    return rearrange(patches, "b t (h w) (p1 p2 c) -> b t (h p1) (w p2) c", h=h, p1=p, p2=p)


class PixelRefiner(nn.Module):
    """A small residual conv head on each decoded frame (per frame, so still causal in time).

    A linear patch output decodes each patch on its own, which leaves seams and blur at patch
    borders; two 3x3 convolutions across them bought +0.4 dB held-out PSNR for the tiny tokenizer
    for about 10% more step time (NOTES.md). Starts as the identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(channels, 3, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, video: torch.Tensor) -> torch.Tensor:      # [B, T, H, W, 3]
        frames = rearrange(video, "b t h w c -> (b t) c h w")
        frames = frames + self.net(frames)
        return rearrange(frames, "(b t) c h w -> b t h w c", b=video.shape[0])


class VideoTokenizer(nn.Module):
    """Video [B, T, H, W, 3] in [0, 1] <-> discrete tokens [B, T, h, w]."""

    def __init__(self, cfg: TokenizerConfig, image_size: int):
        super().__init__()
        if image_size % cfg.patch:
            raise ValueError(f"image_size {image_size} is not a multiple of tokenizer.patch {cfg.patch}")
        self.cfg = cfg
        self.grid = image_size // cfg.patch
        n, patch_dim = self.grid ** 2, 3 * cfg.patch ** 2
        enc, dec = cfg.encoder, cfg.decoder
        self.patch_in = nn.Linear(patch_dim, enc.dim)
        self.encoder = STTransformer(enc.dim, enc.depth, enc.heads, n, enc.mlp_ratio, learned_frames=WINDOW_FRAMES)
        self.to_code = nn.Linear(enc.dim, cfg.code_dim)
        self.quantizer = Quantizer(cfg.code_dim, cfg.codebook_size, cfg.commitment_weight,
                                   cfg.ema_decay, cfg.dead_code_threshold)
        self.from_code = nn.Linear(cfg.code_dim, dec.dim)
        self.decoder = STTransformer(dec.dim, dec.depth, dec.heads, n, dec.mlp_ratio)
        self.patch_out = nn.Linear(dec.dim, patch_dim)
        self.refine = PixelRefiner(cfg.refine_channels) if cfg.refine_channels > 0 else None

    def encode_continuous(self, video: torch.Tensor) -> torch.Tensor:
        return self.to_code(self.encoder(self.patch_in(patchify(video, self.cfg.patch))))

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Video -> token indices [B, T, h, w]."""
        _, idx, _ = self.quantizer(self.encode_continuous(video))
        return idx.reshape(*idx.shape[:2], self.grid, self.grid)

    def decode_codes(self, codes: torch.Tensor, window: int | None = None,
                     cache: TemporalCache | None = None) -> torch.Tensor:
        """Code vectors [B, T, S, code_dim] -> video [B, T, H, W, 3] (unclamped). `window`, `cache`:
        as in STTransformer.forward, to go on decoding frame by frame with `decode_step`."""
        return self._pixels(self.decoder(self.from_code(codes), window, cache))

    def _pixels(self, h: torch.Tensor) -> torch.Tensor:
        video = unpatchify(self.patch_out(h), self.cfg.patch, self.grid)
        return video if self.refine is None else self.refine(video)

    @torch.no_grad()
    def decode_step(self, tokens: torch.Tensor, cache: TemporalCache) -> torch.Tensor:
        """The frame after the cache's, from its token indices [B, S] -> [B, H, W, 3] in [0, 1]; it
        joins the cache. Equal to decoding the whole video with the cache's window."""
        h = self.decoder.step(self.from_code(self.quantizer.lookup(tokens))[:, None], cache)
        return self._pixels(h)[:, 0].clamp(0, 1)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token indices [B, T, h, w] -> video in [0, 1]."""
        codes = self.quantizer.lookup(tokens.flatten(2))
        return self.decode_codes(codes).clamp(0, 1)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """Returns (loss, metrics) for one training batch."""
        q, idx, commit = self.quantizer(self.encode_continuous(video))
        recon = self.decode_codes(q)
        mse = F.mse_loss(recon.float(), video.float())
        psnr = -10 * torch.log10(mse.detach().clamp_min(1e-10))
        return mse + commit, {"mse": mse.detach(), "commit": commit.detach(), "psnr": psnr,
                              **codebook_stats(idx, self.cfg.codebook_size)}
