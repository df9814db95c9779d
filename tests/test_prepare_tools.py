"""sdan-prepare-srraw and sdan-make-demo: ECC recovers the known affines, white balance, idempotence, bad files;
the demo's colour variations and held-out photographs."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from sdan_basicsr.data import raw_utils
from sdan_basicsr.tools.demo import CROP_BORDER, DEMO_TREE, TRAIN_OPT, mean_colour, trained_with_other_options
from sdan_basicsr.tools.make_demo import (
    EXPOSURE,
    FOCAL_LENGTHS,
    TEMPERATURE_RANGE,
    TEST_PHOTOS,
    TRAIN_PHOTOS,
    camera_white_balance,
    color_matrix,
    color_params,
    make_demo,
    photo_linear,
    render_linear,
    scene_plan,
)
from sdan_basicsr.tools.prepare_srraw import main, prepare_srraw


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo')
    meta = make_demo(str(root), num_scenes=2, size=320, seed=3, residual=0., num_test=0)
    return root, meta


def test_demo_tree(demo):
    root, meta = demo
    assert sorted(meta['scenes']) == ['train/00001', 'train/00002']
    assert len(list((root / 'train' / '00001').glob('*.ARW'))) == 7
    assert len(list((root / 'train' / '00002').glob('*.JPG'))) == 6
    assert raw_utils.read_focal_length(str(root / 'train' / '00001' / '00005.JPG')) == FOCAL_LENGTHS[4]
    assert raw_utils.read_raw(str(root / 'train' / '00001' / '00005.ARW')).shape == (240, 320)
    assert json.loads((root / 'demo_meta.json').read_text())['seed'] == 3
    again = make_demo(str(root.parent / 'again'), num_scenes=2, size=320, seed=3, residual=0., num_test=0)
    assert again == meta


@pytest.mark.parametrize('scene,tol', [('00001', 0.5), ('00002', 1.0)])  # coffee; rocket (flat sky: looser)
def test_ecc_recovers_known_affine(demo, scene, tol):
    root, meta = demo
    params = meta['scenes'][f'train/{scene}']
    tforms, corner = raw_utils.read_tform(str(root / 'train' / scene / 'tform.txt'))
    h, w = params['size']
    h0, h1, w0, w1 = corner  # the valid region, where the pairs are cut
    pts = np.array([[w0, h0, 1], [w1, h0, 1], [w0, h1, 1], [w1, h1, 1], [w / 2, h / 2, 1]], np.float64).T
    for k, shot in enumerate(params['shots'], 1):
        expected = np.linalg.inv(raw_utils.to3x3(shot['affine']))[:2]
        err_hr = np.abs(tforms[raw_utils.shot_name(k)] @ pts - expected @ pts).max()
        pixel = FOCAL_LENGTHS[0] / FOCAL_LENGTHS[k - 1]  # one pixel of shot k, in 00001 pixels
        if k >= 5:  # LR shots: within `tol` mosaic pixels
            assert err_hr / pixel < tol, (k, err_hr)
        else:  # HR shots: within 3 pixels of 00001
            assert err_hr < 3, (k, err_hr)
    assert 0 <= corner[0] < corner[1] <= h and 0 <= corner[2] < corner[3] <= w
    gains = raw_utils.read_wb(str(root / 'train' / scene / 'wb.txt'))
    np.testing.assert_allclose(gains['00005'], params['wb'], rtol=1e-3)


def test_prepare_is_idempotent_and_reports_bad_files(demo, tmp_path, capsys):
    import shutil
    root, _ = demo
    shutil.copytree(root / 'train', tmp_path / 'train')
    report = prepare_srraw(str(tmp_path))
    assert report.skipped and not report.written
    bad = tmp_path / 'train' / '00002' / '00006.ARW'
    bad.write_bytes(bad.read_bytes()[:4000])
    (tmp_path / 'train' / '00002' / 'wb.txt').unlink()
    report = prepare_srraw(str(tmp_path), jobs=2)
    assert report.written == [str(tmp_path / 'train' / '00002')]
    assert any(str(bad) in u for u in report.unreadable)
    assert '00006' not in raw_utils.read_wb(str(tmp_path / 'train' / '00002' / 'wb.txt'))
    main([str(tmp_path), '--force'])
    out = capsys.readouterr().out
    assert '2 scenes written' in out and str(bad) in out


def test_prepare_no_scene(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        prepare_srraw(str(tmp_path))


def test_module_entry_point(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'sdan_basicsr.tools.prepare_srraw', '--help'],
                            capture_output=True, text=True)
    assert result.returncode == 0 and '--jobs' in result.stdout


def test_color_variation_is_recorded_and_rendered(demo):
    """Each training scene's colour (variation, illuminant) is in demo_meta.json, and its shots show exactly that."""
    root, meta = demo
    assert json.loads((root / 'demo_meta.json').read_text())['scenes'] == meta['scenes']
    hues = []
    for key, scene in meta['scenes'].items():
        color = scene['color']
        np.testing.assert_allclose(color['matrix'], color_matrix(color['hue'], color['saturation']), atol=1e-12)
        np.testing.assert_allclose(scene['wb'], camera_white_balance(color['temperature'], color['tint']))
        assert TEMPERATURE_RANGE[0] <= color['temperature'] <= TEMPERATURE_RANGE[1]
        hues.append(color['hue'])
        # the camera JPEG of 00001 (white-balanced, so the radiance itself) is the photo under the recorded matrix
        h, w = scene['size']
        y, x = np.mgrid[0:h, 0:w].astype(np.float64)
        jpg = cv2.cvtColor(cv2.imread(str(root / key / '00001.JPG')), cv2.COLOR_BGR2RGB).astype(np.float32) / 255

        def rendered(s):
            return np.clip(render_linear(s, 1, x, y) * EXPOSURE, 0, 1)**(1 / raw_utils.JPEG_GAMMA)

        plain = dict(scene, color=dict(color, matrix=np.eye(3).tolist()))
        small = [cv2.resize(a, (w // 4, h // 4), interpolation=cv2.INTER_AREA) for a in (jpg, rendered(scene),
                                                                                            rendered(plain))]
        psnr = [10 * np.log10(1 / np.mean((small[0] - a)**2)) for a in small[1:]]
        assert psnr[0] > 32 and psnr[1] < psnr[0] - 8, (key, psnr)
    assert abs(hues[0] - hues[1]) > 1


def test_color_params_deterministic_by_seed():
    draw = [color_params(np.random.default_rng(seed), vary=True) for seed in (7, 7, 8)]
    assert draw[0] == draw[1] and draw[0] != draw[2]
    fixed = [color_params(np.random.default_rng(seed), vary=False) for seed in (7, 8)]
    assert all(f['color']['matrix'] == np.eye(3).tolist() and f['color']['hue'] == 0 for f in fixed)
    assert fixed[0]['wb'] != fixed[1]['wb']  # the illuminant varies in every scene


def test_demo_test_split_holds_unseen_photos_and_palettes():
    """The README demo's held-out scenes: at least 4, from at least 3 photographs never trained on, in their own
    colours, one mostly blue and one mostly green."""
    plan = scene_plan(DEMO_TREE['num_scenes'], DEMO_TREE['num_test'], DEMO_TREE['color_variation'])
    test = [(photo, vary) for key, photo, vary in plan if key.startswith('test/')]
    train = {photo for key, photo, _ in plan if key.startswith('train/')}
    assert len(test) >= 4 and len({p for p, _ in test}) >= 3 and not train & {p for p, _ in test}
    assert train == set(TRAIN_PHOTOS) and set(TRAIN_PHOTOS).isdisjoint(TEST_PHOTOS)
    assert not any(vary for _, vary in test[:len(TEST_PHOTOS)])
    displayed = {p: (photo_linear(p)**(1 / raw_utils.JPEG_GAMMA)).reshape(-1, 3).mean(0) for p, _ in test}
    assert {1, 2} <= {int(np.argmax(m)) for m in displayed.values()}  # a green- and a blue-dominant photograph


def test_demo_trains_anew_after_its_options_changed(tmp_path):
    import os.path as osp

    import yaml

    from sdan_basicsr.launch import REPO_ROOT

    with open(osp.join(REPO_ROOT, TRAIN_OPT), encoding='utf-8') as f:
        opt = yaml.safe_load(f)
    assert not trained_with_other_options(str(tmp_path), osp.join(REPO_ROOT, TRAIN_OPT))  # nothing trained yet
    (tmp_path / 'train_demo.yml').write_text(yaml.safe_dump(opt))
    assert not trained_with_other_options(str(tmp_path), osp.join(REPO_ROOT, TRAIN_OPT))
    opt['network_g'].pop('cfa_head')  # an earlier demo's network
    (tmp_path / 'train_demo.yml').write_text(yaml.safe_dump(opt))
    assert trained_with_other_options(str(tmp_path), osp.join(REPO_ROOT, TRAIN_OPT))


def test_mean_colour_readings_part_with_where_an_image_is_blurred():
    """The demo's two colour readings: a blur of the 8-bit values keeps their means and lowers the linear ones; a blur
    in linear light keeps the linear means and raises the 8-bit ones. BGR in, R/G/B out, inside the border crop."""
    rng = np.random.default_rng(0)
    img = np.zeros((160, 160, 3), np.uint8)
    img[..., 0] = rng.choice([10, 240], size=(160, 160))  # blue: high contrast
    img[..., 1] = 128
    img[..., 2] = 60
    np.testing.assert_allclose(mean_colour(img, '8-bit')[:2], [60 / 255, 128 / 255])
    np.testing.assert_allclose(mean_colour(img, 'linear')[:2], [(60 / 255)**2.2, (128 / 255)**2.2])
    inner = img[CROP_BORDER:-CROP_BORDER, CROP_BORDER:-CROP_BORDER, 0].astype(np.float64) / 255
    assert mean_colour(img, '8-bit')[2] == pytest.approx(inner.mean())

    blur_8bit = cv2.GaussianBlur(img.astype(np.float64), (0, 0), 3)
    lin = (img.astype(np.float64) / 255)**2.2
    blur_linear = 255 * cv2.GaussianBlur(lin, (0, 0), 3)**(1 / 2.2)
    as_saved = {'8-bit': np.round(blur_8bit).astype(np.uint8), 'linear': np.round(blur_linear).astype(np.uint8)}
    blue = {(d, r): mean_colour(as_saved[d], r)[2] / mean_colour(img, r)[2] - 1 for d in as_saved for r in as_saved}
    assert abs(blue['8-bit', '8-bit']) < 0.01 and blue['8-bit', 'linear'] < -0.2
    assert abs(blue['linear', 'linear']) < 0.01 and blue['linear', '8-bit'] > 0.2
    with pytest.raises(ValueError, match='reading'):
        mean_colour(img, 'srgb')
