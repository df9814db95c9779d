"""Each basicsr 1.4.2 compatibility fix: the failure without it, and the behaviour with it."""
import argparse
import collections
import importlib.util
import os
import subprocess
import sys
import textwrap
import types

import basicsr.train
import pytest
import torch
from basicsr.utils import dist_util

from sdan_basicsr import compat

PY = sys.executable
#: A subprocess without the import hook of ``sdan_basicsr_autoload``: ``import basicsr`` is basicsr's own.
NO_HOOK = dict(os.environ, SDAN_BASICSR_AUTOLOAD='0')


def _original(module, name):
    """basicsr's own (unpatched) function, from a fresh copy of its module."""
    spec = importlib.util.spec_from_file_location(f'_original_{module.__name__}', module.__file__)
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    return getattr(fresh, name)


def test_row1_basicsr_imports_only_with_the_alias():
    plain = subprocess.run([PY, '-c', 'import basicsr'], capture_output=True, text=True, env=NO_HOOK)
    assert plain.returncode != 0 and 'functional_tensor' in plain.stderr
    fixed = subprocess.run([PY, '-c', 'import sdan_basicsr, basicsr.data.degradations'], capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stderr


def _training_state(tmp_path, iteration=7):
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    from basicsr.models.lr_scheduler import MultiStepRestartLR
    scheduler = MultiStepRestartLR(optimizer, milestones=[5, 10])
    states = tmp_path / 'experiments' / 'exp' / 'training_states'
    states.mkdir(parents=True)
    for it in (iteration - 2, iteration):
        torch.save({'epoch': 0, 'iter': it, 'optimizers': [optimizer.state_dict()],
                    'schedulers': [scheduler.state_dict()]}, states / f'{it}.state')
    return {'auto_resume': True, 'name': 'exp', 'path': {'training_states': str(states)}}


def test_rows2_3_7_auto_resume_on_cpu_from_another_cwd(tmp_path, monkeypatch):
    opt = _training_state(tmp_path)
    monkeypatch.chdir(tmp_path.parent)  # not the root that holds experiments/
    # basicsr's own: looks in ./experiments/<name> only, so it silently starts from scratch
    assert _original(basicsr.train, 'load_resume_state')(dict(opt, path=dict(opt['path']))) is None
    assert basicsr.train.load_resume_state is compat.load_resume_state
    state = compat.load_resume_state(opt)
    assert state['iter'] == 7 and opt['path']['resume_state'].endswith('7.state')
    assert isinstance(state['schedulers'][0]['milestones'], collections.Counter)


def test_row2_original_needs_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip('the failure only shows without a GPU')
    opt = _training_state(tmp_path)
    monkeypatched = dict(opt, auto_resume=False, path={'resume_state': os.path.join(opt['path']['training_states'],
                                                                                     '7.state')})
    with pytest.raises((RuntimeError, AssertionError)):
        _original(basicsr.train, 'load_resume_state')(monkeypatched)


def test_row7_weights_only_stays_on(tmp_path):
    path = tmp_path / 'evil.state'
    torch.save({'iter': 1, 'namespace': argparse.Namespace(a=1)}, path)
    opt = {'auto_resume': False, 'path': {'resume_state': str(path)}}
    with pytest.raises(SystemExit, match='Weights only load failed'):
        compat.load_resume_state(opt)


_DIST_SCRIPT = textwrap.dedent('''
    import os, sys, types, torch
    os.environ.update(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1', MASTER_PORT=sys.argv[2])
    if sys.argv[1] == 'fixed':
        import sdan_basicsr
    else:
        sys.modules['torchvision.transforms.functional_tensor'] = __import__('torchvision.transforms.functional',
                                                                             fromlist=['x'])
    from basicsr.utils.dist_util import init_dist
    from basicsr.models.base_model import BaseModel
    init_dist('pytorch')
    fake = types.SimpleNamespace(device=torch.device('cpu'), opt={'dist': True, 'num_gpu': 0})
    net = BaseModel.model_to_device(fake, torch.nn.Linear(2, 2))
    print('backend', torch.distributed.get_backend(), type(net).__name__)
''')


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_rows4_5_distributed_init_and_ddp_on_cpu(tmp_path):
    script = tmp_path / 'dist.py'
    script.write_text(_DIST_SCRIPT)
    plain = subprocess.run([PY, str(script), 'plain', '29611'], capture_output=True, text=True, timeout=120,
                           env=NO_HOOK)
    assert plain.returncode != 0 and 'ZeroDivisionError' in plain.stderr
    fixed = subprocess.run([PY, str(script), 'fixed', '29612'], capture_output=True, text=True, timeout=120)
    assert fixed.returncode == 0, fixed.stderr
    assert 'backend gloo DistributedDataParallel' in fixed.stdout


def test_row5_original_ddp_wrap_needs_a_gpu():
    if torch.cuda.is_available():
        pytest.skip('the failure only shows without a GPU')
    from basicsr.models import base_model
    fake = types.SimpleNamespace(device=torch.device('cpu'), opt={'dist': True})
    with pytest.raises(RuntimeError):
        _original(base_model, 'BaseModel').model_to_device(fake, torch.nn.Linear(2, 2))


def test_row6_local_rank_argument_is_stripped(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['train.py', '--local-rank=1', '-opt', 'x.yml', '--local_rank', '0'])
    compat._strip_local_rank_argv()
    assert sys.argv == ['train.py', '-opt', 'x.yml']


def test_row13_forced_manual_seed_seeds_the_run(tmp_path, monkeypatch):
    from basicsr.utils import options

    opt_file = tmp_path / 'opt.yml'
    opt_file.write_text('name: seed_check\nmodel_type: SDANModel\nscale: 4\nnum_gpu: 0\nmanual_seed: 0\n'
                        'datasets: {}\npath: {}\n')
    monkeypatch.setenv('SDAN_ROOT', str(tmp_path))
    draws = {}
    for forced in ([], ['--force_yml', 'manual_seed=7']):
        monkeypatch.setattr(sys, 'argv', ['test.py', '-opt', str(opt_file), *forced])
        opt, _ = options.parse_options(str(tmp_path), is_train=False)
        draws[opt['manual_seed']] = torch.rand(3)
    assert set(draws) == {0, 7}
    for seed, drawn in draws.items():
        torch.manual_seed(seed)
        assert torch.equal(drawn, torch.rand(3)), f'manual_seed {seed} did not seed the run'

    assert dist_util._init_dist_pytorch is compat._init_dist_pytorch
    assert dist_util._init_dist_slurm is compat._init_dist_slurm
