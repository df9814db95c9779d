"""SDAN through BasicSR's real launchers on a demo SR-RAW tree made here: train, validate, test,
resume after kill -9, two-process gloo training and testing, bad options, non-finite loss, baselines."""
import copy
import glob
import os
import re
import signal
import subprocess
import sys
import time
from os import path as osp

import pytest
import torch
import yaml

from sdan_basicsr.launch import REPO_ROOT

TRAIN = osp.join(REPO_ROOT, 'sdan_basicsr', 'train.py')
TEST = osp.join(REPO_ROOT, 'sdan_basicsr', 'test.py')
TINY_NET = {'type': 'SDAN', 'num_in_ch': 1, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 4,
            'in_format': 'bayer'}
PSNR_RE = re.compile(r'# psnr: ([-+0-9.eE]+)')


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    from sdan_basicsr.tools.make_demo import make_demo

    root = tmp_path_factory.mktemp('sdan_demo')
    make_demo(str(root), **TINY_DEMO)
    return root


TINY_DEMO = dict(num_scenes=3, num_test=1, size=192, seed=0)


def _options(demo_root, name, **overrides):
    with open(osp.join(REPO_ROOT, 'options', 'train_sdan_demo.yml'), encoding='utf-8') as f:
        opt = yaml.safe_load(f)
    opt['name'] = name
    train, val = opt['datasets']['train'], opt['datasets']['val']
    train.update(dataroot=str(demo_root / 'train'), gt_size=64, batch_size_per_gpu=2, dataset_enlarge_ratio=4)
    val.update(dataroot=str(demo_root / 'test'))
    opt['network_g'] = dict(TINY_NET)
    opt['train'].update(total_iter=40, scheduler={'type': 'MultiStepLR', 'milestones': [15, 30], 'gamma': 0.5})
    opt['val'].update(val_freq=20)
    opt['val']['metrics']['psnr']['crop_border'] = 8
    opt['val']['metrics']['ssim']['crop_border'] = 8
    opt['logger'].update(print_freq=1, save_checkpoint_freq=10)
    for key, value in overrides.items():
        section, _, sub = key.partition('__')
        if sub:
            opt[section][sub] = value
        else:
            opt[key] = value
    return opt


def _write(tmp_path, opt, filename='opt.yml'):
    path = tmp_path / filename
    path.write_text(yaml.safe_dump(opt))
    return str(path)


def _env(root):
    return dict(os.environ, SDAN_ROOT=str(root), OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')


def _run(args, root, cwd=None, check=True, timeout=600):
    proc = subprocess.run([sys.executable, *args], env=_env(root), cwd=cwd or str(root), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    return proc


def _train_log(root, name):
    logs = sorted(glob.glob(osp.join(str(root), 'experiments', name, f'train_{name}_*.log')), key=osp.getmtime)
    assert logs, f'no training log for {name}'
    return ''.join(open(p, encoding='utf-8').read() for p in logs)


def _lr_by_iter(log):
    found = re.findall(r'iter:\s*([\d,]+), lr:\(([-+0-9.eE]+),', log)
    return {int(it.replace(',', '')): float(lr) for it, lr in found}


def test_train_validate_then_test(demo_root, tmp_path):
    name = 'sdan_pipeline'
    opt = _options(demo_root, name)
    elsewhere = tmp_path / 'cwd'
    elsewhere.mkdir()
    _run([TRAIN, '-opt', _write(tmp_path, opt)], tmp_path, cwd=str(elsewhere))
    exp = tmp_path / 'experiments' / name
    assert (exp / 'models' / 'net_g_40.pth').is_file() and (exp / 'models' / 'net_g_latest.pth').is_file()
    assert (exp / 'training_states' / '40.state').is_file()
    checkpoint = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)
    assert set(checkpoint) == {'params', 'network_g'} and checkpoint['network_g'] == opt['network_g']
    psnrs = [float(v) for v in PSNR_RE.findall(_train_log(tmp_path, name))]
    assert len(psnrs) >= 2 and all(map(lambda v: v == v and abs(v) != float('inf'), psnrs))
    assert psnrs[-1] > psnrs[0], f'validation PSNR did not improve: {psnrs}'

    test_opt = {
        'name': f'{name}_test', 'model_type': 'SDANModel', 'scale': 4, 'num_gpu': 0,
        'datasets': {'test': dict(opt['datasets']['val'])}, 'network_g': dict(TINY_NET),
        'path': {'pretrain_network_g': str(exp / 'models' / 'net_g_latest.pth'), 'strict_load_g': True},
        'val': {'save_img': True, 'suffix': 'sdan', 'metrics': {
            'psnr': {'type': 'calculate_psnr', 'crop_border': 8},
            'lpips': {'type': 'calculate_lpips', 'crop_border': 8, 'better': 'lower'}}},
    }
    _run([TEST, '-opt', _write(tmp_path, test_opt, 'test.yml')], tmp_path, cwd=str(elsewhere))
    log = open(glob.glob(str(tmp_path / 'results' / f'{name}_test' / 'test_*.log'))[0]).read()
    metrics = dict(re.findall(r'# (\w+): ([-+0-9.eE]+)', log))
    assert set(metrics) == {'psnr', 'lpips'} and all(float(v) == float(v) for v in metrics.values())
    assert glob.glob(str(tmp_path / 'results' / f'{name}_test' / 'visualization' / '*' / '*_sdan.png'))


def test_kill_then_auto_resume_matches_uninterrupted_run(demo_root, tmp_path):
    opt = _options(demo_root, 'sdan_resume', train__total_iter=30)
    opt_path = _write(tmp_path, opt)
    states = tmp_path / 'experiments' / 'sdan_resume' / 'training_states'
    proc = subprocess.Popen([sys.executable, TRAIN, '-opt', opt_path], env=_env(tmp_path), cwd=str(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (states / '10.state').exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    # no wait: a state appears under its final name only once it is complete (atomic save)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = sorted(int(p.stem) for p in states.glob('*.state'))
    assert saved and saved[-1] < 30, f'the run was not interrupted: {saved}'

    elsewhere = tmp_path / 'cwd'
    elsewhere.mkdir()
    _run([TRAIN, '-opt', opt_path, '--auto_resume'], tmp_path, cwd=str(elsewhere))
    log = _train_log(tmp_path, 'sdan_resume')
    assert 'Resuming training from epoch: ' in log and f'iter: {saved[-1]}.' in log
    assert (states / '30.state').is_file()
    assert not glob.glob(str(tmp_path / 'experiments' / 'sdan_resume_archived_*'))

    reference = _options(demo_root, 'sdan_reference', train__total_iter=30)
    _run([TRAIN, '-opt', _write(tmp_path, reference, 'ref.yml')], tmp_path)
    resumed, straight = _lr_by_iter(log), _lr_by_iter(_train_log(tmp_path, 'sdan_reference'))
    after = [it for it in straight if it > saved[-1]]
    assert after and all(resumed[it] == straight[it] for it in after)


def test_two_process_gloo_training_and_testing(demo_root, tmp_path):
    opt = _options(demo_root, 'sdan_ddp', train__total_iter=4)
    opt['network_g'] = dict(TINY_NET, cfa_head=True, in_gamma=2.2)  # with buffers, as the option files' SDAN
    opt['logger'].update(save_checkpoint_freq=4)
    opt['val'].update(val_freq=4)
    opt['datasets']['train']['num_worker_per_gpu'] = 0
    torchrun = [osp.join(osp.dirname(sys.executable), 'torchrun'), '--nproc_per_node=2', '--master_port=29731']
    env = _env(tmp_path)
    proc = subprocess.run(torchrun + [TRAIN, '-opt', _write(tmp_path, opt), '--launcher', 'pytorch'], env=env,
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    log = _train_log(tmp_path, 'sdan_ddp')
    assert "'world_size': 2" in log or 'world_size: 2' in log
    assert re.search(r'iter:\s*4, .*l_pix: ', log)
    assert log.index('End of training') < log.rindex('# psnr: ')  # the final validation
    model = tmp_path / 'experiments' / 'sdan_ddp' / 'models' / 'net_g_4.pth'
    assert model.is_file()

    test_opt = {'name': 'sdan_ddp_test', 'model_type': 'SDANModel', 'scale': 4, 'num_gpu': 0,
                'datasets': {'test': dict(opt['datasets']['val'], pairs=[[5, 1], [6, 2], [7, 3]])},
                'network_g': opt['network_g'],
                'path': {'pretrain_network_g': str(model)},
                'val': {'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 8}}}}
    proc = subprocess.run(torchrun[:-1] + ['--master_port=29732', TEST, '-opt', _write(tmp_path, test_opt, 't.yml'),
                                           '--launcher', 'pytorch'],
                          env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    log = open(glob.glob(str(tmp_path / 'results' / 'sdan_ddp_test' / 'test_*.log'))[0]).read()
    assert PSNR_RE.search(log)  # rank 0 tested 2 images, rank 1 one; rank 0 logs all 3, in the set's order:
    assert re.findall(r'Image (\w+): psnr ', log) == ['00003_00005', '00003_00006', '00003_00007']


def test_non_finite_loss_stops_with_the_iteration(demo_root, tmp_path):
    opt = _options(demo_root, 'sdan_nan')
    opt['train']['pixel_opt']['loss_weight'] = float('nan')
    proc = _run([TRAIN, '-opt', _write(tmp_path, opt)], tmp_path, check=False)
    assert proc.returncode != 0
    assert 'non-finite loss at iteration 1' in proc.stderr
    assert not glob.glob(str(tmp_path / 'experiments' / 'sdan_nan' / 'models' / '*.pth'))


@pytest.mark.parametrize('mutate, message', [
    (lambda o: o.__setitem__('trian', o.pop('train')), "unknown key trian (did you mean train?)"),
    (lambda o: o.pop('network_g'), 'missing required key network_g'),
    (lambda o: o['train'].__setitem__('totl_iter', o['train'].pop('total_iter')),
     'missing required key train.total_iter'),
])
def test_bad_option_file_fails_at_start_naming_the_key(demo_root, tmp_path, mutate, message):
    opt = _options(demo_root, 'sdan_bad')
    mutate(opt)
    proc = _run([TRAIN, '-opt', _write(tmp_path, opt)], tmp_path, check=False, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr
    assert not (tmp_path / 'experiments' / 'sdan_bad').exists()


def test_plain_arch_and_gan_train_through_sdan_model(demo_root, tmp_path):
    plain = _options(demo_root, 'msrresnet_srraw', train__total_iter=3)
    plain['network_g'] = {'type': 'MSRResNet', 'num_in_ch': 1, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                          'upscale': 4}
    plain['val'].update(val_freq=3)
    _run([TRAIN, '-opt', _write(tmp_path, plain, 'plain.yml')], tmp_path)
    assert PSNR_RE.search(_train_log(tmp_path, 'msrresnet_srraw'))

    gan = _options(demo_root, 'sdan_gan', train__total_iter=3)
    gan['network_d'] = {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'num_feat': 4}
    gan['train'].update(optim_d=copy.deepcopy(gan['train']['optim_g']),
                        gan_opt={'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 0.005})
    gan['val'].update(val_freq=3)
    _run([TRAIN, '-opt', _write(tmp_path, gan, 'gan.yml')], tmp_path)
    log = _train_log(tmp_path, 'sdan_gan')
    assert re.search(r'l_pix: .*l_g_gan: .*l_d_real: ', log)
    assert (tmp_path / 'experiments' / 'sdan_gan' / 'models' / 'net_d_latest.pth').is_file()


def test_shipped_weights_fine_tune_and_test_through_the_launchers(demo_root, tmp_path):
    """The shipped SDAN as docs/training.md starts from it (``pretrain_network_g`` with its ``noise_input``, the
    datasets' noise profiles, ``ref_noise``), and ``options/test_sdan_pretrained.yml`` as written, on a tiny tree."""
    from sdan_basicsr.weights import SHIPPED_WEIGHTS

    name = 'shipped_finetune'
    small = [f'val:metrics:{m}:crop_border=8' for m in ('psnr', 'ssim', 'lpips')]  # the tree's images are small
    opt = os.path.join(REPO_ROOT, 'options', 'train_sdan_pretrained.yml')
    _run([TRAIN, '-opt', opt, '--force_yml', f'name={name}', f'datasets:train:dataroot={demo_root / "train"}',
          f'datasets:val:dataroot={demo_root / "test"}', 'datasets:train:gt_size=64',
          'datasets:train:batch_size_per_gpu=2', 'datasets:train:dataset_enlarge_ratio=1', 'network_g:noise_input=true',
          'datasets:train:noise_profile=true', 'datasets:val:noise_profile=true', 'train:ref_noise=true',
          f'path:pretrain_network_g={SHIPPED_WEIGHTS}', 'train:total_iter=2', 'train:scheduler:periods=[2]',
          'train:scheduler:restart_weights=[1]', 'val:val_freq=2', 'logger:print_freq=1',
          'logger:save_checkpoint_freq=2', *small], tmp_path)
    log = _train_log(tmp_path, name)
    assert f'Loading SDAN model from {SHIPPED_WEIGHTS}' in log and PSNR_RE.search(log)
    assert (tmp_path / 'experiments' / name / 'models' / 'net_g_2.pth').is_file()

    test_opt = os.path.join(REPO_ROOT, 'options', 'test_sdan_pretrained.yml')
    _run([TEST, '-opt', test_opt, '--force_yml', 'name=shipped_test', f'datasets:test:dataroot={demo_root / "test"}',
          f'path:pretrain_network_g={SHIPPED_WEIGHTS}', *small], tmp_path)  # its path, from the repository's root
    result = open(glob.glob(str(tmp_path / 'results' / 'shipped_test' / 'test_*.log'))[0]).read()
    assert PSNR_RE.search(result) and 'psnr_color_matched' in result
