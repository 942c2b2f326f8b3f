"""Tests of the tools' image files: alpha TIFFs read with straight colours, EXIF orientation with alpha, and writes
that leave no temp file behind."""
import os
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from coic_basicsr.tools.image_io import StoredForm, read_image, read_image_and_form, write_image

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8)
ALPHA = RNG.integers(1, 256, (12, 20), dtype=np.uint8)


def as_uint8(img: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) [0, 1] -> (H, W, 3) RGB integers."""
    return (img[0].permute(1, 2, 0).numpy() * 255).round().astype(int)


def associated(path: Path) -> None:
    """Relabel the alpha of a TIFF that Pillow wrote as associated (premultiplied): ExtraSamples 2 -> 1."""
    data = path.read_bytes()
    entry = struct.pack('<HHIHH', 338, 3, 1, 2, 0)
    assert data.count(entry) == 1
    path.write_bytes(data.replace(entry, struct.pack('<HHIHH', 338, 3, 1, 1, 0)))


@pytest.mark.parametrize('save', [{}, {'compression': 'tiff_lzw'}, {'big_tiff': True}])
def test_rgba_tiffs_read_with_the_colours_of_the_same_png(tmp_path, save):
    # OpenCV premultiplied the colours of 8-bit TIFFs with unassociated alpha (as Pillow, tifffile, editors write)
    Image.fromarray(np.dstack([RGB, ALPHA])).save(tmp_path / 'a.png')
    Image.fromarray(np.dstack([RGB, ALPHA])).save(tmp_path / 'a.tif', **save)
    png, png_form = read_image_and_form(str(tmp_path / 'a.png'))
    tif, tif_form = read_image_and_form(str(tmp_path / 'a.tif'))
    assert np.array_equal(as_uint8(tif), RGB) and torch.equal(tif, png)
    assert np.array_equal(tif_form.alpha, ALPHA) and tif_form.dtype == np.uint8 and not tif_form.gray

    premultiplied = np.round(RGB * (ALPHA[..., None] / 255)).astype(np.uint8)
    Image.fromarray(np.dstack([premultiplied, ALPHA])).save(tmp_path / 'p.tif', **save)
    if not save:  # Pillow's entry, inline in the IFD of a plain TIFF
        associated(tmp_path / 'p.tif')
        straight, form = read_image_and_form(str(tmp_path / 'p.tif'))
        tolerance = 255 / ALPHA[..., None] / 2 + 1e-3  # the rounding of the premultiplied samples, scaled back
        assert (np.abs(straight[0].permute(1, 2, 0).numpy() * 255 - RGB) <= tolerance).all()
        assert np.array_equal(form.alpha, ALPHA)


def test_a_written_rgba_tiff_reads_back_straight_with_pillow_opencv_and_here(tmp_path):
    path = str(tmp_path / 'out.tif')
    write_image(torch.from_numpy(RGB / 255.).permute(2, 0, 1)[None].float(), path, StoredForm(alpha=ALPHA))
    with Image.open(path) as im:
        assert im.mode == 'RGBA' and np.array_equal(np.asarray(im), np.dstack([RGB, ALPHA]))
    assert np.array_equal(cv2.imread(path, cv2.IMREAD_UNCHANGED), np.dstack([RGB[..., ::-1], ALPHA]))
    img, form = read_image_and_form(path)
    assert np.array_equal(as_uint8(img), RGB) and np.array_equal(form.alpha, ALPHA)


def save_with_orientation(img: np.ndarray, path: Path, orientation: int) -> None:
    if path.suffix == '.tif':
        Image.fromarray(img).save(path, tiffinfo={274: orientation})
        return
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(img).save(path, exif=exif.tobytes(), **({'lossless': True} if path.suffix == '.webp' else {}))


@pytest.mark.parametrize('ext', ['.png', '.webp', '.tif'])
@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_applies_to_images_with_alpha_as_without(tmp_path, ext, orientation):
    save_with_orientation(np.dstack([RGB, ALPHA]), tmp_path / f'rgba{ext}', orientation)
    save_with_orientation(RGB, tmp_path / f'rgb{ext}', orientation)  # oriented by OpenCV
    save_with_orientation(np.repeat(ALPHA[..., None], 3, 2), tmp_path / f'alpha{ext}', orientation)
    img, form = read_image_and_form(str(tmp_path / f'rgba{ext}'))
    assert torch.equal(img, read_image(str(tmp_path / f'rgb{ext}')))
    assert np.array_equal(form.alpha, as_uint8(read_image(str(tmp_path / f'alpha{ext}')))[..., 0])


def test_a_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    img = torch.rand(1, 3, 8, 8)
    (tmp_path / 'taken.png').mkdir()  # OUTPUT/<name> is a folder
    with pytest.raises(IsADirectoryError):
        write_image(img, str(tmp_path / 'taken.png'))
    assert sorted(os.listdir(tmp_path)) == ['taken.png'] and not os.listdir(tmp_path / 'taken.png')

    def full_disk(src, dst):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(os, 'replace', full_disk)
    with pytest.raises(OSError, match='No space left'):
        write_image(img, str(tmp_path / 'a.png'))
    assert sorted(os.listdir(tmp_path)) == ['taken.png']


def test_an_unopenable_file_is_an_oserror_for_derain_and_none_for_read_image(tmp_path):
    (tmp_path / 'moved.png').symlink_to(tmp_path / 'nowhere.png')
    with pytest.raises(FileNotFoundError):
        read_image_and_form(str(tmp_path / 'moved.png'))
    assert read_image(str(tmp_path / 'moved.png')) is None  # analyze reports and skips it


def test_a_16_bit_alpha_written_to_an_8_bit_format_is_rescaled_not_truncated(tmp_path):
    alpha = np.full((8, 8), 65535, np.uint16)
    alpha[:4] = 32768  # 0x8000: its low byte is 0
    write_image(torch.full((1, 3, 8, 8), 0.5), str(tmp_path / 'o.webp'), StoredForm(alpha=alpha, dtype=np.uint16))
    _, form = read_image_and_form(str(tmp_path / 'o.webp'))
    assert form.dtype == np.uint8
    assert abs(int(form.alpha[0, 0]) - 128) <= 1 and form.alpha[-1, -1] == 255
