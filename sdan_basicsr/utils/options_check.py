"""Start-up check of a BasicSR option file: missing required keys and misspelled known keys fail at once.

Also the one list of the option keys the plugin adds or interprets (:func:`plugin_option_keys`), which
``docs/options.md`` documents (``tests/test_docs.py`` compares the two).
"""
import difflib
import inspect
import re
from typing import Dict, Iterable, List, Tuple

import yaml

#: Top-level keys BasicSR's pipelines read (plus the ones it sets itself).
KNOWN_TOP = ('name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'network_d', 'path',
             'train', 'val', 'logger', 'dist_params', 'find_unused_parameters', 'is_train', 'dist', 'rank',
             'world_size', 'auto_resume', 'root_path', 'use_static_graph')
REQUIRED_TOP = ('name', 'model_type', 'datasets', 'network_g', 'path')
#: Keys of ``train:`` that BasicSR's SR/GAN/video models read.
BASICSR_TRAIN = ('ema_decay', 'optim_g', 'optim_d', 'scheduler', 'total_iter', 'warmup_iter', 'pixel_opt',
                 'perceptual_opt', 'gan_opt', 'ldl_opt', 'net_d_iters', 'net_d_init_iters', 'fix_flow', 'flow_lr_mul',
                 'tsa_iter', 'dcn_lr_mul', 'r1_reg_weight', 'path_reg_weight', 'use_grad_clip', 'gt_size')
#: Keys the plugin adds to ``train:`` (read by ``SDANModel``).
PLUGIN_TRAIN = ('amp', 'channels_last', 'ref_blur', 'ref_noise')
KNOWN_TRAIN = BASICSR_TRAIN + PLUGIN_TRAIN
REQUIRED_TRAIN = ('optim_g', 'total_iter')
#: Keys of ``val:`` that BasicSR's models read.
BASICSR_VAL = ('val_freq', 'save_img', 'metrics', 'suffix', 'pbar', 'flip_seq', 'center_frame_only')
#: Keys the plugin adds to ``val:`` (read by ``SDANModel``).
PLUGIN_VAL = ('amp', 'ref', 'match_color', 'pad_multiple')
KNOWN_VAL = BASICSR_VAL + PLUGIN_VAL
#: Option section of each kind of registered component, as the labels of :func:`plugin_option_keys` name it.
_COMPONENT_SECTIONS = (('ARCH_REGISTRY', 'network_g'), ('DATASET_REGISTRY', 'datasets'),
                       ('LOSS_REGISTRY', 'pixel_opt'), ('METRIC_REGISTRY', 'metrics'))
#: Arguments of a registered component that are not option keys (the images a metric compares, ...).
_NOT_OPTIONS = ('self', 'img', 'img2', 'opt')
#: How a dataset reads an option: ``opt['key']`` or ``opt.get('key'``.
_DATASET_KEY_RE = re.compile(r"\bopt(?:\.get\(|\[)'(\w+)'")


def plugin_option_keys() -> Dict[str, Tuple[str, ...]]:
    """Every option key the plugin adds or interprets, by section label (``docs/options.md`` has one section each).

    ``train`` and ``val``: the keys the plugin adds to BasicSR's sections. ``network_g: <arch>``,
    ``pixel_opt: <loss>``, ``metrics: <metric>``: the arguments of each arch, loss and metric the plugin registers.
    ``datasets: <dataset>``: the keys its code reads from its ``opt``; ``datasets: SRRAWPairedDataset,
    color_augment``: the keys of that option.
    """
    import basicsr.utils.registry as registries

    import sdan_basicsr  # noqa: F401  (registers the components)
    from sdan_basicsr.data.srraw_dataset import COLOR_AUGMENT_DEFAULTS, SRRAWPairedDataset

    keys = {'train': PLUGIN_TRAIN, 'val': PLUGIN_VAL}
    for registry_name, section in _COMPONENT_SECTIONS:
        registry = getattr(registries, registry_name)
        for name in registry.keys():
            obj = registry.get(name)
            if not obj.__module__.startswith('sdan_basicsr.'):
                continue
            params = inspect.signature(obj).parameters
            if 'opt' in params:  # a dataset: the keys its code reads
                names = dict.fromkeys(_DATASET_KEY_RE.findall(inspect.getsource(obj)))
            else:
                names = [p.name for p in params.values()
                         if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in _NOT_OPTIONS]
            keys[f'{section}: {name}'] = tuple(names)
    keys[f'datasets: {SRRAWPairedDataset.__name__}, color_augment'] = tuple(COLOR_AUGMENT_DEFAULTS)
    return keys


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
