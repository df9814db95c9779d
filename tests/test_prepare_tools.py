"""sdan-prepare-srraw and sdan-make-demo: ECC recovers the known affines, white balance, idempotence, bad files."""
import json
import subprocess
import sys

import numpy as np
import pytest

from sdan_basicsr.data import raw_utils
from sdan_basicsr.tools.make_demo import FOCAL_LENGTHS, make_demo
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
