"""Decoding, the resized-image cache, and unreadable images as one-line errors (also from workers)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from accvit_med.datasets.cache import ImageCache, decode_resized, fill_cache
from accvit_med.datasets.torchdata import ImageReadError, SplitImageDataset
from accvit_med.datasets.transforms import eval_transform
from accvit_med.errors import UserError


def _photo(path, size=(640, 480), seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


def test_cached_pixels_equal_decoded_pixels(tmp_path):
    source = _photo(tmp_path / "a.jpg")
    cache = ImageCache(tmp_path / "cache", 64)
    first = cache.load(source)  # made now
    assert cache.entry(source).is_file()
    second = cache.load(source)  # read back
    direct = decode_resized(source, 64)
    assert first.size == second.size == direct.size == (64, 64)
    assert np.array_equal(np.asarray(second), np.asarray(direct))


def test_a_replaced_image_is_decoded_again(tmp_path):
    source = _photo(tmp_path / "a.png", seed=0)
    cache = ImageCache(tmp_path / "cache", 32)
    old_entry = cache.entry(source)
    cache.load(source)
    _photo(source, size=(50, 40), seed=1)
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert cache.entry(source) != old_entry
    assert np.array_equal(np.asarray(cache.load(source)), np.asarray(decode_resized(source, 32)))
    assert ImageCache(tmp_path / "cache", 48).entry(source) != cache.entry(source)  # size is in the key


@pytest.mark.parametrize("how", ["rewritten", "renamed over"])
@pytest.mark.parametrize("mtime", ["new", "set back"])
def test_different_pixels_of_the_same_byte_size_are_decoded_again(tmp_path, how, mtime):
    # BMP: the file size depends on the dimensions only, so other pixels take exactly as many bytes.
    source = _photo(tmp_path / "a.bmp", size=(40, 30), seed=0)
    cache = ImageCache(tmp_path / "cache", 32)
    first = np.asarray(cache.load(source))
    before = os.stat(source)
    time.sleep(0.05)  # file times come from the kernel's coarse clock: let it tick
    if how == "rewritten":
        _photo(source, size=(40, 30), seed=1)
    else:
        os.replace(_photo(tmp_path / "new.bmp", size=(40, 30), seed=1), source)
    if mtime == "set back":
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(source)
    assert after.st_size == before.st_size
    assert (after.st_mtime_ns == before.st_mtime_ns) == (mtime == "set back")
    decoded = np.asarray(decode_resized(source, 32))
    assert not np.array_equal(decoded, first)
    assert np.array_equal(np.asarray(cache.load(source)), decoded)
    assert np.array_equal(np.asarray(ImageCache(tmp_path / "cache", 32).load(source)), decoded)


@pytest.mark.parametrize("mode", ["RGBA", "L", "I;16", "P"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    if mode == "I;16":
        path = tmp_path / "deep.png"
        Image.fromarray((np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50)).save(path)
    else:
        path = _photo(tmp_path / "x.png", size=(40, 30), mode=mode)
    image = decode_resized(path, 16)
    assert image.mode == "RGB" and image.size == (16, 16)
    if mode == "I;16":
        pixels = np.asarray(image)
        assert pixels.min() < 30 and pixels.max() > 225  # rescaled to the full 8-bit range, not clipped


def test_unreadable_and_missing_images_are_user_errors(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(UserError, match="cannot read image '.*broken.jpg'"):
        decode_resized(broken, 32)
    with pytest.raises(UserError, match="image '.*absent.png' does not exist"):
        decode_resized(tmp_path / "absent.png", 32)


def test_worker_errors_stay_one_line(tmp_path):
    _photo(tmp_path / "good.png", size=(20, 20))
    (tmp_path / "bad.png").write_bytes(b"garbage")
    dataset = SplitImageDataset(tmp_path, ["good.png", "bad.png"], [0, 1], 16, eval_transform())
    loader = DataLoader(dataset, batch_size=2, num_workers=1)
    with pytest.raises(ImageReadError) as caught:
        next(iter(loader))
    message = str(caught.value)
    assert message.startswith("cannot read image '") and "bad.png" in message
    assert "Traceback" not in message and "DataLoader worker" not in message
    assert isinstance(caught.value, UserError)


def test_fill_cache_makes_each_entry_once(tmp_path):
    for i in range(3):
        _photo(tmp_path / f"{i}.jpg", seed=i)
    paths = [f"{i}.jpg" for i in range(3)]
    made, folder = fill_cache(tmp_path, paths, 24, tmp_path / "c", workers=2)
    assert made == 3 and folder == tmp_path / "c" / "24"
    made_again, _ = fill_cache(tmp_path, paths, 24, tmp_path / "c", workers=1)
    assert made_again == 0


def test_jpegs_are_decoded_in_draft_mode_pngs_in_full(tmp_path, monkeypatch):
    # libjpeg decodes at 1/1, 1/2, 1/4 or 1/8 scale; asked for 2 x 32 = 64 pixels from a 1024-pixel
    # photograph it can stop at 1/8 (128 pixels), which PIL's draft() reports. A PNG has no such mode.
    from accvit_med.datasets import cache

    smooth = np.linspace(0, 255, 1024)[None, :, None] * np.ones((1024, 1, 3))
    Image.fromarray(smooth.astype(np.uint8)).save(tmp_path / "big.jpg", quality=95)
    Image.fromarray(smooth.astype(np.uint8)).save(tmp_path / "big.png")
    handed_over = []
    real_resize = cache.resize_and_center_crop

    def recording_resize(image, size):
        handed_over.append(image.size)
        return real_resize(image, size)

    monkeypatch.setattr(cache, "resize_and_center_crop", recording_resize)
    drafted = np.asarray(decode_resized(tmp_path / "big.jpg", 32), dtype=np.float64)
    full = np.asarray(decode_resized(tmp_path / "big.png", 32), dtype=np.float64)
    assert handed_over == [(128, 128), (1024, 1024)]
    assert np.abs(drafted - full).mean() < 3  # the reduced decode keeps the content
