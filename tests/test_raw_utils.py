"""RAW reading through rawpy on DNG files written by the tests: CFA phase, black levels, packing, EXIF, text files."""
import numpy as np
import pytest
import torch

from sdan_basicsr.data import raw_utils

BLACKS = (500, 510, 520, 530)  # per 2x2 position, row-major
WHITE = 16383


@pytest.mark.parametrize('pattern', sorted(raw_utils.CFA_OFFSETS))
def test_round_trip_all_cfa_patterns(tmp_path, pattern):
    rng = np.random.default_rng(0)
    h, w = 48, 64
    rggb = rng.uniform(0, 1, (h, w)).astype(np.float32)  # the scene as an RGGB mosaic
    # the same scene seen by a sensor of another pattern: shift by the pattern's offset
    dy, dx = raw_utils.CFA_OFFSETS[pattern]
    sensor = np.zeros((h + dy, w + dx), np.float32)
    sensor[dy:, dx:] = rggb
    blacks = np.array(BLACKS, np.float32).reshape(2, 2)
    sh, sw = sensor.shape
    black_map = np.tile(blacks, (sh // 2 + 1, sw // 2 + 1))[:sh, :sw]
    counts = np.round(black_map + sensor * (WHITE - black_map)).astype(np.uint16)
    path = str(tmp_path / '00005.ARW')
    raw_utils.write_dng(path, counts, pattern, BLACKS, WHITE)

    mosaic = raw_utils.read_raw(path)
    assert mosaic.shape == (h, w)
    assert mosaic.dtype == np.float32
    np.testing.assert_allclose(mosaic, rggb, atol=1e-4)
    assert raw_utils.raw_size(path) == (h, w)
    packed = raw_utils.pack_bayer(torch.from_numpy(mosaic))
    assert packed.shape == (4, h // 2, w // 2)
    torch.testing.assert_close(packed[0], torch.from_numpy(mosaic[0::2, 0::2]))  # R
    torch.testing.assert_close(packed[1], torch.from_numpy(mosaic[0::2, 1::2]))  # Gr
    torch.testing.assert_close(packed[2], torch.from_numpy(mosaic[1::2, 1::2]))  # B
    torch.testing.assert_close(packed[3], torch.from_numpy(mosaic[1::2, 0::2]))  # Gb
    torch.testing.assert_close(raw_utils.unpack_bayer(packed), torch.from_numpy(mosaic))
    np.testing.assert_array_equal(raw_utils.unpack_bayer(raw_utils.pack_bayer(mosaic)), mosaic)


def test_fixed_levels_override_file(tmp_path):
    counts = np.full((32, 32), 1024, np.uint16)
    path = str(tmp_path / 'a.ARW')
    raw_utils.write_dng(path, counts, black_level=0, white_level=4095)
    np.testing.assert_allclose(raw_utils.read_raw(path), 1024 / 4095, rtol=1e-6)
    np.testing.assert_allclose(raw_utils.read_raw(path, black_level=512, white_level=16383), 512 / 15871, rtol=1e-6)


@pytest.mark.parametrize('content', [b'not a raw file' * 100, 'truncated'])
def test_unreadable_raw_names_the_file(tmp_path, content):
    path = tmp_path / '00005.ARW'
    if content == 'truncated':
        raw_utils.write_dng(str(path), np.full((64, 64), 2000, np.uint16))
        content = path.read_bytes()[:3000]
    path.write_bytes(content)
    with pytest.raises(raw_utils.RawReadError, match='00005.ARW'):
        raw_utils.read_raw(str(path))
    with pytest.raises(raw_utils.RawReadError, match='00005.ARW'):
        raw_utils.camera_wb(str(path))


def test_camera_wb_and_focal_length(tmp_path):
    counts = np.full((32, 32), 3000, np.uint16)
    path = str(tmp_path / '00002.ARW')
    raw_utils.write_dng(path, counts, as_shot_neutral=(1 / 2.0, 1.0, 1 / 1.5), focal_length=150)
    np.testing.assert_allclose(raw_utils.camera_wb(path), [2.0, 1.0, 1.0, 1.5], rtol=1e-3)


def test_text_files_round_trip(tmp_path):
    tforms = {'00001': np.eye(2, 3), '00005': np.array([[1.01, 0.002, 3.5], [-0.003, 0.99, -7.25]])}
    raw_utils.write_tform(str(tmp_path / 'tform.txt'), tforms, (3, 380, 5, 500))
    text = (tmp_path / 'tform.txt').read_text()
    assert text.startswith('00001-00001:\n') and 'corner:\n00003 00380 00005 00500' in text
    read, corner = raw_utils.read_tform(str(tmp_path / 'tform.txt'))
    assert corner == (3, 380, 5, 500)
    assert sorted(read) == ['00001', '00005']
    np.testing.assert_allclose(read['00005'], tforms['00005'], atol=1e-6)

    raw_utils.write_wb(str(tmp_path / 'wb.txt'), {'/data/train/00010/00005': [2.0, 1.0, 1.0, 1.5]})
    assert (tmp_path / 'wb.txt').read_text().startswith('WB\n/data/train/00010/00005:\n')
    gains = raw_utils.read_wb(str(tmp_path / 'wb.txt'))
    np.testing.assert_allclose(gains['00005'], [2.0, 1.0, 1.0, 1.5])


def test_exif_focal_length_and_orientation(tmp_path):
    from sdan_basicsr.tools.make_demo import _save_jpg
    path = str(tmp_path / '00006.JPG')
    _save_jpg(path, np.zeros((16, 16, 3), np.uint8), 35.0)
    assert raw_utils.read_focal_length(path) == 35.0
    assert raw_utils.read_focal_length(str(tmp_path / '00006.ARW')) == 35.0  # RAW path → its JPG twin
    assert raw_utils.read_orientation(path) == 1
