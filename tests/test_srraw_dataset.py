"""SRRAWPairedDataset on test-written demo trees: shapes, alignment to the known geometry, flips, bad input."""
import logging
import shutil

import cv2
import numpy as np
import pytest
from basicsr.utils.registry import DATASET_REGISTRY

from sdan_basicsr.data import raw_utils
from sdan_basicsr.data.raw_utils import JPEG_GAMMA
from sdan_basicsr.data.srraw_dataset import SRRAWPairedDataset
from sdan_basicsr.tools.make_demo import EXPOSURE, exact_target, make_demo, render_linear


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """Two train scenes (7 and 6 shots) and one test scene, affine misalignment only (exact oracle)."""
    root = tmp_path_factory.mktemp('srraw')
    meta = make_demo(str(root), num_scenes=3, size=320, seed=1, residual=0., num_test=1)
    return root, meta


def _opt(root, **kw):
    return dict(dataroot=str(root / 'train'), phase='train', gt_size=64, **kw)


def _locate(patch, mosaic):
    """(x, y) of an exact copy of ``patch`` in ``mosaic``."""
    res = cv2.matchTemplate(mosaic, patch, cv2.TM_SQDIFF)
    _, _, (x, y), _ = cv2.minMaxLoc(res)
    np.testing.assert_array_equal(mosaic[y:y + patch.shape[0], x:x + patch.shape[1]], patch)
    return x, y


def _psnr(a, b):
    return 10 * np.log10(1 / np.mean((a - b)**2))


def test_registered():
    assert DATASET_REGISTRY.get('SRRAWPairedDataset') is SRRAWPairedDataset


@pytest.mark.parametrize('in_format,lq_shape,ref_shape', [('bayer', (1, 16, 16), (3, 16, 16)),
                                                          ('packed', (4, 8, 8), (3, 8, 8)),
                                                          ('rgb', (3, 16, 16), (3, 16, 16))])
def test_train_items(demo, in_format, lq_shape, ref_shape):
    root, _ = demo
    ds = SRRAWPairedDataset(_opt(root, in_format=in_format, use_hflip=True, use_vflip=True))
    assert len(ds) == 5  # 3 pairs + 2 pairs (the 6-shot scene has no 00007)
    for i in range(len(ds)):
        item = ds[i]
        assert item['lq'].shape == lq_shape and item['gt'].shape == (3, 64, 64)
        assert item['lq_rgb'].shape == ref_shape and item['wb'].shape == (4, )
        for key in ('lq', 'gt', 'lq_rgb', 'wb'):
            assert item[key].dtype == np.float32 or str(item[key].dtype) == 'torch.float32'
        for key in ('lq', 'gt', 'lq_rgb'):
            assert 0 <= item[key].min() and item[key].max() <= 1 and item[key].std() > 0.01
        assert item['lq_path'].endswith('.ARW') and item['gt_path'].endswith('.JPG')
    assert ds[0]['wb'][0] > 1.5  # the demo's red gain, read from wb.txt


@pytest.mark.parametrize('in_format', ['bayer', 'packed'])
def test_test_items_whole_images(demo, in_format):
    root, _ = demo
    ds = SRRAWPairedDataset(dict(dataroot=str(root / 'test'), phase='test', in_format=in_format))
    assert len(ds) == 1 and ds[0]['lq_path'].endswith('00006.ARW') and ds[0]['gt_path'].endswith('00002.JPG')
    item = ds[0]
    h, w = item['lq'].shape[-2:]
    if in_format == 'packed':
        h, w = 2 * h, 2 * w
    assert h % 2 == 0 and w % 2 == 0 and h >= 24 and w >= 32
    assert item['gt'].shape == (3, 4 * h, 4 * w)


def test_exact_target_is_the_aligned_target_without_misalignment(demo):
    """With affine misalignment only, ECC aligns the long-focal shot onto the exact zoom of the LR shot."""
    root, meta = demo
    ds = SRRAWPairedDataset(dict(dataroot=str(root / 'test'), phase='test'))
    gt = ds[0]['gt'].numpy().transpose(1, 2, 0)
    exact = exact_target(meta, ds.samples[0], ds.scale)
    assert exact.shape == gt.shape and exact.dtype == np.float32
    c = 16
    assert _psnr(exact[c:-c, c:-c], gt[c:-c, c:-c]) > 30
    # one LR pixel of shift is far worse: the geometry, not just the content, is what matches
    assert _psnr(exact[c:-c, c:-c], gt[c + 4:gt.shape[0] - c + 4, c:-c]) < _psnr(exact[c:-c, c:-c], gt[c:-c, c:-c]) - 3


def test_train_crops_are_aligned(demo):
    root, meta = demo
    ds = SRRAWPairedDataset(_opt(root))
    textured = 0
    for i in range(len(ds)):
        item = ds[i]
        scene_key = 'train/' + item['lq_path'].split('/')[-2]
        scene = meta['scenes'][scene_key]
        k = int(item['lq_path'][-9:-4])
        full = raw_utils.read_raw(item['lq_path'])
        x, y = _locate(item['lq'][0].numpy(), full)
        assert x % 2 == 0 and y % 2 == 0
        n = item['gt'].shape[-1]
        grid = (np.arange(n) + 0.5) / 4 - 0.5
        wb = np.array([scene['wb'][0], 1, scene['wb'][3]], np.float32)

        def oracle(shift):
            xs, ys = np.meshgrid(x + grid + shift, y + grid)
            lin = render_linear(scene, k, xs, ys, pitch=0.25) * EXPOSURE / wb
            return np.clip(lin, 0, 1)**(1 / JPEG_GAMMA)

        gt = item['gt'].numpy().transpose(1, 2, 0)[8:-8, 8:-8]
        exact, off = oracle(0)[8:-8, 8:-8], oracle(1.0)[8:-8, 8:-8]  # aligned, and one mosaic pixel off
        aligned = _psnr(gt, exact)
        assert aligned > 22, (i, aligned)
        if _psnr(exact, off) > 35:
            continue  # a crop of flat sky or background: a one-pixel shift cannot be seen in it
        textured += 1
        assert aligned > _psnr(gt, off) + 4, (i, aligned, _psnr(gt, off))
    assert textured >= 2, 'too few textured crops to check the alignment'


def test_flips_keep_rggb_phase(demo):
    root, _ = demo
    ds = SRRAWPairedDataset(_opt(root, use_hflip=True, use_vflip=True))
    full = raw_utils.read_raw(ds.samples[0]['lq_path'])
    seen = set()
    for _ in range(24):
        item = ds[0]
        lq = item['lq'][0].numpy()
        for fx in (False, True):
            for fy in (False, True):
                patch = lq[::-1 if fy else 1, ::-1 if fx else 1]
                res = cv2.matchTemplate(full, np.ascontiguousarray(patch), cv2.TM_SQDIFF)
                _, _, (x, y), _ = cv2.minMaxLoc(res)
                if np.array_equal(full[y:y + 16, x:x + 16], patch):
                    # an odd start flipped over an even size lands on an even (R) position: RGGB
                    assert (x % 2, y % 2) == (int(fx), int(fy))
                    seen.add((fx, fy))
    assert len(seen) == 4


@pytest.fixture
def logged():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger('basicsr')
    logger.addHandler(handler)
    yield lambda: '\n'.join(r.getMessage() for r in records if r.levelno >= logging.WARNING)
    logger.removeHandler(handler)


def test_six_shot_scene_pair_skipped_and_reported(demo, logged):
    root, _ = demo
    SRRAWPairedDataset(_opt(root))
    assert 'skipping pair 00007->00003' in logged() and '00002' in logged()


@pytest.mark.parametrize('damage', ['truncated', 'not_raw'])
def test_unreadable_raw_skips_scene(demo, tmp_path, logged, damage):
    root, _ = demo
    shutil.copytree(root / 'train', tmp_path / 'train')
    bad = tmp_path / 'train' / '00001' / '00006.ARW'
    bad.write_bytes(bad.read_bytes()[:5000] if damage == 'truncated' else b'JPEG?' * 1000)
    ds = SRRAWPairedDataset(_opt(tmp_path))
    assert len(ds) == 2  # only the other scene is left
    assert all('/00001/' not in s['lq_path'] for s in ds.samples)
    assert 'skipping scene' in logged() and str(bad) in logged()
    for i in range(len(ds)):
        ds[i]


def test_missing_tform_tells_to_prepare(demo, tmp_path):
    root, _ = demo
    shutil.copytree(root / 'train', tmp_path / 'train')
    for scene in ('00001', '00002'):
        (tmp_path / 'train' / scene / 'tform.txt').unlink()
    with pytest.raises(FileNotFoundError, match='sdan-prepare-srraw'):
        SRRAWPairedDataset(_opt(tmp_path))


def test_missing_wb_in_one_scene_warns(demo, tmp_path, logged):
    root, _ = demo
    shutil.copytree(root / 'train', tmp_path / 'train')
    (tmp_path / 'train' / '00002' / 'wb.txt').unlink()
    assert len(SRRAWPairedDataset(_opt(tmp_path))) == 3
    assert 'sdan-prepare-srraw' in logged()


def test_empty_dataset_names_dataroot(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match=str(tmp_path / 'empty')):
        SRRAWPairedDataset(_opt(tmp_path / 'empty', scenes=[]) | dict(dataroot=str(tmp_path / 'empty')))
    with pytest.raises(ValueError, match='dataroot'):
        SRRAWPairedDataset(dict(dataroot=str(tmp_path / 'empty'), phase='train'))
