"""SRRAWPairedDataset on test-written demo trees: shapes, alignment to the known geometry, flips, bad input."""
import logging
import random
import shutil

import cv2
import numpy as np
import pytest
from basicsr.utils.registry import DATASET_REGISTRY

from sdan_basicsr.data import raw_utils
from sdan_basicsr.data.raw_utils import JPEG_GAMMA
from sdan_basicsr.data.srraw_dataset import SRRAWPairedDataset
from sdan_basicsr.tools.make_demo import EXPOSURE, READ_NOISE, SHOT_NOISE, exact_target, make_demo, render_linear


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
    root, meta = demo
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
    scene = meta['scenes']['train/' + ds.samples[0]['lq_path'].split('/')[-2]]
    np.testing.assert_allclose(ds[0]['wb'].numpy(), scene['wb'], rtol=1e-3)  # the scene's illuminant, read from wb.txt


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


# ---------------------------------------------------------------- colour augmentation

#: Sensor gains [R, G, B] of the relit scene: a bluer illuminant (less red, more blue than the G ratio) and a
#: darker exposure (G 0.9).
GAINS = np.array([1.25, 0.9, 0.7], np.float32)


@pytest.fixture(scope='module')
def relit(tmp_path_factory):
    """One scene made twice: as the demo makes it, and rendered with the sensor's R, G, B responses times GAINS
    (white balance wb · G / GAINS, exposure × G). Both trees share the first one's ECC transforms, so that only
    the colours differ."""
    import sdan_basicsr.tools.make_demo as make_demo_module

    kwargs = dict(num_scenes=1, num_test=0, size=192, seed=5, residual=0.)
    plain, other = tmp_path_factory.mktemp('plain'), tmp_path_factory.mktemp('relit')
    make_demo(str(plain), **kwargs)
    color_params = make_demo_module.color_params

    def relit_color(rng, vary):
        params = color_params(rng, vary)
        params['wb'] = (np.asarray(params['wb']) * GAINS[1] / GAINS[[0, 1, 1, 2]]).tolist()
        return params

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(make_demo_module, 'color_params', relit_color)
        patch.setattr(make_demo_module, 'EXPOSURE', EXPOSURE * float(GAINS[1]))
        make_demo(str(other), **kwargs)
    shutil.copy(plain / 'train' / '00001' / 'tform.txt', other / 'train' / '00001' / 'tform.txt')
    return plain, other


def _hwc(t):
    return t.numpy().transpose(1, 2, 0)


def test_augmented_pair_equals_the_pair_rendered_under_that_colour_change(relit):
    plain, other = relit
    a, b = (SRRAWPairedDataset(dict(dataroot=str(r / 'train'), phase='test'))[0] for r in (plain, other))
    mosaic, (gt, ref), wb = raw_utils.apply_sensor_gains(a['lq'][0].numpy(), [_hwc(a['gt']), _hwc(a['lq_rgb'])],
                                                         a['wb'].numpy(), GAINS)
    np.testing.assert_allclose(wb, b['wb'], rtol=1e-3)
    assert np.abs(mosaic - b['lq'][0].numpy()).max() < 0.01  # noise and 16-bit counts
    assert _psnr(mosaic, b['lq'][0].numpy()) > 50
    for name, aug, rendered, c in (('gt', gt, _hwc(b['gt']), 8), ('lq_rgb', ref, _hwc(b['lq_rgb']), 2)):
        aug, rendered = aug[c:-c, c:-c], rendered[c:-c, c:-c]
        assert _psnr(aug, rendered) > 38, name  # 8-bit JPEGs
        # channel means: within 3 % (a dark channel's noise is clipped at black and gamma-encoded differently)
        np.testing.assert_allclose(aug.mean((0, 1)), rendered.mean((0, 1)), rtol=0.03, atol=1e-3, err_msg=name)
    # and the change is a real one: without the augmentation the two pairs differ far more
    assert _psnr(_hwc(a['gt']), _hwc(b['gt'])) < 30


def test_training_items_are_augmented_consistently(demo):
    root, _ = demo
    plain = SRRAWPairedDataset(_opt(root))
    aug = SRRAWPairedDataset(_opt(root, color_augment={'gains': 1.4, 'exposure': [0.7, 1.0]}))
    seen = []
    for i in range(len(plain)):
        random.seed(i)
        p = {k: v.numpy() for k, v in plain[i].items() if k in ('lq', 'gt', 'wb')}
        random.seed(i)
        q = {k: v.numpy() for k, v in aug[i].items() if k in ('lq', 'gt', 'wb')}  # the same crop: gains come after it
        mosaic_p, mosaic_q = (raw_utils.pack_bayer(x['lq'][0]) for x in (p, q))
        gains = []
        for c, planes in enumerate(((0, ), (1, 3), (2, ))):
            ok = (mosaic_p[list(planes)] > 0.05) & (mosaic_q[list(planes)] < 0.95)
            gain = np.median(mosaic_q[list(planes)][ok] / mosaic_p[list(planes)][ok])
            ok = (p['gt'][c] > 0.2) & (q['gt'][c] < 0.95)
            np.testing.assert_allclose(np.median(q['gt'][c][ok] / p['gt'][c][ok]), gain**(1 / JPEG_GAMMA), rtol=2e-3)
            gains.append(gain)
        assert 0.7 - 1e-3 <= gains[1] <= 1 + 1e-3 and all(1 / 1.4 - 1e-3 <= g / gains[1] <= 1.4 + 1e-3
                                                          for g in gains)
        np.testing.assert_allclose(q['wb'], p['wb'] * gains[1] / np.array(gains)[[0, 1, 1, 2]], rtol=1e-3)
        seen.append(gains)
    assert np.std(seen, axis=0).min() > 0.02  # every item gets its own gains


@pytest.mark.parametrize('aug, message', [({'gain': 2}, 'unknown keys'), ({'gains': 0.5}, 'at least 1'),
                                          ({'exposure': [1.2, 0.6]}, 'low <= high')])
def test_bad_color_augment(demo, aug, message):
    root, _ = demo
    with pytest.raises(ValueError, match=message):
        SRRAWPairedDataset(_opt(root, color_augment=aug))


@pytest.mark.parametrize('phase', ['train', 'test'])
def test_cache_decoded_gives_the_same_items_and_decodes_each_file_once(demo, monkeypatch, phase):
    root, _ = demo
    opt = dict(_opt(root, use_hflip=True, use_vflip=True, color_augment=True), phase=phase)
    if phase == 'test':
        opt['dataroot'] = str(root / 'test')
    datasets = {'plain': SRRAWPairedDataset(opt), 'cached': SRRAWPairedDataset(dict(opt, cache_decoded=True))}
    read_raw, reads = raw_utils.read_raw, []
    monkeypatch.setattr(raw_utils, 'read_raw', lambda path, *args: reads.append(path) or read_raw(path, *args))
    items, decoded = {}, {}
    for name, ds in datasets.items():
        reads.clear()
        items[name] = []
        for _ in range(2):  # two epochs
            for i in range(len(ds)):
                random.seed(i)
                items[name].append({k: v.numpy() for k, v in ds[i].items() if k in ('lq', 'gt', 'lq_rgb', 'wb')})
        decoded[name] = len(reads)
    for a, b in zip(items['plain'], items['cached']):
        for key in a:
            assert np.array_equal(a[key], b[key]), key
    files = {s['lq_path'] for s in datasets['plain'].samples}
    assert decoded == {'plain': 2 * len(datasets['plain']), 'cached': len(files)}


def test_noise_profile_items_follow_the_file_and_the_colour_augmentation(demo, monkeypatch):
    """``noise_profile``: each item carries its RAW file's NoiseProfile over the RGGB cell, scaled with the sensor
    gains of the colour augmentation (variance S·g·x + O·g² of the multiplied mosaic)."""
    root, _ = demo
    dataset = SRRAWPairedDataset(_opt(root, noise_profile=True, color_augment=True))
    gains = np.array([1.3, 0.8, 0.6], dtype=np.float32)
    monkeypatch.setattr(dataset, '_sensor_gains', lambda: gains)
    item = dataset[0]
    shot, read = raw_utils.read_noise_profile(item['lq_path'])[0]
    assert (shot, read) == pytest.approx((SHOT_NOISE, READ_NOISE**2))  # the demo camera's, from its DNG
    site = np.array([[0, 1], [1, 2]])
    np.testing.assert_allclose(item['noise'][0].numpy(), shot * gains[site], rtol=1e-5)
    np.testing.assert_allclose(item['noise'][1].numpy(), read * gains[site]**2, rtol=1e-5)
    assert 'noise' not in SRRAWPairedDataset(_opt(root))[0]
    with pytest.raises(ValueError, match='noise_profile'):
        SRRAWPairedDataset(_opt(root, noise_profile=True, in_format='packed'))
