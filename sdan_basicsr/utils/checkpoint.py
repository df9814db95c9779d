"""Crash-safe checkpoints: every file training writes appears whole or not at all, and ``--auto_resume``
starts from the newest checkpoint that loads, moving unreadable ones aside.

A checkpoint of iteration N is ``training_states/N.state`` plus ``models/net_<x>_N.pth`` for every ``network_<x>``
of the options; the models are saved first and the state last, so a state means its models are in place.
``save_network`` and ``save_training_state`` replace ``BaseModel``'s (``sdan_basicsr/compat.py`` installs them).
"""
import contextlib
import os
import re
import secrets
import sys
import time
from os import path as osp
from typing import List, Optional, Tuple

import torch
from basicsr.utils import check_resume, get_root_logger
from basicsr.utils.dist_util import master_only

#: ``N.state``: the training state of iteration N.
STATE_RE = re.compile(r'^(\d+)\.state$')
#: Suffix of a checkpoint file moved aside by ``--auto_resume`` because it does not load (``10.state.unreadable``).
ASIDE_SUFFIX = '.unreadable'
#: Temporary files of :func:`atomic_save` are ``.<final name>.<pid>-<random>.tmp``; one left over means a save was
#: killed.
TMP_SUFFIX = '.tmp'
#: Tries of one save (BasicSR's ``save_network`` / ``save_training_state`` retry loop), one second apart.
SAVE_RETRIES = 3


def atomic_save(obj, path: str) -> None:
    """``torch.save(obj, path)`` such that ``path`` is either its old content or the whole new file.

    Writes a temporary file in the same folder (created like any file, so the umask sets its mode), flushes and
    fsyncs it, then ``os.replace``s it onto ``path`` (atomic on POSIX and Windows) and fsyncs the folder. On any
    error the temporary file is removed.
    """
    folder, name = osp.split(osp.abspath(path))
    tmp = osp.join(folder, f'.{name}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0), 0o666)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable where the platform allows it (POSIX folders can be fsync'd)."""
    if not hasattr(os, 'O_DIRECTORY'):
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _save_with_retry(obj, path: str, what: str) -> None:
    """BasicSR's retry loop around :func:`atomic_save`: ``SAVE_RETRIES`` tries, warn on each failure, then give up."""
    logger = get_root_logger()
    for remaining in range(SAVE_RETRIES - 1, -1, -1):
        try:
            atomic_save(obj, path)
            return
        except Exception as err:
            logger.warning(f'Save {what} error: {err}, remaining retry times: {remaining}')
            if remaining:
                time.sleep(1)
    logger.warning(f'Still cannot save {path}. Just ignore it.')


@master_only
def save_network(self, net, net_label: str, current_iter, param_key='params') -> None:
    """``BaseModel.save_network`` with an atomic write: ``models/<net_label>_<iter>.pth`` (``_latest`` for -1).

    ``net`` and ``param_key`` may be lists (``[net_g, net_g_ema]``, ``['params', 'params_ema']``); parameters are
    saved on the CPU without a ``module.`` prefix. The network's options (``network_g`` for ``net_g``) go into the
    file beside them, so that ``sdan-zoom`` rebuilds the network from the file alone, options that leave no weight
    (``image_skip``) included; BasicSR's ``load_network`` reads only its ``param_key``.
    """
    if current_iter == -1:
        current_iter = 'latest'
    save_path = osp.join(self.opt['path']['models'], f'{net_label}_{current_iter}.pth')
    nets = net if isinstance(net, list) else [net]
    param_keys = param_key if isinstance(param_key, list) else [param_key]
    assert len(nets) == len(param_keys), 'The lengths of net and param_key should be the same.'
    save_dict = {}
    for net_, key_ in zip(nets, param_keys):
        state_dict = self.get_bare_model(net_).state_dict()
        save_dict[key_] = {k[len('module.'):] if k.startswith('module.') else k: v.cpu() for k, v in state_dict.items()}
    options_key = 'network' + net_label[len('net'):]
    if isinstance(self.opt.get(options_key), dict):
        save_dict[options_key] = self.opt[options_key]  # BasicSR's OrderedDict: torch's weights_only loads it
    _save_with_retry(save_dict, save_path, 'model')


@master_only
def save_training_state(self, epoch: int, current_iter: int) -> None:
    """``BaseModel.save_training_state`` with an atomic write of ``training_states/<iter>.state``.

    The state is BasicSR's (``epoch``, ``iter``, ``optimizers``, ``schedulers``), updated with
    ``self.extra_training_state()`` when the model has that method (e.g. a loss scaler); nothing for ``-1``.
    """
    if current_iter == -1:
        return
    state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
             'schedulers': [s.state_dict() for s in self.schedulers]}
    extra = getattr(self, 'extra_training_state', None)
    if extra is not None:
        state.update(extra())
    _save_with_retry(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'), 'training state')


def _load(path: str):
    return torch.load(path, map_location='cpu', weights_only=True)


def model_files(opt: dict, iteration: int) -> List[str]:
    """The model files a resume from ``iteration`` loads (the paths ``basicsr.utils.check_resume`` sets)."""
    ignored = opt['path'].get('ignore_resume_networks') or ()
    return [osp.join(opt['path']['models'], f"net_{key[len('network_'):]}_{iteration}.pth")
            for key in opt if key.startswith('network_') and key not in ignored]


def check_checkpoint(opt: dict, state_path: str) -> Tuple[Optional[dict], List[Tuple[str, str]]]:
    """Load ``state_path`` and try every model file of its iteration.

    Returns ``(state, [])`` when all of them load, else ``(None, [(file, why), ...])`` naming what does not.
    """
    try:
        state = _load(state_path)
        if not isinstance(state, dict) or 'iter' not in state:
            raise ValueError('not a training state (no "iter")')
    except Exception as err:
        return None, [(state_path, _reason(err))]
    problems = []
    for path in model_files(opt, state['iter']):
        if not osp.isfile(path):
            problems.append((path, 'missing'))
            continue
        try:
            _load(path)
        except Exception as err:
            problems.append((path, _reason(err)))
    return (None, problems) if problems else (state, [])


def _reason(err: Exception) -> str:
    return f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}'.rstrip(': ')


def move_aside(path: str) -> str:
    """Rename ``path`` to ``path + ASIDE_SUFFIX`` (``.1``, ``.2``… when taken); never deletes anything."""
    target, n = path + ASIDE_SUFFIX, 0
    while osp.exists(target):
        n += 1
        target = f'{path}{ASIDE_SUFFIX}.{n}'
    os.replace(path, target)
    return target


def _warn(message: str) -> None:
    # the root logger must not be created before train_pipeline gives it its log file; BasicSR prints here too
    print(f'WARNING: {message}', file=sys.stderr, flush=True)


def _leftover_temporaries(opt: dict) -> List[str]:
    folders = (opt['path']['training_states'], opt['path'].get('models'))
    return sorted(osp.join(folder, n) for folder in folders if folder and osp.isdir(folder)
                  for n in os.listdir(folder) if n.startswith('.') and n.endswith(TMP_SUFFIX))


def find_resume_state(opt: dict) -> Tuple[Optional[str], Optional[dict]]:
    """``--auto_resume``: the newest complete, loadable checkpoint of ``opt['path']['training_states']``.

    A checkpoint that does not load (its state, or one of its model files missing or unreadable) is named in a
    warning and its unreadable files are moved aside, newest first, until one loads. Returns ``(state_path,
    state)``, or ``(None, None)`` when the folder holds no state. Raises ``SystemExit`` naming the folder when it
    held states and none of them loads.
    """
    folder = opt['path']['training_states']
    names = os.listdir(folder) if osp.isdir(folder) else []
    iterations = sorted((int(m.group(1)) for m in map(STATE_RE.match, names) if m), reverse=True)
    leftovers = _leftover_temporaries(opt)
    if leftovers:
        _warn(f'temporary files of interrupted saves (never used; safe to delete): {", ".join(leftovers)}')
    for iteration in iterations:
        state_path = osp.join(folder, f'{iteration}.state')
        state, problems = check_checkpoint(opt, state_path)
        if state is not None:
            return state_path, state
        unreadable = [path for path, why in problems if why != 'missing']
        moved = [f'{path} -> {osp.basename(move_aside(path))}'
                 for path in ([] if state_path in unreadable else [state_path]) + unreadable]
        _warn(f'--auto_resume: the checkpoint of iteration {iteration} does not load '
              f'({"; ".join(f"{path}: {why}" for path, why in problems)}); moved aside: {", ".join(moved)}; '
              'trying the previous one')
    if iterations:
        raise SystemExit(f'--auto_resume: no loadable checkpoint in {folder} (the ones that do not load were moved '
                         f'aside with the suffix {ASIDE_SUFFIX}); run without --auto_resume to start afresh')
    return None, None


def _find_on_first_rank(opt: dict) -> Tuple[Optional[str], Optional[dict]]:
    """:func:`find_resume_state` on rank 0 only (it renames files); the other ranks load the state it picked."""
    import torch.distributed as dist

    if not (opt.get('dist') and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return find_resume_state(opt)
    if dist.get_rank() == 0:
        try:
            state_path, state = find_resume_state(opt)
        except BaseException as err:  # the other ranks wait for an answer: give them this one
            dist.broadcast_object_list([('exit', f'rank 0 could not pick a checkpoint: {err}')], src=0)
            raise
        dist.broadcast_object_list([('path', state_path)], src=0)
        return state_path, state
    outcome = [None]
    dist.broadcast_object_list(outcome, src=0)
    kind, state_path = outcome[0]
    if kind == 'exit':
        raise SystemExit(state_path)
    return (state_path, _load(state_path)) if state_path is not None else (None, None)


def load_resume_state(opt: dict) -> Optional[dict]:
    """``basicsr.train.load_resume_state``, crash-safe: the state to resume from, or ``None`` to start afresh.

    ``--auto_resume`` scans ``opt['path']['training_states']`` (absolute, so independent of the cwd) with
    :func:`find_resume_state`; an explicit ``path.resume_state`` must load with its model files, else
    ``SystemExit`` says what does not. States load onto the CPU with ``weights_only=True`` (the model moves the
    optimizer states to its device); ``check_resume`` then points ``pretrain_network_*`` at the state's models.
    """
    if opt['auto_resume']:
        state_path, state = _find_on_first_rank(opt)
        if state_path is None:
            return None
        opt['path']['resume_state'] = state_path
    elif opt['path'].get('resume_state'):
        state_path = opt['path']['resume_state']
        state, problems = check_checkpoint(opt, state_path)
        if state is None:
            raise SystemExit(f'cannot resume from {state_path}: ' + '; '.join(f'{p}: {why}' for p, why in problems))
    else:
        return None
    check_resume(opt, state['iter'])
    return state
