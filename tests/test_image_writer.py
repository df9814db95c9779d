"""Tests of the strip-by-strip image writer (PNG, TIFF, EXIF, ICC) and of the on-disk arrays of ``sdan-zoom``."""
import os

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, TiffImagePlugin

from sdan_basicsr.utils.disk_array import DiskArray
from sdan_basicsr.utils.image_writer import srgb_profile, write_image


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[271], exif[272], exif[274] = 'Canon', 'EOS 5D Mark III', 1
    exif.get_ifd(0x8769).update({33434: TiffImagePlugin.IFDRational(1, 250), 34855: 400, 42036: 'EF 50mm'})
    exif.get_ifd(0x8825).update({1: 'N'})
    return exif


@pytest.mark.parametrize('ext', ['.png', '.tif'])
@pytest.mark.parametrize('bits', [8, 16])
def test_write_image_by_strips(tmp_path, ext, bits):
    """Strips of 7 rows (the last shorter) make the image exactly, with its EXIF (IFD0, Exif and GPS IFDs) and ICC
    profile, readable by OpenCV, Pillow and tifffile."""
    rng = np.random.default_rng(0)
    dtype = np.uint8 if bits == 8 else np.uint16
    img = rng.integers(0, 2**bits, (45, 31, 3), dtype=dtype)
    path = str(tmp_path / f'img{ext}')
    write_image(path, (img[r:r + 7] for r in range(0, 45, 7)), 45, 31, bits, 7, _exif(), srgb_profile())
    np.testing.assert_array_equal(cv2.imread(path, cv2.IMREAD_UNCHANGED)[..., ::-1], img)
    if ext == '.png':
        with Image.open(path) as im:
            exif, profile = im.getexif(), im.info['icc_profile']
        assert (exif[271], exif[272], exif[274]) == ('Canon', 'EOS 5D Mark III', 1)
        assert exif.get_ifd(0x8769)[42036] == 'EF 50mm' and exif.get_ifd(0x8825)[1] == 'N'
    else:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            assert (tags['Make'].value, tags['Model'].value) == ('Canon', 'EOS 5D Mark III')
            assert tags['ExifTag'].value['ISOSpeedRatings'] == 400 and tags['GPSTag'].value['GPSLatitudeRef'] == 'N'
            assert tif.pages[0].rowsperstrip == 7
            profile = tags['InterColorProfile'].value
    assert profile == srgb_profile()


def test_write_image_checks_the_strips(tmp_path):
    img = np.zeros((10, 8, 3), np.uint8)
    with pytest.raises(ValueError, match='gave 5 rows, expected 10'):
        write_image(str(tmp_path / 'a.png'), [img[:5]], 10, 8, 8, 5)
    with pytest.raises(ValueError, match='strip at row 0'):
        write_image(str(tmp_path / 'a.tif'), [img.astype(np.uint16)], 10, 8, 8, 10)
    with pytest.raises(ValueError, match='extension'):
        write_image(str(tmp_path / 'a.jpg'), [img], 10, 8)


def test_disk_array_boxes(tmp_path):
    """Boxes written anywhere read back from any window; the file has no name in its folder."""
    rng = np.random.default_rng(0)
    full = rng.random((37, 53, 4)).astype(np.float16)
    with DiskArray(full.shape, np.float16, str(tmp_path)) as disk:
        for y in range(0, 37, 10):
            for x in range(0, 53, 16):
                disk.write(y, x, full[y:y + 10, x:x + 16])
        assert os.listdir(tmp_path) == []
        np.testing.assert_array_equal(disk.read(0, 37, 0, 53), full)
        np.testing.assert_array_equal(disk.read(5, 30, 7, 40), full[5:30, 7:40])
        disk.write(3, 0, full[:2])  # whole rows
        np.testing.assert_array_equal(disk.read(3, 5, 0, 53), full[:2])
        with pytest.raises(ValueError, match='does not fit'):
            disk.write(30, 50, full[:10, :10])
        with pytest.raises(ValueError, match='outside'):
            disk.read(0, 38, 0, 1)
