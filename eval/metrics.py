"""Plain metrics on numpy arrays / tensors."""

from __future__ import annotations

import numpy as np
import torch


def psnr(a: torch.Tensor, b: torch.Tensor, dims: tuple[int, ...] = (-3, -2, -1)) -> torch.Tensor:
    """PSNR in dB between images in [0, 1], reduced over `dims` (per image by default)."""
    mse = ((a.float() - b.float()) ** 2).mean(dim=dims).clamp_min(1e-10)
    return -10 * torch.log10(mse)


def normalized_mutual_info(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """NMI with arithmetic-mean normalisation: I(A;B) / ((H(A) + H(B)) / 2), in [0, 1]."""
    a, b = np.asarray(labels_a).ravel(), np.asarray(labels_b).ravel()
    if a.size == 0:
        raise ValueError("NMI of empty label arrays")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    joint = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(joint, (ai, bi), 1)
    p = joint / joint.sum()
    pa, pb = p.sum(1), p.sum(0)
    nz = p > 0
    mi = (p[nz] * np.log(p[nz] / (pa[:, None] * pb[None, :])[nz])).sum()
    ha = -(pa[pa > 0] * np.log(pa[pa > 0])).sum()
    hb = -(pb[pb > 0] * np.log(pb[pb > 0])).sum()
    if ha + hb == 0:
        return 1.0                       # both constant: identical partitions
    return float(max(0.0, mi) / ((ha + hb) / 2))


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03) between images
    [..., H, W, 3] in [0, 1], averaged over pixels and channels -> [...]."""
    lead = a.shape[:-3]
    x = a.float().reshape(-1, *a.shape[-3:]).permute(0, 3, 1, 2)
    y = b.float().reshape(-1, *b.shape[-3:]).permute(0, 3, 1, 2)
    g = torch.exp(-((torch.arange(window, dtype=torch.float32) - window // 2) ** 2) / (2 * sigma ** 2))
    g = (g / g.sum()).to(x.device)
    kernel = (g[:, None] * g[None, :]).expand(x.shape[1], 1, window, window)

    def blur(z):
        return torch.nn.functional.conv2d(z, kernel, groups=z.shape[1])
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).reshape(lead)
