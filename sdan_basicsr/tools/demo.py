"""The built-in demo: make the demo SR-RAW tree, train SDAN, test it against bicubic, show the result.

``python -m sdan_basicsr.tools.demo`` (the README's first command). Every step runs the real
launchers (``sdan_basicsr/train.py``, ``sdan_basicsr/test.py``) as a user would.
"""
import argparse
import glob
import os
import re
import subprocess
import sys
from os import path as osp
from typing import Dict

import cv2
import numpy as np

from sdan_basicsr.launch import REPO_ROOT, project_root

DEMO_DATA = osp.join('datasets', 'sdan_demo')
#: The demo tree: 6 training and 2 held-out scenes, shots 768 px wide (about 50 MB, 20 s to make).
DEMO_TREE = dict(num_scenes=8, num_test=2, size=768, seed=0)
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


def side_by_side(root: str, out_path: str) -> str:
    """Input | bicubic | SDAN | target of the first test scene, as one PNG with labels."""
    from basicsr.utils import tensor2img

    from sdan_basicsr.data.srraw_dataset import SRRAWPairedDataset
    from sdan_basicsr.models.sdan_model import apply_white_balance, image_name

    dataset = SRRAWPairedDataset({'name': 'demo', 'dataroot': osp.join(root, DEMO_DATA, 'test'), 'phase': 'test'})
    item = dataset[0]
    gt = item['gt'].unsqueeze(0)
    wb = item['wb'].unsqueeze(0)
    target = tensor2img(apply_white_balance(gt, wb))
    h, w = target.shape[:2]
    lq = tensor2img(apply_white_balance(item['lq_rgb'].unsqueeze(0), wb))
    panels = [('input (camera JPEG)', cv2.resize(lq, (w, h), interpolation=cv2.INTER_NEAREST))]
    stem = image_name(item['lq_path'])
    for label, opt in TEST_OPTS.items():
        name = _experiment_name(osp.join(root, opt))
        found = sorted(glob.glob(osp.join(root, 'results', name, 'visualization', '*', f'*{stem}*.png')))
        if not found:
            raise FileNotFoundError(f'no saved {label} result for {stem} under results/{name}')
        panels.append((label, cv2.imread(found[0])))
    panels.append(('target (long focal)', target))
    tiles = []
    for label, img in panels:
        img = img[:h, :w].copy()
        cv2.putText(img, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(img)
    cv2.imwrite(out_path, np.concatenate(tiles, axis=1))
    return out_path


def _experiment_name(opt_path: str) -> str:
    import yaml

    with open(opt_path, encoding='utf-8') as f:
        return yaml.safe_load(f)['name']


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--skip-train', action='store_true', help='reuse the trained demo model')
    args = parser.parse_args(argv)
    root = project_root()
    os.chdir(root)

    from sdan_basicsr.tools.make_demo import make_demo

    if not osp.isdir(osp.join(DEMO_DATA, 'test')):
        print(f'making the demo SR-RAW tree at {DEMO_DATA}', flush=True)
        make_demo(DEMO_DATA, **DEMO_TREE)
    if not args.skip_train:
        _launch('train.py', TRAIN_OPT, '--auto_resume')
    rows = {}
    for label, opt in TEST_OPTS.items():
        _launch('test.py', opt)
        rows[label] = read_test_metrics(root, _experiment_name(opt))
    png = side_by_side(root, osp.join('results', 'sdan_demo_side_by_side.png'))

    metrics = list(rows['SDAN'])
    print('\nHeld-out demo scenes (RGB, 32-px border crop, no white balance):')
    print(f"{'method':<10}" + ''.join(f'{m:>10}' for m in metrics))
    for label, values in rows.items():
        print(f'{label:<10}' + ''.join(f'{values.get(m, float("nan")):>10.4f}' for m in metrics))
    print(f'\nside-by-side (input | bicubic | SDAN | target): {osp.join(root, png)}')


if __name__ == '__main__':
    main()
