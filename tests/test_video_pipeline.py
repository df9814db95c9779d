"""Video SR through BasicSR's own pipeline on CPU: VideoBaseModel, Vimeo90KDataset, VideoTestDataset.

Trains the demo options of each video arch for a few iterations with ``sdan_basicsr/train.py`` in a
subprocess on a generated fixture, then checks the log, the checkpoints and the validation metrics.
"""
import os
import re
import shutil
import subprocess
import sys
from os import path as osp

import pytest
import torch
import yaml
from basicsr.data import build_dataset
from basicsr.models import build_model
from torch.utils.data import DataLoader

from sdan_basicsr.launch import REPO_ROOT
from sdan_basicsr.tools.make_video_demo import make_video_demo

DEMOS = {  # option file → (fixture folder named in it, scale, GT size)
    'train_dksan_demo.yml': ('video_demo_x16', 16, 128),
    'train_msffn_demo.yml': ('video_demo_x4', 4, 64),
}


def _load_demo(option_file: str) -> dict:
    with open(osp.join(REPO_ROOT, 'options', option_file)) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    """A project root holding the fixtures at the relative paths the demo options name."""
    root = tmp_path_factory.mktemp('video_root')
    for folder, scale, gt_size in DEMOS.values():
        make_video_demo(str(root / 'datasets' / folder), scale=scale, gt_size=gt_size)
    return root


def test_fixture_layout(demo_root):
    root = demo_root / 'datasets' / 'video_demo_x4'
    keys = (root / 'meta_info_train_GT.txt').read_text().split('\n')
    assert keys[0] == 'generated/0001 7 (64,64,3)'
    lq = root / 'vimeo_septuplet_matlabLRx4' / 'sequences' / 'generated' / '0001'
    assert sorted(os.listdir(lq)) == [f'im{i}.png' for i in range(1, 8)]
    clip = os.listdir(root / 'test' / 'GT')[0]
    assert len(os.listdir(root / 'test' / 'GT' / clip)) == len(os.listdir(root / 'test' / 'BIx4' / clip)) == 8


def test_video_validation_runs_on_cpu(demo_root):
    """Row 8: basicsr allocates the metric table of ``VideoBaseModel.dist_validation`` on 'cuda'."""
    opt = _load_demo('train_msffn_demo.yml')
    val_opt = dict(opt['datasets']['val'], phase='val', scale=opt['scale'])
    for key in ('dataroot_gt', 'dataroot_lq'):
        val_opt[key] = str(demo_root / val_opt[key])
    dataset = build_dataset(val_opt)
    opt.update(is_train=False, dist=False, rank=0, world_size=1)
    model = build_model(opt)
    assert model.device.type == 'cpu'
    model.validation(DataLoader(dataset), current_iter=0, tb_logger=None, save_img=False)
    assert all(t.device.type == 'cpu' for t in model.metric_results.values())
    psnr = model.best_metric_results['Vid4']['psnr']['val']
    assert 15 < psnr < 60


@pytest.mark.slow
@pytest.mark.parametrize('option_file', sorted(DEMOS))
def test_train_and_validate_through_launcher(demo_root, tmp_path, option_file):
    opt = _load_demo(option_file)
    name = f'{opt["name"]}_{tmp_path.name}'  # unique: the basicsr logger is a process-wide singleton
    opt['name'] = name
    option_path = tmp_path / option_file
    option_path.write_text(yaml.safe_dump(opt))
    elsewhere = tmp_path / 'cwd'
    elsewhere.mkdir()
    env = dict(os.environ, SDAN_ROOT=str(demo_root), OMP_NUM_THREADS='2')
    proc = subprocess.run([sys.executable, osp.join(REPO_ROOT, 'sdan_basicsr', 'train.py'), '-opt', str(option_path)],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    exp = demo_root / 'experiments' / name
    total = opt['train']['total_iter']
    assert (exp / 'models' / f'net_g_{total}.pth').is_file()
    assert (exp / 'models' / 'net_g_latest.pth').is_file()
    assert (exp / 'training_states' / f'{total}.state').is_file()
    weights = torch.load(exp / 'models' / 'net_g_latest.pth', map_location='cpu', weights_only=True)['params']
    assert all(torch.isfinite(v).all() for v in weights.values())

    logs = [f for f in os.listdir(exp) if f.endswith('.log')]
    assert len(logs) == 1
    log = (exp / logs[0]).read_text()
    assert f'iter:{total:8,d}' in log
    assert 'Validation Vid4' in log
    for metric in opt['val']['metrics']:
        values = [float(v) for v in re.findall(rf'# {metric}: ([-\d.]+)', log)]
        assert values and all(v == v and v > 0 for v in values), f'no finite {metric} in the log'


def test_video_bench_smoke(tmp_path):
    """``bench/video_bench.py --smoke`` end to end: every smoke row trained or tested through the launchers, the
    table with each row and claim, and the picture; the fed-centre row tests the 7-frame row's own weights."""
    out = tmp_path / 'report.md'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, osp.join(REPO_ROOT, 'bench', 'video_bench.py'), '--smoke',
                           '--work', str(tmp_path / 'work'), '--keep', str(tmp_path / 'keep'), '--out', str(out)],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out.read_text()
    for label in ('Bicubic', 'MSFFN, 7 frames', 'MSFFN, centre frame ×7', 'MSFFN 7-frame weights, fed the centre',
                  '+ DKSA = DKSAN, 7 frames'):
        assert f'| {label}' in report, label
    assert 'MSFFN uses its neighbours' in report and 'MSFFN temporal gain' in report
    assert (tmp_path / 'report.png').is_file()
    fed = torch.load(tmp_path / 'work' / 'weights' / 'msffn_fed_centre_seed0.pth', weights_only=True)['params']
    own = torch.load(tmp_path / 'work' / 'experiments' / 'video_bench_msffn_seed0' / 'models' / 'net_g_latest.pth',
                     weights_only=True)['params']
    assert fed.keys() == {f'net.{k}' for k in own} and all(torch.equal(fed[f'net.{k}'], v) for k, v in own.items())
    # seed 0 no longer first: its test saves no images, and its kept row answers it without training again, from
    # --keep when --work has lost its rows and weights (another day, another clone)
    shutil.rmtree(tmp_path / 'work' / 'rows')
    shutil.rmtree(tmp_path / 'work' / 'experiments')
    again = subprocess.run([sys.executable, osp.join(REPO_ROOT, 'bench', 'video_bench.py'), '--smoke', '--rows',
                            'bicubic_x4', 'msffn', '--seeds', '1', '0', '--work', str(tmp_path / 'work'), '--keep',
                            str(tmp_path / 'keep'), '--out', str(tmp_path / 'seeds.md')],
                           env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert 'msffn seed 0: reusing' in again.stdout
    assert sorted(p.name for p in (tmp_path / 'work' / 'experiments').iterdir()) == ['video_bench_msffn_seed1']
    assert (tmp_path / 'keep' / 'msffn_seed1.json').is_file()
    # a continuation round (--init) trains from the earlier round's weights; its kept row is still reused once those
    # weights are gone, and a row that would have to train without them is refused, naming the missing file
    cont = [sys.executable, osp.join(REPO_ROOT, 'bench', 'video_bench.py'), '--smoke', '--rows', 'bicubic_x4', 'msffn',
            '--work', str(tmp_path / 'work2'), '--init', str(tmp_path / 'work'), '--keep', str(tmp_path / 'keep2'),
            '--no-picture', '--out', str(tmp_path / 'cont.md'), '--seeds']
    first = subprocess.run(cont + ['1'], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tmp_path / 'keep2' / 'msffn_seed1.json').is_file()
    shutil.rmtree(tmp_path / 'work' / 'experiments')
    reused = subprocess.run(cont + ['1'], env=env, capture_output=True, text=True)
    assert reused.returncode == 0, reused.stderr[-3000:]
    assert 'msffn seed 1: reusing' in reused.stdout
    missing = subprocess.run(cont + ['0'], env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and 'no weights of msffn seed 0' in missing.stderr, missing.stderr[-3000:]


def test_video_bench_picture_rows(tmp_path, monkeypatch):
    """The picture shows bicubic, every pictured network the run has and the target per scale, each tile labelled;
    a scale with fewer tiles is padded white, and one without its images is left out."""
    import cv2
    import numpy as np
    monkeypatch.syspath_prepend(osp.join(REPO_ROOT, 'bench'))
    import video_bench

    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    (tmp_path / 'data' / 'test' / 'GT' / 'clip_00').mkdir(parents=True)
    for frame in range(8):
        cv2.imwrite(str(tmp_path / 'data' / 'test' / 'GT' / 'clip_00' / f'{frame:08d}.png'), gt)
    results = {}
    for row in ('bicubic_x4', 'msffn', 'msffn_small_generated', 'msffn_small_centre_generated', 'bicubic_x16',
                'dksan', 'msffn_centre'):
        results[row] = [{'test': f'{row}_test'}]
        folder = tmp_path / 'work' / 'results' / f'{row}_test' / 'visualization' / 'Vid4' / 'clip_00'
        folder.mkdir(parents=True)
        noisy = np.clip(gt + rng.normal(0, 8, gt.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f'{4:08d}_{row}.png'), noisy)
    out = str(tmp_path / 'picture.png')
    assert video_bench.picture(results, str(tmp_path / 'data'), str(tmp_path / 'work'), out) == 'clip_00, frame 4'
    img = cv2.imread(out)
    band = 24 + 40
    assert img.shape == (2 * band, 5 * 48, 3)  # ×4: bicubic, 3 networks, target; ×16: bicubic, DKSAN, target
    assert np.array_equal(img[24:band, 4 * 48:], gt) and np.array_equal(img[band + 24:, 2 * 48:3 * 48], gt)
    assert (img[band:, 3 * 48:] == 255).all()
    assert not (img[24:band, 48:2 * 48] == 255).all()  # a network's tile, not padding
    del results['msffn_small_centre_generated']
    shutil.rmtree(tmp_path / 'work' / 'results' / 'dksan_test')  # kept from another run without its images
    video_bench.picture(results, str(tmp_path / 'data'), str(tmp_path / 'work'), out)
    assert cv2.imread(out).shape == (band, 4 * 48, 3)
