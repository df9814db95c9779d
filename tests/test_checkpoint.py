"""Crash-safe checkpoints: atomic saves, ``--auto_resume`` past unreadable checkpoints, and ``kill -9`` inside every
kind of save (net_d, net_g with its EMA, the training state) of a real training, two kills in a row and more."""
import os
import re
import signal
import subprocess
import sys
import time
import types
from os import path as osp

import pytest
import torch
import yaml
from test_sdan_pipeline import _lr_by_iter, _options, _train_log, demo_root  # noqa: F401  (demo_root: fixture)

from sdan_basicsr.launch import REPO_ROOT
from sdan_basicsr.utils import checkpoint

KILL_POINTS_DIR = osp.join(REPO_ROOT, 'tests', 'kill_points')


# ------------------------------------------------------------------------------------------- atomic writes, in-process
def test_atomic_save_leaves_the_old_file_or_the_whole_new_one(tmp_path, monkeypatch):
    path = tmp_path / 'net_g_5.pth'
    checkpoint.atomic_save({'params': {'w': torch.ones(3)}}, str(path))
    assert torch.load(path, weights_only=True)['params']['w'].sum() == 3
    (tmp_path / 'plain').write_bytes(b'')  # the mode any new file gets here (umask), as torch.save(obj, path) gave
    assert path.stat().st_mode == (tmp_path / 'plain').stat().st_mode
    (tmp_path / 'plain').unlink()

    real_save = torch.save

    def dies_half_way(obj, f):
        real_save(obj, f)
        f.truncate(f.tell() // 2)
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', dies_half_way)
    with pytest.raises(OSError, match='disk full'):
        checkpoint.atomic_save({'params': {'w': torch.zeros(3)}}, str(path))
    assert torch.load(path, weights_only=True)['params']['w'].sum() == 3
    assert os.listdir(tmp_path) == ['net_g_5.pth']


def _fake_model(tmp_path, net_d=True):
    """What ``save_network`` / ``save_training_state`` read from a BasicSR model, with a real optimizer."""
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    opt = {'network_g': {'type': 'SDAN', 'num_feat': 8}, 'auto_resume': True, 'path': {
        'models': str(tmp_path / 'models'), 'training_states': str(tmp_path / 'training_states')}}
    if net_d:
        opt['network_d'] = {'type': 'VGGStyleDiscriminator'}
    for folder in opt['path'].values():
        os.makedirs(folder)
    return types.SimpleNamespace(opt=opt, optimizers=[optimizer], schedulers=[], net=net,
                                 get_bare_model=lambda n: n, extra_training_state=lambda: {'scaler': {'scale': 2.0}})


def _save_checkpoint(model, iteration):
    """A model's ``save``: its networks first, the state last (the order BasicSR's models use)."""
    if 'network_d' in model.opt:
        checkpoint.save_network(model, model.net, 'net_d', iteration)
    checkpoint.save_network(model, [model.net, model.net], 'net_g', iteration, param_key=['params', 'params_ema'])
    checkpoint.save_training_state(model, 0, iteration)


def test_saved_files_are_basicsr_s_with_the_model_s_extra_state(tmp_path):
    model = _fake_model(tmp_path)
    _save_checkpoint(model, 5)
    state = torch.load(tmp_path / 'training_states' / '5.state', weights_only=True)
    assert set(state) == {'epoch', 'iter', 'optimizers', 'schedulers', 'scaler'} and state['scaler'] == {'scale': 2.0}
    net_g = torch.load(tmp_path / 'models' / 'net_g_5.pth', weights_only=True)
    assert set(net_g) == {'params', 'params_ema', 'network_g'} and set(net_g['params']) == {'weight', 'bias'}
    assert net_g['network_g'] == model.opt['network_g']  # the network's options beside its weights
    assert set(torch.load(tmp_path / 'models' / 'net_d_5.pth', weights_only=True)) == {'params', 'network_d'}


def test_save_retries_like_basicsr(tmp_path, monkeypatch):
    model = _fake_model(tmp_path)
    calls, warnings = [], []

    def fails_twice(obj, path):
        calls.append(path)
        if len(calls) < 3:
            raise OSError('stale NFS handle')
        real_atomic_save(obj, path)

    real_atomic_save = checkpoint.atomic_save
    monkeypatch.setattr(checkpoint, 'atomic_save', fails_twice)
    monkeypatch.setattr(checkpoint.time, 'sleep', lambda s: None)
    monkeypatch.setattr(checkpoint, 'get_root_logger', lambda: types.SimpleNamespace(warning=warnings.append))
    checkpoint.save_training_state(model, 0, 5)
    assert len(calls) == 3 and (tmp_path / 'training_states' / '5.state').is_file()
    assert warnings == [f'Save training state error: stale NFS handle, remaining retry times: {n}' for n in (2, 1)]


def _truncate(path):
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
        f.truncate(size // 2)


@pytest.mark.parametrize('broken', ['10.state', 'net_g_10.pth', 'net_d_10.pth', 'missing net_g_10.pth'])
def test_auto_resume_skips_a_checkpoint_that_does_not_load(tmp_path, capsys, broken):
    model = _fake_model(tmp_path)
    for iteration in (5, 10):
        _save_checkpoint(model, iteration)
    folder = 'training_states' if broken.endswith('.state') else 'models'
    path = tmp_path / folder / broken.split()[-1]
    if broken.startswith('missing'):
        path.unlink()
    else:
        _truncate(path)
    opt = model.opt

    state = checkpoint.load_resume_state(opt)

    assert state['iter'] == 5 and opt['path']['resume_state'].endswith('5.state')
    assert opt['path']['pretrain_network_g'].endswith('net_g_5.pth')
    warning = capsys.readouterr().err
    assert f'checkpoint of iteration 10 does not load ({path}' in warning and 'trying the previous one' in warning
    assert not (tmp_path / 'training_states' / '10.state').exists()
    assert (tmp_path / 'training_states' / '10.state.unreadable').is_file()  # moved aside, never deleted
    if not broken.startswith('missing') and folder == 'models':
        assert not path.exists() and path.with_name(path.name + '.unreadable').is_file()


def test_auto_resume_with_no_loadable_checkpoint_names_the_folder(tmp_path):
    model = _fake_model(tmp_path, net_d=False)
    for iteration in (5, 10):
        _save_checkpoint(model, iteration)
        _truncate(tmp_path / 'training_states' / f'{iteration}.state')
    with pytest.raises(SystemExit, match=re.escape(f'no loadable checkpoint in {tmp_path / "training_states"}')):
        checkpoint.load_resume_state(model.opt)
    assert sorted(os.listdir(tmp_path / 'training_states')) == ['10.state.unreadable', '5.state.unreadable']
    model.opt['auto_resume'] = False
    model.opt['path']['resume_state'] = str(tmp_path / 'training_states' / '10.state.unreadable')
    with pytest.raises(SystemExit, match='cannot resume from .*10.state.unreadable'):
        checkpoint.load_resume_state(model.opt)


# ----------------------------------------------------------------------------- kill -9 inside the saves of a training
#: (file, where the process is paused and killed, iteration the next --auto_resume starts from). Saves every 2
#: iterations; a checkpoint is net_d, then net_g (params + params_ema), then the state.
KILL_POINTS = [
    ('net_d_4.pth', 'write', 2),
    ('net_g_4.pth', 'replace', 2),
    ('4.state', 'write', 2),
    ('6.state', 'replace', 4),
]


def _gan_ema_options(demo, name):
    opt = _options(demo, name, train__total_iter=8)
    opt['network_d'] = {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'num_feat': 4}
    opt['train'].update(ema_decay=0.9, optim_d=dict(opt['train']['optim_g']),
                        gan_opt={'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 0.005},
                        scheduler={'type': 'MultiStepLR', 'milestones': [3, 7], 'gamma': 0.5})
    opt['val'].update(val_freq=100)
    opt['logger'].update(save_checkpoint_freq=2)
    return opt


def _basicsr_train(opt_path, root, output, *extra, pause=None):
    """``python -m basicsr.train`` in ``root``, output to ``output``; with ``pause``, it stops inside that save."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    if pause:
        env.update(PYTHONPATH=KILL_POINTS_DIR, SDAN_TEST_PAUSE=f'{pause[0]}:{pause[1]}',
                   SDAN_TEST_PAUSE_MARKER=str(root / 'paused'))
    with open(output, 'w') as out:
        return subprocess.Popen([sys.executable, '-m', 'basicsr.train', '-opt', opt_path, *extra], env=env,
                                cwd=str(root), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_when_paused(proc, marker, output):
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if not marker.exists():
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f'the run never reached its kill point:\n{output.read_text()[-3000:]}')
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    where = marker.read_text()
    marker.unlink()
    return where


def _finished(proc, output):
    assert proc.wait(timeout=600) == 0, output.read_text()[-5000:]
    return output.read_text()


def _final_files_all_load(exp):
    for folder in ('models', 'training_states'):
        for name in os.listdir(exp / folder):
            if not name.startswith('.') and name.endswith(('.pth', '.state')):
                torch.load(exp / folder / name, weights_only=True)  # raises on a truncated file


def test_kill_inside_every_kind_of_save_then_auto_resume(demo_root, tmp_path):  # noqa: F811
    name = 'sdan_kill'
    opt_path = tmp_path / 'opt.yml'
    opt_path.write_text(yaml.safe_dump(_gan_ema_options(demo_root, name)))
    exp = tmp_path / 'experiments' / name
    resumed_from = []
    for i, (target, when, resume_iter) in enumerate(KILL_POINTS):
        output = tmp_path / f'run{i}.out'
        proc = _basicsr_train(str(opt_path), tmp_path, output, *(['--auto_resume'] if i else []),
                              pause=(target, when))
        where = _kill_when_paused(proc, tmp_path / 'paused', output)
        kind, temporary, size = where.split()
        folder = exp / ('training_states' if target.endswith('.state') else 'models')
        assert kind == when and osp.basename(temporary).startswith(f'.{target}.') and int(size) > 0, where
        assert osp.samefile(osp.dirname(temporary), folder) and osp.getsize(temporary) == int(size)
        assert not (folder / target).exists()  # nothing under the final name until the file is whole
        _final_files_all_load(exp)
        resumed_from.append(resume_iter)

    output = tmp_path / 'last.out'
    out = _finished(_basicsr_train(str(opt_path), tmp_path, output, '--auto_resume'), output)
    assert 'temporary files of interrupted saves' in out
    log = _train_log(tmp_path, name)
    starts = [int(v) for v in re.findall(r'Resuming training from epoch: \d+, iter: (\d+)\.', log)]
    assert starts == resumed_from, starts
    assert torch.load(exp / 'training_states' / '8.state', weights_only=True)['iter'] == 8
    net_g = torch.load(exp / 'models' / 'net_g_8.pth', weights_only=True)
    assert set(net_g) == {'params', 'params_ema', 'network_g'}
    assert net_g['network_g'] == yaml.safe_load(opt_path.read_text())['network_g']  # as trained
    _final_files_all_load(exp)

    reference = _gan_ema_options(demo_root, 'sdan_kill_reference')
    (tmp_path / 'ref.yml').write_text(yaml.safe_dump(reference))
    _finished(_basicsr_train(str(tmp_path / 'ref.yml'), tmp_path, tmp_path / 'ref.out'), tmp_path / 'ref.out')
    last_run = log[log.rindex('Resuming training from'):]
    resumed, straight = _lr_by_iter(last_run), _lr_by_iter(_train_log(tmp_path, 'sdan_kill_reference'))
    assert sorted(resumed) == list(range(resumed_from[-1] + 1, 9))
    assert all(resumed[it] == straight[it] for it in resumed)
