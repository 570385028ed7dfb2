"""Latent action model (LAM): infers a discrete action between consecutive frames, unsupervised.

The encoder reads frames x_1..x_{t+1} and emits one latent action a_t per transition, quantised
to |A| codes. The decoder sees only frames x_1..x_t plus the latent actions (added to the frame
tokens) and predicts x_{t+1} in pixel space. The only path from x_{t+1} to the decoder is the
tiny action bottleneck, so the codes have to describe what changed. At inference only the
encoder and the code vectors are used (to label video with actions).

Two things make the codes name the moves (NOTES.md, 2026-12-03; LAM alone on the demo's
eight-move tabletop, seeds 0-2, held-out NMI 0.62 / 0.48 / 0.47 before, 0.84 / 0.83 / 0.86 with both):
- The encoder reads, besides the frames and their difference, the product of the frame difference
  with the image gradient (`motion_products`). A frame difference alone says where something
  changed, not which way it went: that depends on whether the thing is darker or lighter than what
  is behind it. The product is the brightness-constancy term of optical flow (Lucas and Kanade
  1981): its sign gives the direction whatever the contrast.
- The codes are trained as three binary FSQ channels, whose boundaries are three planes through
  the origin: they cut a move in two wherever the moves do not fall into separate octants. After
  training, the code vectors are moved to the centres of |A| clusters of the training
  transitions' continuous actions (`fit_codes`), and video is labelled by the nearest of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robo_genie.config import LAMConfig, action_levels
from robo_genie.models.quantizer import FSQuantizer, codebook_stats, fit_clusters, nearest_code
from robo_genie.models.st_transformer import WINDOW_FRAMES, STTransformer
from robo_genie.models.tokenizer import patchify, unpatchify


def local_resample(frames: torch.Tensor, kernels: torch.Tensor, k: int, patch: int) -> torch.Tensor:
    """Resample each patch of `frames` with its own separable k x k kernel.

    out(y, x) = sum_{i,j} ky[i] kx[j] frames(y + i - k//2, x + j - k//2), with (ky, kx) the
    kernel of the patch holding (y, x): a translation by (dy, dx) is a pair of one-hot kernels.
    frames [B, T, H, W, C]; kernels [B, T, (H/p)*(W/p), 2k] (vertical then horizontal weights).
    """
    b, t, h, w, c = frames.shape
    r = k // 2
    kern = kernels.reshape(b, t, h // patch, w // patch, 2 * k)
    kern = kern.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)   # per pixel
    ky, kx = kern[..., :k], kern[..., k:]
    # .contiguous(): a channels-last input to the replicate pad broke torch.compile's backward
    x = F.pad(frames.reshape(b * t, h, w, c).permute(0, 3, 1, 2).contiguous(), (r, r, r, r), mode="replicate")
    x = x.permute(0, 2, 3, 1).reshape(b, t, h + 2 * r, w + 2 * r, c)
    rows = sum(kx[..., j:j + 1] * x[:, :, r:r + h, j:j + w] for j in range(k))    # horizontal pass
    # the vertical pass needs the horizontally resampled rows above and below each patch too
    x = F.pad(rows.reshape(b * t, h, w, c).permute(0, 3, 1, 2).contiguous(), (0, 0, r, r), mode="replicate")
    x = x.permute(0, 2, 3, 1).reshape(b, t, h + 2 * r, w, c)
    return sum(ky[..., i:i + 1] * x[:, :, i:i + h] for i in range(k))


def motion_products(video: torch.Tensor) -> torch.Tensor:
    """[B, T, H, W, C] in [0, 1] -> [B, T, H, W, 2]: per pixel, the change from the frame before times
    the image's horizontal and vertical gradient, summed over colour (0 at the first frame). Where
    an edge moves by less than its width, each is proportional to the motion along that axis,
    with the sign of the direction whatever the edge's contrast (optical flow's brightness-constancy
    term). Scaled by 100: a product of two small differences is ~1e-2, and an embedding's bias would
    otherwise drown it."""
    prev, now = video[:, :-1].float(), video[:, 1:].float()
    change = now - prev
    grad_y, grad_x = torch.gradient((prev + now) / 2, dim=(2, 3))
    products = 100.0 * torch.stack([(change * grad_x).sum(-1), (change * grad_y).sum(-1)], dim=-1)
    return torch.cat([torch.zeros_like(products[:, :1]), products], dim=1).to(video.dtype)


class LatentActionModel(nn.Module):
    def __init__(self, cfg: LAMConfig, image_size: int):
        super().__init__()
        if image_size % cfg.patch:
            raise ValueError(f"image_size {image_size} is not a multiple of lam.patch {cfg.patch}")
        self.cfg = cfg
        self.grid = image_size // cfg.patch
        n, patch_dim = self.grid ** 2, 3 * cfg.patch ** 2
        enc, dec = cfg.encoder, cfg.decoder
        self.enc_in = nn.Linear(patch_dim, enc.dim)
        if cfg.diff_input:
            # Its own embedding and norm: frame differences are tiny next to appearance and would
            # otherwise be drowned in the sum (measured: supervised direction accuracy stays at
            # chance for 300 steps without this).
            self.enc_diff = nn.Sequential(nn.Linear(patch_dim, enc.dim), nn.LayerNorm(enc.dim))
        self.enc_motion = nn.Sequential(nn.Linear(2 * cfg.patch ** 2, enc.dim), nn.LayerNorm(enc.dim))
        self.encoder = STTransformer(enc.dim, enc.depth, enc.heads, n, enc.mlp_ratio, learned_frames=WINDOW_FRAMES)
        # Attention pooling over a frame's patches: motion fills a few patches, appearance all of
        # them, so a mean would be dominated by appearance.
        self.pool_key = nn.Linear(enc.dim, 1)
        # |A| = 8 codes are three binary FSQ channels: no codebook to initialise, re-seed or lose a
        # code from (the VQ before it moved with a rounding error: NMI 0.54 / 0.26 / 0.39 at seeds 0-2
        # against 0.56 / 0.62 / 0.66; NOTES.md, twelfth round).
        self.quantizer = FSQuantizer(action_levels(cfg.num_actions))
        code_dim = len(self.quantizer.levels)
        # The vectors that label video (infer_actions): FSQ's own grid, where the nearest code is FSQ's
        # rounding, until fit_codes() moves them to the training transitions' clusters.
        self.register_buffer("code_vectors", self.quantizer.codebook.detach().clone())
        self.to_action = nn.Sequential(nn.LayerNorm(enc.dim), nn.Linear(enc.dim, code_dim))
        # Training forwards so far (a buffer, so it is checkpointed): the first
        # cfg.continuous_warmup_steps pass the actions unrounded, see forward().
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
        self.dec_in = nn.Linear(patch_dim, dec.dim)
        self.action_in = nn.Linear(code_dim, dec.dim)
        self.decoder = STTransformer(dec.dim, dec.depth, dec.heads, n, dec.mlp_ratio, learned_frames=WINDOW_FRAMES)
        self.dec_out = nn.Linear(dec.dim, patch_dim)
        if cfg.decoder_kernel > 0:
            # Each patch predicts a separable k x k kernel that resamples frame t locally (CDNA-style, Finn
            # et al. 2016): moving content becomes one weight shift, which a tiny decoder can
            # express, so the latent action pays off in the loss from the first steps. Starts near
            # the identity kernel (copy frame t); dec_out adds content that cannot be moved in.
            k = cfg.decoder_kernel
            self.kernel_out = nn.Linear(dec.dim, 2 * k)
            with torch.no_grad():
                self.kernel_out.bias.zero_()
                self.kernel_out.bias[k // 2] = self.kernel_out.bias[k + k // 2] = 4.0
            # A direct path from the action to every patch's kernel: the gradient that says
            # "this patch moved right" reaches the encoder through one layer, not the whole decoder.
            self.action_kernel = nn.Linear(code_dim, 2 * k)

    # -- encoder ------------------------------------------------------------------------------
    def encode_continuous(self, video: torch.Tensor) -> torch.Tensor:
        """Video [B, T, H, W, 3] -> continuous actions [B, T-1, code_dim] (a_t for x_t -> x_{t+1})."""
        x = patchify(video, self.cfg.patch)
        h = self.enc_in(x)
        if self.cfg.diff_input:
            h = h + self.enc_diff(torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1))
        h = h + self.enc_motion(patchify(motion_products(video), self.cfg.patch))
        h = self.encoder(h)                       # causal: output at frame t+1 sees frames <= t+1
        h = h[:, 1:]
        weights = torch.softmax(self.pool_key(h).float(), dim=2).to(h.dtype)   # [B, T-1, S, 1]
        return self.to_action((weights * h).sum(dim=2))

    def continuous_actions(self, video: torch.Tensor) -> torch.Tensor:
        """Video [B, T, H, W, 3] -> the actions before rounding, in [-1, 1]: [B, T-1, channels]."""
        return torch.tanh(self.encode_continuous(video).float())

    def infer_actions(self, video: torch.Tensor) -> torch.Tensor:
        """Video [B, T, H, W, 3] -> action codes [B, T-1] in [0, |A|): the nearest code vector."""
        return nearest_code(self.continuous_actions(video), self.code_vectors)

    @torch.no_grad()
    def fit_codes(self, actions: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Move the code vectors to the centres of |A| clusters of continuous actions [N, channels]
        (continuous_actions() over training transitions) -> how many of them each code takes."""
        centres = fit_clusters(actions.to(self.code_vectors.device), self.cfg.num_actions, seed)
        self.code_vectors.copy_(centres)
        return torch.bincount(nearest_code(actions.to(centres.device), centres), minlength=len(centres))

    # -- decoder ------------------------------------------------------------------------------
    def decode(self, context: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Frames x_1..x_t [B, t, H, W, 3] + action vectors [B, t, code_dim] -> x_2..x_{t+1}."""
        patches = patchify(context, self.cfg.patch)
        h = self.dec_in(patches) + self.action_in(actions)[:, :, None]
        h = self.decoder(h)
        logits = self.dec_out(h)
        if self.cfg.decoder_kernel > 0:
            k = self.cfg.decoder_kernel
            kernel_logits = self.kernel_out(h) + self.action_kernel(actions)[:, :, None]
            kernels = kernel_logits.float().unflatten(-1, (2, k)).softmax(-1).flatten(-2)
            moved = local_resample(context.float(), kernels, k, self.cfg.patch)
            logits = unpatchify(logits, self.cfg.patch, self.grid) + torch.logit(moved.clamp(1e-3, 1 - 1e-3))
            return torch.sigmoid(logits)
        if self.cfg.residual_pixels:
            logits = logits + torch.logit(patches.float().clamp(1e-3, 1 - 1e-3)).to(logits.dtype)
        return unpatchify(torch.sigmoid(logits), self.cfg.patch, self.grid)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        z = self.encode_continuous(video)
        if self.training and int(self.train_steps) < self.cfg.continuous_warmup_steps:
            # Continuous warm-up: the encoder and decoder first agree on what to transmit (the
            # motion) through the unrounded channels, then rounding starts.
            q, idx = torch.tanh(z), None
        else:
            q, idx = self.quantizer(z)
        if self.training:
            self.train_steps += 1
        pred = self.decode(video[:, :-1], q).float()
        target, prev = video[:, 1:].float(), video[:, :-1].float()
        err = (pred - target) ** 2
        if self.cfg.motion_weight > 0:
            moving = ((target - prev).abs().amax(dim=-1, keepdim=True) > self.cfg.motion_threshold)
            err = err * (1 + self.cfg.motion_weight * moving.float())
        metrics = {"mse": F.mse_loss(pred.detach(), target)}
        if idx is not None:
            metrics.update(codebook_stats(idx, self.cfg.num_actions))
        # Each FSQ channel's batch mean near 0: both of its values in use (see LAMConfig.balance_weight)
        balance = torch.tanh(z.float()).flatten(0, -2).mean(0).pow(2).sum()
        metrics["balance"] = balance.detach()
        return err.mean() + self.cfg.balance_weight * balance, metrics


@torch.no_grad()
def infer_actions_windowed(lam: torch.nn.Module, video: torch.Tensor, window: int) -> torch.Tensor:
    """LAM actions for videos of any length ([B, T, H, W, 3] float, or one [T, H, W, 3]) in windows
    of `window` frames (the clip length the LAM was trained on), consecutive windows sharing one
    frame so that every transition is labelled once. -> [B, T-1] (or [T-1])."""
    single = video.ndim == 4
    video = video[None] if single else video
    b, t = video.shape[:2]
    starts = range(0, t - 1, window - 1)
    full = [s for s in starts if s + window <= t]
    # The full-length windows go through the LAM as one batch; a shorter last window on its own.
    out = []
    if full:
        stacked = lam.infer_actions(torch.cat([video[:, s:s + window] for s in full]))   # [len(full) * B, window-1]
        out.append(stacked.reshape(len(full), b, window - 1).transpose(0, 1).reshape(b, -1))
    if len(full) < len(starts):
        out.append(lam.infer_actions(video[:, starts[-1]:]))
    actions = torch.cat(out, dim=1)
    return actions[0] if single else actions
