import numpy as np
import torch
from robo_genie.eval.metrics import normalized_mutual_info, psnr


def test_nmi_is_one_for_relabelled_partitions_and_near_zero_for_independent():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, 5000)
    perm = np.array([3, 5, 0, 1, 4, 2])
    assert abs(normalized_mutual_info(a, perm[a]) - 1) < 1e-9
    assert normalized_mutual_info(a, rng.integers(0, 8, 5000)) < 0.01
    coarse = a // 2                                    # a coarsening keeps part of the information
    assert 0.3 < normalized_mutual_info(a, coarse) < 1.0


def test_psnr_values():
    x = torch.zeros(2, 8, 8, 3)
    y = x + 0.1
    assert torch.allclose(psnr(x, y), torch.full((2,), 20.0), atol=1e-4)


def test_ssim_is_one_for_equal_images_and_falls_with_noise_and_shift():
    from robo_genie.eval.metrics import ssim
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 32, 32, 3, generator=g).cumsum(1) / 32          # smooth-ish images
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    light = ssim(x, (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1))
    heavy = ssim(x, (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1))
    assert (heavy < light).all() and (light < 1).all()
