"""BasicSR's own launchers run the plugin once it is installed: ``python -m basicsr.train`` / ``basicsr.test``,
``torchrun -m basicsr.train``, ``python basicsr/train.py`` in a checkout, through the import hook
``sdan_basicsr_autoload`` (and not without it); every option file passes BasicSR's own ``parse_options``."""
import glob
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from os import path as osp

import basicsr
import basicsr.utils.options
import pytest
import yaml
from test_sdan_pipeline import PSNR_RE, TEST, TINY_NET, TRAIN, _options, _train_log, demo_root  # noqa: F401

from sdan_basicsr.launch import REPO_ROOT

OPTION_FILES = sorted(glob.glob(osp.join(REPO_ROOT, 'options', '**', '*.yml'), recursive=True))
SITE_PACKAGES = sysconfig.get_path('purelib')
TORCHRUN = osp.join(osp.dirname(sys.executable), 'torchrun')
#: Log line of one training iteration: iteration, learning rate, losses.
ITER_RE = re.compile(r'iter:\s*([\d,]+), lr:\(([^,]+),\)\] \[eta: [^\]]*\] (.*)$', re.M)
METRIC_RE = re.compile(r'# (\w+): ([-+0-9.eE]+)')


def _launch(args, cwd, check=True, **env):
    environ = {k: v for k, v in os.environ.items() if k != 'SDAN_ROOT'}
    environ.update(OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore', **env)
    proc = subprocess.run(args, env=environ, cwd=str(cwd), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    return proc


def _folder(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def _tiny(demo, name, total_iter=4, **logger):
    opt = _options(demo, name, train__total_iter=total_iter)
    opt['val'].update(val_freq=2)
    opt['logger'].update({'save_checkpoint_freq': total_iter, **logger})
    opt['datasets']['train']['num_worker_per_gpu'] = 0
    return opt


def _write(path, opt):
    path.write_text(yaml.safe_dump(opt))
    return str(path)


def _test_options(name, model):
    return {'name': name, 'model_type': 'SDANModel', 'scale': 4, 'num_gpu': 0, 'network_g': dict(TINY_NET),
            'datasets': {'test': None}, 'path': {'pretrain_network_g': str(model), 'strict_load_g': True},
            'val': {'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 8},
                                                   'ssim': {'type': 'calculate_ssim', 'crop_border': 8}}}}


@pytest.mark.parametrize('path', OPTION_FILES, ids=lambda p: osp.relpath(p, osp.join(REPO_ROOT, 'options')))
def test_every_option_file_passes_basicsr_parse_options(path, tmp_path, monkeypatch):
    parse_options = basicsr.utils.options.parse_options.basicsr_parse_options  # BasicSR's own, unwrapped
    is_train = osp.basename(path).startswith('train_')
    monkeypatch.setattr(sys, 'argv', ['train.py' if is_train else 'test.py', '-opt', path])
    opt, _ = parse_options(str(tmp_path), is_train=is_train)
    assert opt['is_train'] == is_train and not opt['dist'] and opt['model_type']
    assert opt['path']['experiments_root' if is_train else 'results_root'].startswith(str(tmp_path))


def test_the_package_installs_the_hook_into_site_packages():
    pth = osp.join(SITE_PACKAGES, 'sdan_basicsr_autoload.pth')
    assert open(pth).read().startswith('import sdan_basicsr_autoload;')
    assert 'sdan_basicsr_autoload.pth' in {f.name for f in importlib.metadata.files('sdan-basicsr')}
    probe = ('import sys, basicsr; from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, '
             'LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY; import sdan_basicsr.compat as c; '
             "print(all(n in r for r, n in ((ARCH_REGISTRY, 'SDAN'), (DATASET_REGISTRY, 'SRRAWPairedDataset'), "
             "(LOSS_REGISTRY, 'MaskedDualL1Loss'), (MODEL_REGISTRY, 'SDANModel'), "
             "(METRIC_REGISTRY, 'calculate_lpips'))), basicsr.train.load_resume_state is c.load_resume_state)")
    assert _launch([sys.executable, '-c', probe], REPO_ROOT).stdout.split() == ['True', 'True']
    off = _launch([sys.executable, '-c', 'import basicsr'], REPO_ROOT, check=False, SDAN_BASICSR_AUTOLOAD='0')
    assert off.returncode != 0 and "No module named 'torchvision.transforms.functional_tensor'" in off.stderr


def test_python_m_basicsr_train_and_test_match_the_plugin_launchers(demo_root, tmp_path):  # noqa: F811
    name = 'sdan_launchers'
    opt = _write(tmp_path / 'train.yml', _tiny(demo_root, name))
    plugin, here = _folder(tmp_path / 'plugin'), _folder(tmp_path / 'cwd')
    _launch([sys.executable, TRAIN, '-opt', opt], tmp_path, SDAN_ROOT=str(plugin))
    _launch([sys.executable, '-m', 'basicsr.train', '-opt', opt], here)
    logs = [_train_log(root, name) for root in (plugin, here)]
    iterations = [ITER_RE.findall(log) for log in logs]
    assert [it for it, _, _ in iterations[0]] == ['1', '2', '3', '4'] and 'l_pix: ' in iterations[0][0][2]
    assert iterations[0] == iterations[1]
    assert METRIC_RE.findall(logs[0]) == METRIC_RE.findall(logs[1]) and PSNR_RE.search(logs[1])

    test_opt = _test_options(f'{name}_test', here / 'experiments' / name / 'models' / 'net_g_latest.pth')
    test_opt['datasets']['test'] = dict(_options(demo_root, name)['datasets']['val'])
    test_yml = _write(tmp_path / 'test.yml', test_opt)
    _launch([sys.executable, TEST, '-opt', test_yml], tmp_path, SDAN_ROOT=str(plugin))
    _launch([sys.executable, '-m', 'basicsr.test', '-opt', test_yml], here)
    tests = [open(glob.glob(str(root / 'results' / f'{name}_test' / 'test_*.log'))[0]).read()
             for root in (plugin, here)]
    assert METRIC_RE.findall(tests[0]) == METRIC_RE.findall(tests[1]) and len(METRIC_RE.findall(tests[1])) == 2
    assert not any(osp.exists(osp.join(SITE_PACKAGES, d)) for d in ('experiments', 'results', 'tb_logger'))


def test_without_the_hook_basicsr_train_fails(demo_root, tmp_path):  # noqa: F811
    opt = _write(tmp_path / 'train.yml', _tiny(demo_root, 'sdan_no_hook'))
    proc = _launch([sys.executable, '-m', 'basicsr.train', '-opt', opt], tmp_path, check=False,
                   SDAN_BASICSR_AUTOLOAD='0')
    assert proc.returncode != 0 and "No module named 'torchvision.transforms.functional_tensor'" in proc.stderr
    assert not (tmp_path / 'experiments').exists()


def test_torchrun_m_basicsr_train_two_processes_and_auto_resume(demo_root, tmp_path):  # noqa: F811
    name = 'sdan_torchrun'
    opt = _tiny(demo_root, name, save_checkpoint_freq=2)
    opt['val'].update(val_freq=4)
    opt_path = _write(tmp_path / 'train.yml', opt)
    launch = [TORCHRUN, '--nproc_per_node=2', '--master_port=29741', '-m', 'basicsr.train', '-opt', opt_path,
              '--launcher', 'pytorch']
    _launch(launch, tmp_path)
    log = _train_log(tmp_path, name)
    assert "'world_size': 2" in log or 'world_size: 2' in log
    states = tmp_path / 'experiments' / name / 'training_states'
    assert sorted(os.listdir(states)) == ['2.state', '4.state']

    with open(states / '4.state', 'r+b') as f:  # what a kill during BasicSR's own torch.save left
        f.truncate(os.path.getsize(states / '4.state') // 2)
    resumed = _launch(launch[:2] + ['--master_port=29742'] + launch[3:] + ['--auto_resume'], tmp_path)
    assert resumed.stderr.count('the checkpoint of iteration 4 does not load') == 1  # rank 0 only
    assert 'Resuming training from epoch: 0, iter: 2.' in _train_log(tmp_path, name)
    assert sorted(os.listdir(states)) == ['2.state', '4.state', '4.state.unreadable']


def test_basicsr_checkout_train_script_writes_to_the_checkout(demo_root, tmp_path):  # noqa: F811
    checkout = _folder(tmp_path / 'BasicSR')
    shutil.copytree(osp.dirname(basicsr.__file__), checkout / 'basicsr', ignore=shutil.ignore_patterns('__pycache__'))
    name = 'sdan_checkout'
    opt = _write(tmp_path / 'train.yml', _tiny(demo_root, name, total_iter=2))
    script = str(checkout / 'basicsr' / 'train.py')
    _launch([sys.executable, script, '-opt', opt], _folder(tmp_path / 'a'), PYTHONPATH=str(checkout))
    models = checkout / 'experiments' / name / 'models'
    assert (models / 'net_g_2.pth').is_file() and not (tmp_path / 'a' / 'experiments').exists()
    assert f"root_path: {checkout}" in _train_log(checkout, name)
    _launch([sys.executable, script, '-opt', opt, '--auto_resume'], _folder(tmp_path / 'b'), PYTHONPATH=str(checkout))
    assert 'Resuming training from epoch: 0, iter: 2.' in _train_log(checkout, name)
    assert not glob.glob(str(checkout / 'experiments' / f'{name}_archived_*'))
