"""Differentiable and image-processing pieces shared across papers."""

from .msssim import SIGMAS, mix_loss, mix_map, ms_ssim_map, ssim_components, ssim_map
from .smoothing import gaussian_blur, gaussian_kernel1d

__all__ = ["SIGMAS", "gaussian_blur", "gaussian_kernel1d", "mix_loss", "mix_map", "ms_ssim_map",
           "ssim_components", "ssim_map"]
