"""Fréchet Video Distance (Unterthiner et al. 2018) with an I3D network whose weights the user gives
by path (they cannot be downloaded here).

The network is Inception-I3D (Carreira & Zisserman 2017) written for this project with the parameter
names of the widely used PyTorch port's Kinetics-400 checkpoint (`Conv3d_1a_7x7.conv3d.weight`,
`Mixed_3b.b1b.bn.running_mean`, ..., `logits.conv3d.weight`), so such a state dict loads as is.
Features are the 400 Kinetics logits, averaged over what is left of time and space (for 16 frames at
224 px this is exactly the reference's final pooling). Weights load with `weights_only=True` (or from
safetensors): a weights file cannot run code.

FVD = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^1/2) over the features of real and generated clips.
With few clips the covariance estimate is poor and FVD is biased upward; the report gives n.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# (input channels, [1x1, 3x3-reduce, 3x3, 3x3-reduce, 3x3, pool-proj]) of each Inception block
_BLOCKS = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)), "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)), "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)), "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)), "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


def _same_pad(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """TensorFlow-style SAME padding for a [B, C, T, H, W] input."""
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class Unit3D(nn.Module):
    """Conv3d (SAME padding) + BatchNorm + ReLU, or a plain biased conv for the logits."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), norm: bool = True):
        super().__init__()
        self.kernel, self.stride, self.norm = tuple(kernel), tuple(stride), norm
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=not norm)
        if norm:
            self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        return F.relu(self.bn(x)) if self.norm else x


class _Pool(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x):
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class Inception(nn.Module):
    def __init__(self, cin: int, c: tuple[int, ...]):
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a, self.b1b = Unit3D(cin, c[1]), Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(cin, c[3]), Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a, self.b3b = _Pool((3, 3, 3), (1, 1, 1)), Unit3D(cin, c[5])

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class I3D(nn.Module):
    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = _Pool((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = _Pool((1, 3, 3), (1, 2, 2))
        self.Mixed_3b, self.Mixed_3c = Inception(*_BLOCKS["Mixed_3b"]), Inception(*_BLOCKS["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = _Pool((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, name, Inception(*_BLOCKS[name]))
        self.MaxPool3d_5a_2x2 = _Pool((2, 2, 2), (2, 2, 2))
        self.Mixed_5b, self.Mixed_5c = Inception(*_BLOCKS["Mixed_5b"]), Inception(*_BLOCKS["Mixed_5c"])
        self.logits = Unit3D(1024, num_classes, norm=False)
        self.order = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
                      "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
                      "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c"]

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, T, H, W] in [-1, 1] -> logits [B, num_classes]."""
        x = video
        for name in self.order:
            x = getattr(self, name)(x)
        return self.logits(F.adaptive_avg_pool3d(x, 1)).flatten(1)


def load_i3d(path: str | Path, device: str | torch.device = "cpu") -> I3D:
    """An I3D from a state dict file (.pt/.pth read with weights_only=True, or .safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"i3d_weights={path}: no such file (a Kinetics-400 I3D state dict, e.g. the "
                                f"PyTorch port's rgb_imagenet.pt, saved where this machine can read it)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")  # noqa: TRY004
    classes = state["logits.conv3d.weight"].shape[0] if "logits.conv3d.weight" in state else 400
    model = I3D(classes)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: not an Inception-I3D state dict with the expected names; missing "
                         f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                         f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    return model.to(device).eval()


@torch.no_grad()
def i3d_features(model: I3D, videos: np.ndarray, size: int = 224, batch: int = 4) -> np.ndarray:
    """uint8 videos [N, T, H, W, 3] -> features [N, classes] (resized to size x size, scaled to [-1, 1])."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(videos), batch):
        v = torch.from_numpy(np.ascontiguousarray(videos[i:i + batch])).to(device).float()
        n, t = v.shape[:2]
        v = v.permute(0, 1, 4, 2, 3).reshape(n * t, 3, *v.shape[2:4])
        v = F.interpolate(v, size=(size, size), mode="bilinear", align_corners=False)
        v = (v / 127.5 - 1).reshape(n, t, 3, size, size).permute(0, 2, 1, 3, 4)
        out.append(model(v).double().cpu().numpy())
    return np.concatenate(out)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a [N, D] and b [M, D]."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((S_a S_b)^1/2) = sum of square roots of the eigenvalues of S_a S_b (real, >= 0 for PSD
    # matrices up to round-off)
    eig = np.linalg.eigvals(np.atleast_2d(cov_a) @ np.atleast_2d(cov_b))
    tr_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(np.atleast_2d(cov_a)) + np.trace(np.atleast_2d(cov_b))
                 - 2 * tr_sqrt)


def fvd(model: I3D, real: np.ndarray, generated: np.ndarray, size: int = 224) -> float:
    return frechet_distance(i3d_features(model, real, size), i3d_features(model, generated, size))
