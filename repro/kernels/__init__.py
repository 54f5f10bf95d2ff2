"""Differentiable and image-processing pieces shared across papers."""

from .smoothing import gaussian_blur, gaussian_kernel1d

__all__ = ["gaussian_blur", "gaussian_kernel1d"]
