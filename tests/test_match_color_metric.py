"""``val.match_color`` of SDANModel through the real ``test.py``: an extra, separately named metric row."""
import glob
import os
import re
import subprocess
import sys
from os import path as osp

import pytest
import yaml

from sdan_basicsr.launch import REPO_ROOT
from sdan_basicsr.tools.demo import read_image_metrics, read_test_metrics


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    from sdan_basicsr.tools.make_demo import make_demo

    root = tmp_path_factory.mktemp('match_color')
    make_demo(str(root), num_scenes=2, num_test=1, size=192, seed=0)
    return root


def test_color_matched_metrics_are_logged_beside_the_protocol(demo_root, tmp_path):
    name = 'bicubic_match_color'
    metrics = {'psnr': {'type': 'calculate_psnr', 'crop_border': 8},
               'ssim': {'type': 'calculate_ssim', 'crop_border': 8}}
    opt = {'name': name, 'model_type': 'SDANModel', 'scale': 4, 'num_gpu': 0,
           'datasets': {'test': {'name': 'demo-test', 'type': 'SRRAWPairedDataset', 'in_format': 'rgb',
                                 'dataroot': str(demo_root / 'test')}},
           'network_g': {'type': 'Bicubic', 'upscale': 4}, 'path': {'pretrain_network_g': None},
           'val': {'save_img': False, 'match_color': True, 'metrics': metrics}}
    path = tmp_path / 'test.yml'
    path.write_text(yaml.safe_dump(opt))
    env = dict(os.environ, SDAN_ROOT=str(tmp_path), OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, osp.join(REPO_ROOT, 'sdan_basicsr', 'test.py'), '-opt', str(path)],
                          env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = open(glob.glob(str(tmp_path / 'results' / name / 'test_*.log'))[0], encoding='utf-8').read()
    assert re.search(r'# psnr_color_matched: [-+0-9.]+', log) and re.search(r'# ssim_color_matched: ', log)
    means = read_test_metrics(str(tmp_path), name)
    assert list(means) == ['psnr', 'ssim', 'psnr_color_matched', 'ssim_color_matched']
    # bicubic of the camera JPEG already has the JPEG's colours: matching to them changes little
    assert abs(means['psnr_color_matched'] - means['psnr']) < 0.5
    images = read_image_metrics(str(tmp_path), name)
    assert list(images) == ['00002_00006'] and images['00002_00006'] == pytest.approx(means, abs=1e-4)
