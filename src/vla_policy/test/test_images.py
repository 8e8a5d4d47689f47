"""The image preprocessing shared by training and inference: an exact area (box) filter."""
import warnings

import numpy as np
import pytest
import torch

from robot_drivers import conversions as conv
from vla_policy.images import area_weights, preprocess_image, preprocess_images_uint8, resize_area

SIZES = [((224, 224), 96), ((480, 640), 96), ((96, 96), 64), ((128, 128), 96), ((100, 150), 96),
         ((97, 97), 96), ((64, 64), 96), ((96, 96), 96), ((3, 5), 2),
         ((191, 193), 2)]   # 191 x 193 pixels per output pixel: sums beyond float32's exact range


def _reference(img: np.ndarray, size: int) -> np.ndarray:
    """Area filter written out directly: each output pixel integrates the piecewise-constant input
    over its footprint (dense float64 overlap matrices), then rounds half up. (3, S, S) uint8."""
    def axis(n):
        scale = n / size
        a = np.zeros((size, n))
        for o in range(size):
            lo, hi = o * scale, (o + 1) * scale
            for k in range(int(np.floor(lo)), min(n, int(np.ceil(hi)))):
                a[o, k] = max(0.0, min(hi, k + 1) - max(lo, k)) / scale
        return a
    ay, ax = axis(img.shape[0]), axis(img.shape[1])
    out = np.stack([ay @ img[:, :, c].astype(np.float64) @ ax.T for c in range(3)])
    return np.floor(out + 0.5 + 1e-9).astype(np.uint8)


@pytest.mark.parametrize('hw,size', SIZES)
def test_resize_is_the_exact_area_filter(hw, size):
    img = np.random.default_rng(hw[0] * 1000 + hw[1]).integers(0, 256, hw + (3,), dtype=np.uint8)
    out = resize_area(img, size)
    assert out.dtype == torch.uint8 and out.shape == (3, size, size) and out.is_contiguous()
    np.testing.assert_array_equal(out.numpy(), _reference(img, size))


@pytest.mark.parametrize('hw,size', SIZES)
def test_inference_sees_exactly_the_training_pixels(hw, size):
    """preprocess_image (inference, float) == preprocess_images_uint8 (training storage) / 255, bit for bit."""
    imgs = np.random.default_rng(7).integers(0, 256, (3,) + hw + (3,), dtype=np.uint8)
    stored = preprocess_images_uint8(imgs, size)
    assert stored.shape == (3, 3, size, size) and stored.dtype == torch.uint8
    for i in range(3):
        x = preprocess_image(imgs[i], size)
        assert x.dtype == torch.float32 and x.is_contiguous()
        assert torch.equal(x, stored[i].float() / 255.0)


def test_training_batches_are_chunked_without_changing_pixels():
    imgs = np.random.default_rng(8).integers(0, 256, (300, 12, 9, 3), dtype=np.uint8)   # > one chunk of 256
    out = preprocess_images_uint8(imgs, 4)
    assert out.shape == (300, 3, 4, 4)
    assert torch.equal(out[[0, 255, 256, 299]], torch.stack([resize_area(imgs[i], 4) for i in (0, 255, 256, 299)]))
    assert preprocess_images_uint8(imgs[:0], 4).shape == (0, 3, 4, 4)


def test_area_weights_cover_every_input_pixel_once():
    w, p, q = area_weights(224, 96)
    assert (p, q) == (7, 3)
    assert (w.sum(axis=1) == p).all() and (w.sum(axis=0) == q).all()
    w, p, q = area_weights(480, 96)
    assert (p, q) == (5, 1) and (w == 1).all()
    with pytest.raises(ValueError, match='>= 1'):
        area_weights(0, 4)


def test_area_filter_averages_instead_of_aliasing():
    """A one-pixel checkerboard shrunk 224 -> 96 becomes mid-grey (every input pixel is averaged);
    a constant image stays exactly constant; an integer factor gives the block means."""
    yy, xx = np.mgrid[:224, :224]
    board = np.repeat((((yy + xx) % 2) * 255).astype(np.uint8)[..., None], 3, axis=2)
    out = resize_area(board, 96).numpy().astype(int)
    assert abs(out.mean() - 127.5) < 1.0 and out.min() >= 90 and out.max() <= 165
    const = np.full((480, 640, 3), 77, np.uint8)
    assert (resize_area(const, 96).numpy() == 77).all()
    img = np.random.default_rng(9).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    blocks = img.reshape(4, 2, 4, 2, 3).astype(int).sum(axis=(1, 3))          # (4, 4, 3), /4 then round half up
    np.testing.assert_array_equal(resize_area(img, 4).numpy(), ((blocks + 2) // 4).transpose(2, 0, 1))


def test_matches_opencv_inter_area():
    cv2 = pytest.importorskip('cv2', reason='OpenCV (opencv-python-headless, a test extra) compares INTER_AREA')
    rng = np.random.default_rng(10)
    for hw, size in [((224, 224), 96), ((96, 96), 64), ((480, 640), 96), ((64, 64), 32)]:
        img = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
        ref = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).transpose(2, 0, 1).astype(int)
        diff = np.abs(resize_area(img, size).numpy().astype(int) - ref)
        # OpenCV's float weights may round an exact .5 the other way: at most one level, rarely
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (hw, size, diff.max(), (diff > 0).mean())


def test_message_views_are_read_without_copies_warnings_or_writes():
    """The image the runtime gets from a rgb8 message is a read-only view of the message buffer;
    a BGR view has negative strides and a padded one strided rows: all give the pixels of a plain
    copy, without torch's non-writable-array warning and without touching the input."""
    types = conv.rosbags_types()
    img = np.random.default_rng(11).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    view = conv.image_to_numpy(conv.numpy_to_image(img, 0.0, types))
    assert not view.flags.writeable
    padded = np.zeros((120, 170, 3), np.uint8)
    padded[:, :160] = img
    cases = {'read-only view': view, 'negative strides': img[:, :, ::-1][:, :, ::-1],
             'strided rows': padded[:, :160]}
    expect_f = preprocess_image(img.copy(), 96)
    expect_u = preprocess_images_uint8(img[None].copy(), 96)
    for what, x in cases.items():
        before = np.array(x, copy=True)
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            assert torch.equal(preprocess_image(x, 96), expect_f), what
            assert torch.equal(preprocess_images_uint8(x[None], 96), expect_u), what
            assert torch.equal(preprocess_image(x, 120), preprocess_image(img.copy(), 120)), what
        np.testing.assert_array_equal(x, before)


def test_bad_images_are_refused_with_the_name():
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="camera 'front' must be uint8"):
        preprocess_image(img.astype(np.float32), 8, name="camera 'front'")
    with pytest.raises(ValueError, match='must be uint8'):
        preprocess_image(np.zeros((10, 10, 4), np.uint8), 8)
    with pytest.raises(ValueError, match='zero size'):
        preprocess_image(np.zeros((0, 10, 3), np.uint8), 8)
    with pytest.raises(ValueError, match='size must be >= 1'):
        resize_area(img, 0)
    with pytest.raises(ValueError, match=r'\(N, H, W, 3\)'):
        preprocess_images_uint8(img, 8)
