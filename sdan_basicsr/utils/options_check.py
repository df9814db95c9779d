"""Start-up check of a BasicSR option file: missing required keys and misspelled known keys fail at once."""
import difflib
from typing import Dict, Iterable, List

import yaml

#: Top-level keys BasicSR's pipelines read (plus the ones it sets itself).
KNOWN_TOP = ('name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'network_d', 'path',
             'train', 'val', 'logger', 'dist_params', 'find_unused_parameters', 'is_train', 'dist', 'rank',
             'world_size', 'auto_resume', 'root_path', 'use_static_graph')
REQUIRED_TOP = ('name', 'model_type', 'datasets', 'network_g', 'path')
#: Keys of ``train:`` that BasicSR's SR/GAN/video models read.
KNOWN_TRAIN = ('ema_decay', 'optim_g', 'optim_d', 'scheduler', 'total_iter', 'warmup_iter', 'pixel_opt',
               'perceptual_opt', 'gan_opt', 'ldl_opt', 'net_d_iters', 'net_d_init_iters', 'fix_flow', 'flow_lr_mul',
               'tsa_iter', 'dcn_lr_mul', 'r1_reg_weight', 'path_reg_weight', 'use_grad_clip', 'gt_size', 'amp',
               'channels_last', 'ref_blur')
REQUIRED_TRAIN = ('optim_g', 'total_iter')
KNOWN_VAL = ('val_freq', 'save_img', 'metrics', 'suffix', 'pbar', 'pad_multiple', 'flip_seq', 'center_frame_only',
             'amp', 'ref', 'match_color')


class OptionError(ValueError):
    """An option file that cannot run; the message names the file and the key."""


def _check_keys(where: str, section: Dict, known: Iterable[str], required: Iterable[str], path: str) -> List[str]:
    errors = []
    for key in required:
        if key not in section:
            errors.append(f'{path}: missing required key {where}{key}')
    known = tuple(known)
    for key in section:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
            if close:
                errors.append(f'{path}: unknown key {where}{key} (did you mean {where}{close[0]}?)')
    return errors


def _check_values(opt: Dict, path: str) -> List[str]:
    """The values of ``train.amp``, ``train.ref_blur``, ``val.amp`` and ``val.ref``, as the model would reject them."""
    from sdan_basicsr.models.sdan_model import VAL_REFS, parse_ref_blur
    from sdan_basicsr.utils.precision import parse_amp

    errors = []
    for section, key, parse in (('train', 'amp', parse_amp), ('val', 'amp', parse_amp),
                                ('train', 'ref_blur', parse_ref_blur)):
        if isinstance(opt.get(section), dict) and key in opt[section]:
            try:
                parse(opt[section][key], f'{section}.{key}')
            except ValueError as err:
                errors.append(f'{path}: {err}')
    ref = (opt.get('val') or {}).get('ref', 'input') if isinstance(opt.get('val'), dict) else 'input'
    if ref not in VAL_REFS:
        errors.append(f'{path}: val.ref: {ref!r} is not one of {VAL_REFS}')
    return errors


def check_option_file(path: str, is_train: bool) -> None:
    """Raise :class:`OptionError` listing every missing required or misspelled key of ``path``."""
    with open(path, encoding='utf-8') as f:
        opt = yaml.safe_load(f)
    if not isinstance(opt, dict):
        raise OptionError(f'{path}: not a YAML mapping of options')
    errors = _check_keys('', opt, KNOWN_TOP, REQUIRED_TOP + (('train', ) if is_train else ()), path)
    if isinstance(opt.get('train'), dict) and is_train:
        errors += _check_keys('train.', opt['train'], KNOWN_TRAIN, REQUIRED_TRAIN, path)
    if isinstance(opt.get('val'), dict):
        errors += _check_keys('val.', opt['val'], KNOWN_VAL, (), path)
    errors += _check_values(opt, path)
    if isinstance(opt.get('network_g'), dict) and 'type' not in opt['network_g']:
        errors.append(f'{path}: missing required key network_g.type')
    datasets = opt.get('datasets') or {}
    if is_train and isinstance(datasets, dict) and 'train' not in datasets:
        errors.append(f'{path}: missing required key datasets.train')
    for name, dataset in (datasets.items() if isinstance(datasets, dict) else ()):
        if not isinstance(dataset, dict) or 'type' not in dataset:
            errors.append(f'{path}: missing required key datasets.{name}.type')
    if errors:
        raise OptionError('\n'.join(errors))
