"""Fixes that make basicsr 1.4.2 run on today's torch/torchvision, on CPU and GPU alike, and from its own launchers.

Rows 1-10 are the compatibility table of the project's design notes; row 11 (``launch_root``) and row 12
(``_launcher_parse_options``) let ``python -m basicsr.train`` / ``python basicsr/train.py`` run the plugin; row 13
makes ``--force_yml manual_seed=N`` seed the run; row 14 (``_model_to_device``) leaves constant buffers out of
``DistributedDataParallel``'s broadcast at every forward; row 15 (``_destroy_at_exit``) ends the process group before
the interpreter does. ``apply()``
also installs the crash-safe saves of ``sdan_basicsr/utils/checkpoint.py``. It is idempotent and must run before the
first ``import basicsr``: ``import sdan_basicsr`` does it, and so does the import hook ``sdan_basicsr_autoload`` when
basicsr is imported first.
"""
import collections
import functools
import os
import site
import sys
import sysconfig
from os import path as osp

_APPLIED = False

#: Row 7: the only non-container globals in the training states the plugin saves
#: (``MultiStepRestartLR`` keeps its milestones in a ``Counter``); allow-listed for
#: ``torch.load(weights_only=True)``, which stays on for every file.
SAFE_GLOBALS = (collections.Counter,)


def _alias_functional_tensor() -> None:
    """Row 1: ``torchvision.transforms.functional_tensor`` was removed in torchvision 0.17."""
    if 'torchvision.transforms.functional_tensor' in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
    except ImportError:
        import torchvision.transforms.functional as functional

        sys.modules['torchvision.transforms.functional_tensor'] = functional


def _strip_local_rank_argv() -> None:
    """Row 6: ``torch.distributed.launch`` passes ``--local-rank=N``, which basicsr's argparse rejects."""
    argv, skip = [], False
    for arg in sys.argv:
        if skip:
            skip = False
            continue
        if arg.startswith('--local-rank') or arg.startswith('--local_rank'):
            skip = '=' not in arg
            continue
        argv.append(arg)
    sys.argv[:] = argv


def launch_root(root_path: str) -> str:
    """Row 11: where ``experiments/``, ``results/`` and ``tb_logger/`` go for ``train_pipeline(root_path)``.

    BasicSR's launchers pass the folder above their own file: a BasicSR checkout (``python basicsr/train.py``)
    keeps it; an installed basicsr (``python -m basicsr.train``) would write into site-packages, so the current
    directory is used instead.
    """
    site_dirs = {sysconfig.get_path('purelib'), sysconfig.get_path('platlib'), *site.getsitepackages()}
    if site.ENABLE_USER_SITE:
        site_dirs.add(site.getusersitepackages())
    return os.getcwd() if osp.realpath(root_path) in {osp.realpath(d) for d in site_dirs if d} else root_path


def load_resume_state(opt: dict):
    """Rows 2, 3, 7 and 11: replacement of ``basicsr.train.load_resume_state``.

    ``train_pipeline`` calls it right after ``opt['root_path'] = root_path``, so ``opt['root_path']`` (the
    ``tb_logger/`` folder) is moved out of site-packages here; the rest is
    :func:`sdan_basicsr.utils.checkpoint.load_resume_state` (crash-safe, CPU-loaded, from
    ``opt['path']['training_states']`` whatever the cwd).
    """
    from sdan_basicsr.utils.checkpoint import load_resume_state as crash_safe_load_resume_state

    if 'root_path' in opt:
        opt['root_path'] = launch_root(opt['root_path'])
    return crash_safe_load_resume_state(opt)


def _is_basicsr_train_script(module) -> bool:
    """``basicsr/train.py`` run as ``__main__`` (``python -m basicsr.train`` or ``python basicsr/train.py``)."""
    filename = getattr(module, '__file__', None) or ''
    return (osp.basename(filename) == 'train.py' and osp.basename(osp.dirname(filename)) == 'basicsr'
            and callable(getattr(module, 'load_resume_state', None)))


def _launcher_parse_options(parse_options):
    """Rows 11, 12 and 13: ``basicsr.utils.options.parse_options`` for every launcher.

    Row 12: run as ``__main__``, ``basicsr/train.py`` is a second copy of the module whose
    ``load_resume_state`` was replaced; ``train_pipeline`` calls ``parse_options`` first and looks
    ``load_resume_state`` up afterwards, so it is replaced here in that copy too.

    Row 13: basicsr seeds the random generators *before* it applies ``--force_yml``, so a forced
    ``manual_seed`` was logged as the run's seed but never used. The generators are seeded again
    with the final ``manual_seed`` (no random number is drawn in between, so an unforced seed gives
    the same state as before).
    """

    @functools.wraps(parse_options)
    def launcher_parse_options(root_path, is_train=True):
        from basicsr.utils import set_random_seed

        main = sys.modules.get('__main__')
        if is_train and _is_basicsr_train_script(main):
            main.load_resume_state = load_resume_state
        opt, args = parse_options(launch_root(root_path), is_train)
        set_random_seed(opt['manual_seed'] + opt['rank'])
        return opt, args

    launcher_parse_options.basicsr_parse_options = parse_options
    return launcher_parse_options


def _init_dist_pytorch(backend: str = 'nccl', **kwargs) -> None:
    """Row 4: with CUDA, bind the process to ``LOCAL_RANK``'s GPU and keep ``backend``; else use gloo."""
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        local_rank = int(os.environ.get('LOCAL_RANK', os.environ['RANK']))
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    else:
        backend = 'gloo'
    dist.init_process_group(backend=backend, **kwargs)
    _destroy_at_exit()


def _destroy_at_exit() -> None:
    """Row 15: destroy the process group at exit, while the interpreter is whole. basicsr never does; left to the
    interpreter's finalization, Gloo's worker threads may still hold tensors whose release needs the GIL, and a rank
    ends in SIGABRT ("terminate called without an active exception") after a run that succeeded, which fails the
    whole ``torchrun`` (pytorch/pytorch#190489). Nothing happens where the group was destroyed already."""
    import atexit

    import torch.distributed as dist

    def destroy() -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    atexit.register(destroy)


def _init_dist_slurm(backend: str = 'nccl', port=None) -> None:
    """Row 4 for ``--launcher slurm``: same environment as basicsr, gloo when there is no GPU."""
    import subprocess

    import torch
    import torch.distributed as dist

    proc_id = int(os.environ['SLURM_PROCID'])
    ntasks = int(os.environ['SLURM_NTASKS'])
    node_list = os.environ['SLURM_NODELIST']
    if torch.cuda.is_available():
        torch.cuda.set_device(proc_id % torch.cuda.device_count())
    else:
        backend = 'gloo'
    addr = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ['MASTER_ADDR'] = addr
    os.environ['WORLD_SIZE'] = str(ntasks)
    os.environ['LOCAL_RANK'] = str(proc_id % max(torch.cuda.device_count(), 1))
    os.environ['RANK'] = str(proc_id)
    dist.init_process_group(backend=backend)
    _destroy_at_exit()


def training_updates_buffers(net) -> bool:
    """Whether a forward of ``net`` in training mode changes one of its buffers.

    Only two kinds of layer do: normalization layers that track running statistics (BatchNorm, …) and spectral
    normalization (its power-iteration vectors). Every other buffer (SDAN's CFA ``pattern`` and ``input_gamma``,
    the mean and std of BasicSR's VGG, …) is a constant, equal on every rank once ``DistributedDataParallel``
    has broadcast rank 0's at its construction.
    """
    from torch.nn.modules.batchnorm import _NormBase
    from torch.nn.utils.parametrizations import _SpectralNorm
    from torch.nn.utils.spectral_norm import SpectralNorm

    for module in net.modules():
        if (isinstance(module, _NormBase) and module.track_running_stats) or isinstance(module, _SpectralNorm):
            return True
        if any(isinstance(hook, SpectralNorm) for hook in module._forward_pre_hooks.values()):
            return True
    return False


def _model_to_device(self, net):
    """Rows 5 and 14: basicsr's ``BaseModel.model_to_device`` for the CPU and for networks with constant buffers.

    Row 5: ``DistributedDataParallel`` with ``device_ids=None`` when the model lives on the CPU.

    Row 14: ``DistributedDataParallel`` broadcasts rank 0's buffers at the start of every forward, a collective
    that each rank must match. Only a network whose training forward changes its buffers
    (:func:`training_updates_buffers`: BatchNorm's statistics, a discriminator's spectral norm) needs that; for
    the others (SDAN's, whose buffers are constants) it is turned off, after the broadcast at construction.
    """
    import torch
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    net = net.to(self.device)
    if self.opt['dist']:
        find_unused_parameters = self.opt.get('find_unused_parameters', False)
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        updates_buffers = training_updates_buffers(net)
        net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
        net.broadcast_buffers = updates_buffers  # after the construction, which always broadcasts them once
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net


def _load_network(self, net, load_path, strict=True, param_key='params'):
    """Row 7: basicsr's ``BaseModel.load_network`` with an explicit ``weights_only=True`` load."""
    import torch
    from basicsr.utils import get_root_logger

    logger = get_root_logger()
    net = self.get_bare_model(net)
    load_net = torch.load(load_path, map_location='cpu', weights_only=True)
    if param_key is not None:
        if param_key not in load_net and 'params' in load_net:
            param_key = 'params'
            logger.info('Loading: params_ema does not exist, use params.')
        if param_key not in load_net:
            raise KeyError(f'{load_path} has no key {param_key!r}; it holds {sorted(load_net)}')
        load_net = load_net[param_key]
    logger.info(f'Loading {net.__class__.__name__} model from {load_path}, with param key: [{param_key}].')
    load_net = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in load_net.items()}
    self._print_different_keys_loading(net, load_net, strict)
    net.load_state_dict(load_net, strict=strict)


def _video_validation_on_model_device(video_base_model) -> None:
    """Row 8: ``VideoBaseModel.dist_validation`` allocates its metric table with ``device='cuda'``.

    Replaces the method by a wrapper that allocates the table (same shape, ``float32``) on the
    model's device before the first validation; basicsr's method then finds it and keeps it.
    """
    import torch

    dist_validation = video_base_model.dist_validation

    def device_aware_dist_validation(self, dataloader, current_iter, tb_logger, save_img):
        metrics = self.opt['val'].get('metrics')
        if metrics is not None and not hasattr(self, 'metric_results'):
            frames = collections.Counter(dataloader.dataset.data_info['folder'])
            self.metric_results = {
                folder: torch.zeros(num, len(metrics), dtype=torch.float32, device=self.device)
                for folder, num in frames.items()
            }
        dist_validation(self, dataloader, current_iter, tb_logger, save_img)

    video_base_model.dist_validation = device_aware_dist_validation


def apply() -> None:
    """Apply every fix once. Safe to call many times."""
    global _APPLIED
    if _APPLIED:
        return
    _alias_functional_tensor()
    _strip_local_rank_argv()

    import torch

    torch.serialization.add_safe_globals(list(SAFE_GLOBALS))

    import basicsr.test
    import basicsr.train
    import basicsr.utils.dist_util as dist_util
    import basicsr.utils.options as options
    from basicsr.models.base_model import BaseModel

    from sdan_basicsr.utils import checkpoint

    basicsr.train.load_resume_state = load_resume_state
    options.parse_options = _launcher_parse_options(options.parse_options)
    basicsr.train.parse_options = basicsr.test.parse_options = options.parse_options
    BaseModel.save_network = checkpoint.save_network
    BaseModel.save_training_state = checkpoint.save_training_state
    dist_util._init_dist_pytorch = _init_dist_pytorch
    dist_util._init_dist_slurm = _init_dist_slurm
    BaseModel.model_to_device = _model_to_device
    BaseModel.load_network = _load_network
    _video_validation_on_model_device(basicsr.models.video_base_model.VideoBaseModel)
    _APPLIED = True

