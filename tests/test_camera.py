"""Tests of the synthetic RAW cameras (sdan_basicsr/data/camera.py) and of the corpus trees made with them."""
import json
import os.path as osp

import numpy as np
import pytest
import rawpy
from PIL import Image

from sdan_basicsr.data import camera as cam
from sdan_basicsr.data import raw_utils
from sdan_basicsr.tools.make_demo import TARGET_SHOTS, make_demo, photo_linear, render_linear


def test_sample_camera_is_deterministic_and_in_range():
    a, b = (cam.sample_camera(np.random.default_rng(7)) for _ in range(2))
    assert a == b and json.loads(json.dumps(a)) == a
    cameras = [cam.sample_camera(np.random.default_rng(i)) for i in range(200)]
    assert {c['pattern'] for c in cameras} == set(raw_utils.CFA_OFFSETS)
    assert {c['white'] for c in cameras} == {4095, 16383}
    shots = np.log([c['shot'] for c in cameras])
    assert cam.LOG_SHOT[0] <= shots.min() and shots.max() <= cam.LOG_SHOT[1]
    # ln read scatters about Brooks et al.'s line by N(0, 0.26)
    residual = np.log([c['read'] for c in cameras]) - (cam.READ_SLOPE * shots + cam.READ_OFFSET)
    assert abs(residual.mean()) < 0.07 and 0.2 < residual.std() < 0.32
    for c in cameras[:20]:
        m = cam.rgb_to_cam(c['xyz_to_cam'])
        np.testing.assert_allclose(m.sum(axis=1), 1, atol=1e-12)  # camera white before the gains
    plain = [c for c in cameras if c['tone'] == 'gamma']
    assert abs(len(plain) / len(cameras) - cam.PLAIN_FRACTION) < 0.07
    for c in plain:  # the demo camera's colour
        np.testing.assert_allclose(cam.rgb_to_cam(c['xyz_to_cam']), np.eye(3), atol=1e-12)
    canon = cam.HELD_OUT_XYZ_TO_CAM['Canon EOS 5D Mark II']
    with_matrix = cam.sample_camera(np.random.default_rng(0), xyz_to_cam=canon, noise='mid')
    np.testing.assert_allclose(with_matrix['xyz_to_cam'], canon)
    assert with_matrix['shot'] == cam.noise_at('mid')['shot']


@pytest.mark.parametrize('strength', [0., 0.3, 1.])
def test_inverse_tone(strength):
    y = np.linspace(0, 1, 1001)
    np.testing.assert_allclose(cam.inverse_tone(cam.tone(y, strength), strength), y, atol=1e-6)
    if strength == 1:  # Brooks et al.'s closed form of the inverse smoothstep
        np.testing.assert_allclose(cam.inverse_tone(y, 1.), 0.5 - np.sin(np.arcsin(1 - 2 * y) / 3), atol=1e-6)
    np.testing.assert_allclose(cam.srgb_decode(cam.srgb_encode(y)), y, atol=1e-9)


def test_unprocess_then_process_gives_the_photo_back():
    """Noise off, no mosaic: the camera's rendering of its own sensor image is the photograph again (the sensor is
    not clipped before the noise, so colours outside the camera's gamut come back too)."""
    radiance = photo_linear('astronaut')[::4, ::4] * 0.9
    tones = set()
    for seed in range(12):
        camera = cam.sample_camera(np.random.default_rng(seed))
        wb = cam.sample_gains(np.random.default_rng(seed))
        sensor = cam.unprocess(radiance, dict(camera, exposure=1.), wb)
        jpeg = cam.process(sensor, dict(camera, exposure=1.), wb)
        if camera['tone'] == 'gamma':
            linear = np.clip(jpeg, 0, 1)**raw_utils.JPEG_GAMMA
            np.testing.assert_allclose(linear, np.clip(radiance, 0, 1), atol=2e-4)  # plain: clipped to [0, 1]
        else:
            linear = cam.srgb_decode(cam.inverse_tone(jpeg, camera['tone_strength']))
            np.testing.assert_allclose(linear, radiance, atol=2e-4)
        tones.add(camera['tone'])
    assert tones == {'gamma', 'srgb'}


def test_noise_variance_matches_the_model():
    camera = dict(cam.sample_camera(np.random.default_rng(0)), black=512, white=16383, **cam.noise_at('high'))
    for level in (0.1, 0.5):
        flat = np.full((400, 400), level, np.float32)
        counts = cam.noisy_counts(flat, camera, np.random.default_rng(1)).astype(np.float64)
        values = (counts - 512) / (16383 - 512)
        expected = camera['shot'] * level + camera['read']
        assert values.mean() == pytest.approx(level, abs=3 * np.sqrt(expected / flat.size) + 1e-4)
        assert values.var() == pytest.approx(expected, rel=0.02)


def test_psf_kernels_are_normalised():
    for seed in range(12):
        psf = cam.sample_psf(np.random.default_rng(seed), target=seed % 2 == 0)
        k = cam.psf_kernel(psf)
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1 and k.sum() == pytest.approx(1, abs=1e-6)
        lo, hi = cam.PSF_RANGE[psf['kind']]
        assert lo <= psf['size'] <= hi


def test_random_camera_tree_records_and_writes_its_cameras(tmp_path):
    """A corpus tree: every scene's camera in the metadata, and in its DNGs the way a real camera's file has it."""
    kwargs = dict(num_scenes=3, num_test=1, size=256, seed=5, residual=0., camera='random')
    meta = make_demo(str(tmp_path / 'a'), **kwargs)
    again = make_demo(str(tmp_path / 'b'), **kwargs)
    assert meta['scenes'] == again['scenes']
    for key, scene in meta['scenes'].items():
        camera = scene['camera']
        with rawpy.imread(osp.join(tmp_path, 'a', key, '00002.ARW')) as raw:
            assert raw_utils.cfa_pattern(raw) == camera['pattern']
            assert raw.white_level == camera['white']
            assert list(raw.black_level_per_channel) == [camera['black']] * 4
            np.testing.assert_allclose(np.linalg.inv(raw.color_matrix[:, :3]), cam.rgb_to_cam(camera['xyz_to_cam']),
                                       atol=2e-3)
            gains = np.asarray(raw.camera_whitebalance[:3]) / raw.camera_whitebalance[1]
            np.testing.assert_allclose(gains, np.asarray(scene['wb'])[[0, 1, 3]], rtol=1e-4)
        np.testing.assert_allclose(raw_utils.read_noise_profile(osp.join(tmp_path, 'a', key, '00002.ARW')),
                                   [[camera['shot'], camera['read']]] * 3, rtol=1e-12)  # the DNG's NoiseProfile
        assert all('psf' in shot for shot in scene['shots'])
    with pytest.raises(ValueError, match='camera: random'):
        make_demo(str(tmp_path / 'c'), num_scenes=2, size=256, noise='mid')


def test_clean_targets_change_only_the_training_targets_jpegs(tmp_path):
    """``clean_targets``: the training scenes' target JPEGs are the camera's rendering of the noiseless, unblurred
    sensor image; every DNG, every other JPEG and every scene's draws stay those of the real-shot tree."""
    kwargs = dict(num_scenes=3, num_test=1, size=256, seed=5, residual=0., camera='random')
    real = make_demo(str(tmp_path / 'real'), **kwargs)
    clean = make_demo(str(tmp_path / 'clean'), clean_targets=True, **kwargs)
    assert clean['scenes'] == real['scenes'] and clean['tree']['clean_targets']
    for key, scene in clean['scenes'].items():
        for k in range(1, len(scene['shots']) + 1):
            name = raw_utils.shot_name(k)
            files = [osp.join(tmp_path, tree, key, name) for tree in ('real', 'clean')]
            dngs = [open(f'{f}.ARW', 'rb').read() for f in files]
            assert dngs[0] == dngs[1]
            jpgs = [np.asarray(Image.open(f'{f}.JPG'), dtype=np.float32) / 255 for f in files]
            if not (key.startswith('train/') and k in TARGET_SHOTS):
                np.testing.assert_array_equal(jpgs[0], jpgs[1])
                continue
            h, w = scene['size']
            y, x = np.mgrid[0:h, 0:w].astype(np.float64)
            radiance = render_linear(scene, k, x, y).astype(np.float32)
            want = cam.process(cam.unprocess(radiance, scene['camera'], scene['wb']), scene['camera'], scene['wb'])
            errors = [np.abs(jpg - want).mean() for jpg in jpgs]
            assert errors[1] < 0.01 and errors[0] > 2 * errors[1], (key, k, errors)  # JPEG q95, 4:2:0
    with pytest.raises(ValueError, match='camera: random'):
        make_demo(str(tmp_path / 'demo'), num_scenes=2, size=256, clean_targets=True)
