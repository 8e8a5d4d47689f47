"""Image preprocessing shared by training and inference (one function, so both see the same pixels).

``uint8 (H, W, 3)`` RGB -> ``float32`` torch ``(3, S, S)`` in [0, 1], resized with bilinear
interpolation (``torch.nn.functional.interpolate``, ``antialias=True`` when shrinking, matching
PIL's bilinear filter). Non-square inputs are stretched to S x S.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ['preprocess_image', 'preprocess_images_uint8']


def _check(img: np.ndarray, name: str) -> None:
    if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim >= 3 and img.shape[-1] == 3):
        got = (getattr(img, 'dtype', type(img)), getattr(img, 'shape', None))
        raise ValueError(f'{name} must be uint8 (..., H, W, 3) RGB, got {got}')


def preprocess_images_uint8(images: np.ndarray, size: int, *, name: str = 'images') -> torch.Tensor:
    """uint8 (N, H, W, 3) -> uint8 torch (N, 3, size, size) (compact storage for training).

    Raises:
        ValueError: not uint8 RGB.
    """
    _check(images, name)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # (N, 3, H, W)
    if x.shape[-2:] == (size, size):
        return x.contiguous()
    out = []
    for i in range(0, x.shape[0], 256):  # bounded memory
        xf = x[i:i + 256].float()
        out.append(F.interpolate(xf, size=(size, size), mode='bilinear', align_corners=False,
                                 antialias=bool(x.shape[-1] > size or x.shape[-2] > size))
                   .round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out) if out else torch.zeros((0, 3, size, size), dtype=torch.uint8)


def preprocess_image(image: np.ndarray, size: int, *, name: str = 'image') -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, size, size) in [0, 1].

    Goes through the same uint8 resize as training (:func:`preprocess_images_uint8`), then /255.
    """
    if not (isinstance(image, np.ndarray) and image.ndim == 3):
        raise ValueError(f'{name} must be uint8 (H, W, 3), got shape {getattr(image, "shape", None)}')
    return preprocess_images_uint8(image[None], size, name=name)[0].float() / 255.0
