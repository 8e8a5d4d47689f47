"""Image preprocessing shared by training and inference (one function, so both see the same pixels).

``uint8 (H, W, 3)`` RGB -> ``(3, S, S)``: training stores the uint8 result
(:func:`preprocess_images_uint8`), inference feeds ``uint8 / 255`` as float32
(:func:`preprocess_image`); both come from :func:`resize_area`, so a deployed model sees exactly
the pixels it was trained on. Non-square inputs are stretched to S x S.

Filter: an exact area (box) filter. Output pixel ``(i, j)`` is the mean of the input over its
footprint ``[i H/S, (i+1) H/S) x [j W/S, (j+1) W/S)``, partly covered input pixels weighted by
the covered fraction, rounded half up to uint8 (integer arithmetic, exact, the same on every
machine). This is OpenCV's ``INTER_AREA`` for downscaling (``cv::resize``; identical pixels at
224 -> 96 and 96 -> 64, at most 1 level apart where OpenCV's float weights round a tie the other
way: 0.2 % of the values at 640x480 -> 96, 6 % at 128 -> 96). An area filter averages every input pixel once, so
downscaling does not alias (unlike plain bilinear) and, for a camera image several times larger
than the model input, costs one pass over the image. Upscaling (S larger than the input) with
the same formula repeats pixels, blending the two at a boundary.

Implementation: separable, per axis a fixed ``(q, p)`` integer weight matrix for every group of
``p`` input -> ``q`` output pixels (``p / q = n_in / n_out`` in lowest terms: 224 -> 96 is
7 -> 3), applied as a batched matrix product in float32 (float64 when ``255 p_x p_y >= 2**23``, so
sums stay exact); vertical pass on the HWC image as it arrives (no full-size transpose).

Measured (median, one torch thread, 2-core x86-64 reference machine, ``benchmarks/runtime_bench.py``,
``resize_us`` in ``benchmarks/results/runtime.json``), uint8 RGB -> 96 x 96, microseconds:

==========================================  ======  =======  ========
filter                                       96x96  224x224  640x480
==========================================  ======  =======  ========
this (exact area, torch matrix products)         9      120      293
previous: torch bilinear, antialias, float      28      208      667
torch ``interpolate(mode='area')``             194      298      786
Pillow ``BOX``                                  18      153      567
OpenCV ``INTER_AREA`` (optional here)            1      117      535
==========================================  ======  =======  ========

(96x96 -> 96x96 is no resize: only the copy to channels-first.)

OpenCV is not used: it is no runtime dependency here (ROS machines have it through cv_bridge,
pip installs do not), and taking it when importable would make the training pixels depend on
what is installed (its float weights round some pixels one level differently); it is no faster at
224x224 and slower at 640x480. Pillow's ``BOX`` is slower and needs a copy into a PIL image;
``interpolate(mode='area')`` is adaptive average pooling, which for non-integer factors averages
whole overlapping pixels (not an exact area filter) and is the slowest.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Tuple

import numpy as np
import torch

__all__ = ['preprocess_image', 'preprocess_images_uint8', 'resize_area', 'area_weights']

_BATCH = 256   # images per chunk in preprocess_images_uint8 (bounded memory)


def _check(img: np.ndarray, name: str) -> None:
    if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim >= 3 and img.shape[-1] == 3):
        got = (getattr(img, 'dtype', type(img)), getattr(img, 'shape', None))
        raise ValueError(f'{name} must be uint8 (..., H, W, 3) RGB, got {got}')
    if img.shape[-2] < 1 or img.shape[-3] < 1:
        raise ValueError(f'{name} has zero size: shape {img.shape}')


@lru_cache(maxsize=64)
def _weights(n_in: int, n_out: int, dtype: torch.dtype) -> Tuple[torch.Tensor, int, int]:
    g = math.gcd(n_in, n_out)
    p, q = n_in // g, n_out // g
    o = np.arange(q)[:, None]
    k = np.arange(p)[None, :]
    # overlap of input pixel k = [k q, (k+1) q) with output pixel o = [o p, (o+1) p), in units of 1/q pixel
    w = np.clip(np.minimum((o + 1) * p, (k + 1) * q) - np.maximum(o * p, k * q), 0, None)
    return torch.from_numpy(w.astype(np.float64)).to(dtype), p, q


def area_weights(n_in: int, n_out: int) -> Tuple[np.ndarray, int, int]:
    """Integer area weights of one axis: ``(W (q, p) int64, p, q)``.

    ``p / q = n_in / n_out`` in lowest terms; output pixel ``o`` of each group is
    ``sum_k W[o, k] x[k] / p`` over the group's ``p`` input pixels; each row of ``W`` sums to ``p``,
    each column to ``q``.

    Raises:
        ValueError: a size below 1.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f'area_weights needs sizes >= 1, got {n_in} -> {n_out}')
    w, p, q = _weights(int(n_in), int(n_out), torch.float64)
    return w.numpy().astype(np.int64), p, q


def _area_sums(x: np.ndarray, size: int) -> Tuple[torch.Tensor, int]:
    """uint8 ``(N, H, W, C)`` (any strides, read-only allowed) -> ``(sums, divisor)``: ``sums``
    ``(N, C, size_x, size_y)`` (x before y) are the integer weighted sums plus ``divisor // 2``,
    held exactly in float32 (float64 for huge factors); the rounded area mean is
    ``floor(sums / divisor)``."""
    n, h, w, c = x.shape
    _, py, _ = _weights(h, size, torch.float32)
    _, px, _ = _weights(w, size, torch.float32)
    dtype = torch.float32 if 255 * px * py < 2 ** 23 else torch.float64
    wy, _, _ = _weights(h, size, dtype)
    wx, _, _ = _weights(w, size, dtype)
    # the one copy of the full image: uint8 -> float, C-contiguous (x itself is never written)
    xf = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32 if dtype == torch.float32 else np.float64))
    # vertical: groups of py rows -> qy rows, rows are the contiguous HWC layout's outer axis
    a = xf.reshape(n * (h // py), py, w * c)
    v = torch.bmm(wy.expand(a.shape[0], -1, -1), a)                     # (N*H/py, qy, W*C)
    v = v.reshape(n, size, w, c).permute(0, 3, 2, 1).contiguous()       # (N, C, W, size)
    # horizontal: groups of px columns -> qx columns; + div // 2 for rounding half up
    b = v.reshape(n * c * (w // px), px, size)
    half = torch.full((1, 1, 1), float((px * py) // 2), dtype=dtype)
    o = torch.baddbmm(half, wx.expand(b.shape[0], -1, -1), b)          # (N*C*W/px, qx, size)
    return o.reshape(n, c, size, size), px * py


def _rounded(sums: torch.Tensor, div: int) -> torch.Tensor:
    """``floor(sums / div)`` of the ``(N, C, size_x, size_y)`` sums from :func:`_area_sums` (which
    include ``div // 2``: round half up), as float32 ``(N, C, size_y, size_x)``, values 0..255;
    exact (integer-valued operands, one correctly rounded division)."""
    return sums.div_(div).floor_().float().transpose(-2, -1)


def resize_area(images: np.ndarray, size: int, *, name: str = 'images') -> torch.Tensor:
    """Area-filter resize: uint8 ``(H, W, 3)`` or ``(N, H, W, 3)`` RGB -> uint8 torch
    ``(3, size, size)`` / ``(N, 3, size, size)`` (channels first), filter as in the module docstring.

    The input may be any strided or read-only view (e.g. of a message buffer); it is not modified.

    Raises:
        ValueError: not uint8 RGB, zero size, or ``size < 1`` (names ``name``).
    """
    _check(images, name)
    if size < 1:
        raise ValueError(f'{name}: resize size must be >= 1, got {size}')
    single = images.ndim == 3
    out = _resize_uint8(images[None] if single else images.reshape((-1,) + images.shape[-3:]), size)
    return out[0] if single else out.reshape(images.shape[:-3] + out.shape[1:])


def _resize_uint8(x: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> uint8 torch (N, 3, size, size), C-contiguous."""
    if tuple(x.shape[1:3]) == (size, size):
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    sums, div = _area_sums(x, size)
    return _rounded(sums, div).to(torch.uint8).contiguous()


def preprocess_images_uint8(images: np.ndarray, size: int, *, name: str = 'images') -> torch.Tensor:
    """uint8 (N, H, W, 3) -> uint8 torch (N, 3, size, size) (compact storage for training).

    Area filter (module docstring), processed in chunks of 256 images.

    Raises:
        ValueError: not uint8 (N, H, W, 3) RGB, zero size, ``size < 1`` (names ``name``).
    """
    _check(images, name)
    if images.ndim != 4:
        raise ValueError(f'{name} must be uint8 (N, H, W, 3), got shape {images.shape}')
    if size < 1:
        raise ValueError(f'{name}: resize size must be >= 1, got {size}')
    if images.shape[0] == 0:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    return torch.cat([_resize_uint8(images[i:i + _BATCH], size) for i in range(0, images.shape[0], _BATCH)])


def preprocess_image(image: np.ndarray, size: int, *, name: str = 'image') -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, size, size) in [0, 1], C-contiguous.

    Exactly ``preprocess_images_uint8(image[None], size)[0].float() / 255`` (the training pixels),
    computed without the uint8 round trip. ``image`` may be a read-only or strided view (e.g. of a
    ``sensor_msgs/Image`` buffer); it is read once and not modified.

    Raises:
        ValueError: not uint8 (H, W, 3) RGB, zero size, ``size < 1`` (names ``name``).
    """
    if not (isinstance(image, np.ndarray) and image.ndim == 3):
        raise ValueError(f'{name} must be uint8 (H, W, 3), got shape {getattr(image, "shape", None)}')
    _check(image, name)
    if size < 1:
        raise ValueError(f'{name}: resize size must be >= 1, got {size}')
    if image.shape[:2] == (size, size):
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
        return x.div_(255.0)
    sums, div = _area_sums(image[None], size)
    return _rounded(sums[0], div).div(255.0).contiguous()
