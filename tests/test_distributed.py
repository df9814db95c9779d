"""Distributed training of the option files' own networks, shrunk (two gloo processes on the CPU): validations mid-run
and at the end give the metrics of one process testing the same checkpoints, every rank exits cleanly, through the
plugin's launcher and through ``torchrun -m basicsr.train``; two processes × batch b train as one process × batch 2b.
"""
import copy
import glob
import os
import re
import subprocess
import sys
from os import path as osp

import pytest
import torch
import yaml
from basicsr.data import build_dataloader, build_dataset
from basicsr.models import build_model
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_sdan_pipeline import TRAIN, demo_root  # noqa: F401

from sdan_basicsr.compat import training_updates_buffers
from sdan_basicsr.launch import REPO_ROOT

TORCHRUN = osp.join(osp.dirname(sys.executable), 'torchrun')
DDP_TRAIN_STEPS = osp.join(osp.dirname(osp.abspath(__file__)), 'ddp_train_steps.py')
#: Validation pairs of the demo tree's test scene: 3 images, so that the two ranks test 2 and 1.
VAL_PAIRS = [[5, 1], [6, 2], [7, 3]]
#: Log line of one training iteration: iteration and everything after the timings (the losses).
ITER_RE = re.compile(r'iter:\s*([\d,]+), lr:\(([^,]+),\)\] \[eta: [^\]]*\] (.*)$', re.M)
#: Two processes × batch b against one process × batch 2b, 3 iterations: the logged losses agree to LOSS_RTOL
#: (relative; measured: at most 1.1e-7, the rounding of DDP's gradient average), the weights to WEIGHT_ATOL
#: (measured: at most 9.3e-7, net_d's; an Adam step moves a weight by up to lr = 2e-4).
LOSS_RTOL = 1e-6
WEIGHT_ATOL = 1e-5
#: What a GAN with EMA adds to an option file: BasicSR's spectral-norm U-Net discriminator (its buffers change in
#: training) and an EMA of net_g, which the validations test.
GAN_EMA = {'network_d': {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'num_feat': 4},
           'train': {'ema_decay': 0.9, 'gan_opt': {'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 0.005}}}


def _shrunk(option_file, demo_root, name, gan_ema=False):  # noqa: F811
    """``options/<option_file>`` with only its sizes and iterations shrunk: 8 features and 1 block, 96-px patches
    of the demo tree, 4 iterations, validations every 2 on 3 images with 4-px borders, to tensorboard."""
    with open(osp.join(REPO_ROOT, 'options', option_file), encoding='utf-8') as f:
        opt = yaml.safe_load(f)
    opt['name'] = name
    opt['network_g'].update(num_feat=8, num_block=1)
    opt['datasets']['train'].update(dataroot=str(demo_root / 'train'), gt_size=96, batch_size_per_gpu=2,
                                    num_worker_per_gpu=0, dataset_enlarge_ratio=4)
    opt['datasets']['val'].update(dataroot=str(demo_root / 'test'), pairs=VAL_PAIRS)
    opt['train']['total_iter'] = 4
    opt['val']['val_freq'] = 2
    for metric in opt['val']['metrics'].values():
        metric['crop_border'] = 4
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=True)
    if gan_ema:
        opt['network_d'] = dict(GAN_EMA['network_d'])
        opt['train'].update(copy.deepcopy(GAN_EMA['train']), optim_d=copy.deepcopy(opt['train']['optim_g']))
    return opt


def _torchrun(args, cwd, port, **env):
    environ = {k: v for k, v in os.environ.items() if k != 'SDAN_ROOT'}
    environ.update(OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore', **env)
    command = [TORCHRUN, '--nproc_per_node=2', f'--master_port={port}', *args]
    return subprocess.run(command, env=environ, cwd=str(cwd), capture_output=True, text=True, timeout=300)


def _tb_metrics(folder):
    """{metric: {iteration: value}} of the validations a run wrote to tensorboard (float32)."""
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag.rsplit('/', 1)[-1]: {e.step: e.value for e in events.Scalars(tag)}
            for tag in events.Tags()['scalars'] if tag.startswith('metrics/')}


def _one_process_metrics(opt, checkpoints, param_key):
    """The validation metrics of each checkpoint tested by one process (``nondist_validation``) on ``opt``'s
    validation set, in one thread as the runs' processes."""
    test_opt = {'name': f"{opt['name']}_one_process", 'model_type': opt['model_type'], 'scale': opt['scale'],
                'num_gpu': 0, 'is_train': False, 'dist': False, 'rank': 0, 'world_size': 1,
                'network_g': opt['network_g'], 'path': {}, 'val': opt['val']}
    model = build_model(test_opt)
    dataset_opt = dict(opt['datasets']['val'], phase='val')
    loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = []
        for checkpoint in checkpoints:
            model.load_network(model.net_g, str(checkpoint), strict=True, param_key=param_key)
            model.nondist_validation(loader, 0, None, False)
            metrics.append(dict(model.metric_results))
        return metrics
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize('option_file, launcher, gan_ema, port', [
    ('train_sdan_raw.yml', 'plugin', False, 29751),
    ('train_sdan_raw.yml', 'basicsr', False, 29752),
    ('train_sdan_demo.yml', 'plugin', False, 29753),
    ('train_sdan_raw.yml', 'plugin', True, 29754),
], ids=['raw', 'raw-basicsr.train', 'demo', 'raw-gan-ema'])
@pytest.mark.slow
def test_two_process_run_validates_as_one_process(demo_root, tmp_path, option_file, launcher,  # noqa: F811
                                                  gan_ema, port):
    name = 'sdan_dist'
    opt = _shrunk(option_file, demo_root, name, gan_ema)
    assert opt['network_g']['cfa_head']  # buffers: the CFA pattern (and the demo's input gamma)
    opt_path = tmp_path / 'train.yml'
    opt_path.write_text(yaml.safe_dump(opt))
    if launcher == 'plugin':
        proc = _torchrun([TRAIN, '-opt', str(opt_path), '--launcher', 'pytorch'], tmp_path, port,
                         SDAN_ROOT=str(tmp_path))
    else:
        proc = _torchrun(['-m', 'basicsr.train', '-opt', str(opt_path), '--launcher', 'pytorch'], tmp_path, port)
    assert proc.returncode == 0, proc.stderr[-5000:]  # torchrun: every rank exited 0

    log = open(glob.glob(str(tmp_path / 'experiments' / name / f'train_{name}_*.log'))[0], encoding='utf-8').read()
    assert "'world_size': 2" in log or 'world_size: 2' in log
    assert [it for it, _, _ in ITER_RE.findall(log)] == ['1', '2', '3', '4']
    assert log.index('End of training') < log.rindex('Validation ')  # the final validation, after the save
    metrics = _tb_metrics(tmp_path / 'tb_logger' / name)
    assert set(metrics) == set(opt['val']['metrics'])
    steps = sorted(next(iter(metrics.values())))
    assert steps[:2] == [2, 4]  # mid-run at 2 (training goes on), at 4, then the final one
    models = tmp_path / 'experiments' / name / 'models'
    at_2, latest = _one_process_metrics(opt, [models / 'net_g_2.pth', models / 'net_g_latest.pth'],
                                        'params_ema' if gan_ema else 'params')
    for step in steps:
        for metric, value in (at_2 if step == 2 else latest).items():
            assert metrics[metric][step] == pytest.approx(value, rel=1e-6), (metric, step)


def _train_steps(args, out, **env):
    environ = {k: v for k, v in os.environ.items() if k != 'SDAN_ROOT'}
    environ.update(OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore', **env)
    proc = subprocess.run(args + [str(out)], env=environ, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize('gan_ema, port', [(False, 29755), (True, 29756)], ids=['raw', 'raw-gan-ema'])
@pytest.mark.slow
def test_two_processes_train_as_one_process_with_twice_the_batch(demo_root, tmp_path, gan_ema, port):  # noqa: F811
    opt = _shrunk('train_sdan_raw.yml', demo_root, 'sdan_ddp_steps', gan_ema)
    opt.update(num_gpu=0, is_train=True, path={'pretrain_network_g': None, 'strict_load_g': True})
    dataset_opt = dict(opt['datasets']['train'], phase='train')
    dataset = build_dataset(dataset_opt)
    items = [dataset[i % len(dataset)] for i in range(12)]
    batches = [{key: torch.stack([item[key] for item in items[i:i + 4]]) for key in ('lq', 'gt', 'lq_rgb', 'wb')}
               for i in range(0, len(items), 4)]  # 3 iterations of 4 items: 2 per rank, or 4 in one process
    torch.save(batches, tmp_path / 'batches.pt')
    opt_path = tmp_path / 'opt.yml'
    opt_path.write_text(yaml.safe_dump(opt))
    args = [DDP_TRAIN_STEPS, str(opt_path), str(tmp_path / 'batches.pt')]
    one = _train_steps([sys.executable, *args], tmp_path / 'one.pt')
    two = _train_steps([TORCHRUN, '--nproc_per_node=2', f'--master_port={port}', *args], tmp_path / 'two.pt')

    assert len(one['log']) == len(two['log']) == 3 and one['log'][0].keys() == two['log'][0].keys()
    for logged_one, logged_two in zip(one['log'], two['log']):
        for key, value in logged_one.items():
            assert logged_two[key] == pytest.approx(value, rel=LOSS_RTOL), key
    nets = ('net_g', 'net_g_ema', 'net_d') if gan_ema else ('net_g', )
    assert set(one) == set(two) == {'log', 'broadcast_buffers', *nets}
    for net in nets:
        for key, weight in one[net].items():
            torch.testing.assert_close(two[net][key], weight, rtol=0, atol=WEIGHT_ATOL, msg=f'{net}.{key}')
    # SDAN's buffers are constants; the discriminator's spectral norm changes its own at every training forward
    assert two['broadcast_buffers'] == ({'net_g': False, 'net_d': True} if gan_ema else {'net_g': False})


def test_only_networks_whose_training_changes_buffers_sync_them_at_every_forward():
    from basicsr.archs.discriminator_arch import UNetDiscriminatorSN, VGGStyleDiscriminator

    from sdan_basicsr.archs.sdan_arch import SDAN

    assert not training_updates_buffers(SDAN(num_feat=8, num_block=1, cfa_head=True, in_gamma=2.2))
    assert training_updates_buffers(VGGStyleDiscriminator(3, 4))
    assert training_updates_buffers(UNetDiscriminatorSN(3, 4))
    assert not training_updates_buffers(torch.nn.InstanceNorm2d(4))
    assert training_updates_buffers(torch.nn.utils.parametrizations.spectral_norm(torch.nn.Linear(2, 2)))
