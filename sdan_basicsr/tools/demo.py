"""The built-in demo: make the demo SR-RAW tree, train SDAN, test it against bicubic, show the result.

``python -m sdan_basicsr.tools.demo`` (the README's first command). Every step runs the real
launchers (``sdan_basicsr/train.py``, ``sdan_basicsr/test.py``) as a user would.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
from os import path as osp
from typing import Dict, Optional

import cv2
import numpy as np

from sdan_basicsr.launch import REPO_ROOT, project_root

DEMO_DATA = osp.join('datasets', 'sdan_demo')
#: The demo tree: 12 training scenes (scikit-image's 6 training photographs twice, each time under another random
#: colour variation) and 5 held-out scenes (``make_demo.TEST_PHOTOS``: photographs never trained on, blue- and
#: green-dominant ones among them). Shots are 768 px wide, with a non-affine misalignment of about 3 px left after
#: the ECC affine (``bench/zoom_ceiling.py`` shows why: at ``make_demo``'s default of 8 px even a perfect zoom
#: scores only 1 dB above bicubic against the target shots).
DEMO_TREE = dict(num_scenes=17, num_test=5, size=768, seed=0, shift=20., residual=3., color_variation=True)
TRAIN_OPT = osp.join('options', 'train_sdan_demo.yml')
TEST_OPTS = {'Bicubic': osp.join('options', 'baselines', 'test_bicubic_demo.yml'),
             'SDAN': osp.join('options', 'test_sdan_demo.yml')}
METRIC_RE = re.compile(r'# (\w+): ([-+0-9.eE]+)')


def _launch(script: str, opt: str, *extra: str) -> None:
    cmd = [sys.executable, osp.join(REPO_ROOT, 'sdan_basicsr', script), '-opt', opt, *extra]
    print('$', ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def read_test_metrics(root: str, name: str) -> Dict[str, float]:
    """Metrics of the latest ``test.py`` log of experiment ``name`` (BasicSR's ``# metric: value`` lines)."""
    logs = sorted(glob.glob(osp.join(root, 'results', name, f'test_{name}_*.log')), key=osp.getmtime)
    if not logs:
        raise FileNotFoundError(f'no test log of {name} under {osp.join(root, "results", name)}')
    with open(logs[-1], encoding='utf-8') as f:
        return {k: float(v) for k, v in METRIC_RE.findall(f.read())}


def _test_dataset(root: str):
    from sdan_basicsr.data.srraw_dataset import SRRAWPairedDataset

    return SRRAWPairedDataset({'name': 'demo', 'dataroot': osp.join(root, DEMO_DATA, 'test'), 'phase': 'test'})


def _saved_result(root: str, label: str, stem: str) -> np.ndarray:
    """The image ``test.py`` saved for test image ``stem`` with the option file of ``label`` (BGR, uint8)."""
    name = _experiment_name(osp.join(root, TEST_OPTS[label]))
    found = sorted(glob.glob(osp.join(root, 'results', name, 'visualization', '*', f'*{stem}*.png')))
    if not found:
        raise FileNotFoundError(f'no saved {label} result for {stem} under results/{name}')
    return cv2.imread(found[0])


def _exact_display(meta: dict, sample: dict, scale: int) -> np.ndarray:
    """:func:`~sdan_basicsr.tools.make_demo.exact_target` of ``sample`` with its white balance, as saved images are."""
    import torch
    from basicsr.utils import tensor2img

    from sdan_basicsr.data.raw_utils import apply_white_balance
    from sdan_basicsr.tools.make_demo import exact_target

    target = torch.from_numpy(exact_target(meta, sample, scale).transpose(2, 0, 1)).unsqueeze(0)
    return tensor2img(apply_white_balance(target, torch.tensor(sample['wb_lq'], dtype=torch.float32)[None]))


def exact_scores(root: str) -> Dict[str, Dict[str, float]]:
    """Metrics of the saved results against the exact zoom of every test shot (no misalignment).

    The demo knows each scene's true geometry, so it can score what SR-RAW cannot: how close a result
    is to the ideal zoom of its own input, free of the target shot's residual misalignment. Images are
    compared as saved (white balance applied, 8 bit), with the test option file's metrics.
    """
    from basicsr.metrics import calculate_metric

    from sdan_basicsr.models.sdan_model import image_name
    from sdan_basicsr.tools.make_demo import read_meta

    meta = read_meta(osp.join(root, DEMO_DATA))
    dataset = _test_dataset(root)
    metrics_opt = _load_opt(osp.join(root, TEST_OPTS['SDAN']))['val']['metrics']
    scores = {label: dict.fromkeys(metrics_opt, 0.) for label in TEST_OPTS}
    for sample in dataset.samples:
        target = _exact_display(meta, sample, dataset.scale)
        for label in TEST_OPTS:
            img = _saved_result(root, label, image_name(sample['lq_path']))
            for name, opt in metrics_opt.items():
                scores[label][name] += calculate_metric({'img': img, 'img2': target}, opt) / len(dataset)
    return scores


def side_by_side(root: str, out_path: str) -> str:
    """Input | bicubic | SDAN | target | exact zoom of the first test scene, as one PNG with labels."""
    from basicsr.utils import tensor2img

    from sdan_basicsr.data.raw_utils import apply_white_balance
    from sdan_basicsr.models.sdan_model import image_name
    from sdan_basicsr.tools.make_demo import read_meta

    dataset = _test_dataset(root)
    item = dataset[0]
    gt = item['gt'].unsqueeze(0)
    wb = item['wb'].unsqueeze(0)
    target = tensor2img(apply_white_balance(gt, wb))
    h, w = target.shape[:2]
    lq = tensor2img(apply_white_balance(item['lq_rgb'].unsqueeze(0), wb))
    panels = [('input (camera JPEG)', cv2.resize(lq, (w, h), interpolation=cv2.INTER_NEAREST))]
    stem = image_name(item['lq_path'])
    panels += [(label, _saved_result(root, label, stem)) for label in TEST_OPTS]
    panels.append(('target (long focal)', target))
    panels.append(('exact zoom', _exact_display(read_meta(osp.join(root, DEMO_DATA)), dataset.samples[0],
                                                dataset.scale)))
    tiles = []
    for label, img in panels:
        img = img[:h, :w].copy()
        cv2.putText(img, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(img)
    cv2.imwrite(out_path, np.concatenate(tiles, axis=1))
    return out_path


def demo_tree_params(folder: str) -> Optional[dict]:
    """The ``make_demo`` arguments recorded in ``folder``'s metadata; None if there is no complete tree."""
    from sdan_basicsr.tools.make_demo import read_meta

    meta = read_meta(folder)
    if meta is None or not osp.isdir(osp.join(folder, 'test')):
        return None
    return meta.get('tree')


def _load_opt(opt_path: str) -> dict:
    import yaml

    with open(opt_path, encoding='utf-8') as f:
        return yaml.safe_load(f)


def _experiment_name(opt_path: str) -> str:
    return _load_opt(opt_path)['name']


def _table(title: str, rows: Dict[str, Dict[str, float]]) -> None:
    metrics = list(rows['SDAN'])
    print(f'\n{title}')
    print(f"{'method':<10}" + ''.join(f'{m:>10}' for m in metrics))
    for label, values in rows.items():
        print(f'{label:<10}' + ''.join(f'{values.get(m, float("nan")):>10.4f}' for m in metrics))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--skip-train', action='store_true', help='reuse the trained demo model')
    args = parser.parse_args(argv)
    root = project_root()
    os.chdir(root)

    from sdan_basicsr.tools.make_demo import make_demo

    if demo_tree_params(DEMO_DATA) != DEMO_TREE:
        print(f'making the demo SR-RAW tree at {DEMO_DATA}', flush=True)
        shutil.rmtree(DEMO_DATA, ignore_errors=True)
        make_demo(DEMO_DATA, **DEMO_TREE)
        # a model trained on another tree must not be resumed
        shutil.rmtree(osp.join('experiments', _experiment_name(TRAIN_OPT)), ignore_errors=True)
    if not args.skip_train:
        _launch('train.py', TRAIN_OPT, '--auto_resume')
    rows = {}
    for label, opt in TEST_OPTS.items():
        _launch('test.py', opt)
        rows[label] = read_test_metrics(root, _experiment_name(opt))
    png = side_by_side(root, osp.join('results', 'sdan_demo_side_by_side.png'))

    _table('Held-out demo scenes vs their long-focal shots (SR-RAW protocol: RGB, 32-px border crop, '
           'no white balance):', rows)
    _table('Held-out demo scenes vs the exact zoom of each input (known geometry, no misalignment; '
           'saved images, white balance applied):', exact_scores(root))
    print(f'\nside-by-side (input | bicubic | SDAN | target | exact zoom): {osp.join(root, png)}')


if __name__ == '__main__':
    main()
