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
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from sdan_basicsr.launch import REPO_ROOT, project_root

DEMO_DATA = osp.join('datasets', 'sdan_demo')
#: The demo tree: 24 training scenes (scikit-image's 6 training photographs four times, each time under another random
#: colour variation) and 5 held-out scenes (``make_demo.TEST_PHOTOS``: photographs never trained on, blue- and
#: green-dominant ones among them). Shots are 768 px wide, with a non-affine misalignment of about 3 px left after
#: the ECC affine (``bench/zoom_ceiling.py`` shows why: at ``make_demo``'s default of 8 px even a perfect zoom
#: scores only 1 dB above bicubic against the target shots).
DEMO_TREE = dict(num_scenes=29, num_test=5, size=768, seed=0, shift=20., residual=3., color_variation=True)
TRAIN_OPT = osp.join('options', 'train_sdan_demo.yml')
TEST_OPTS = {'Bicubic': osp.join('options', 'baselines', 'test_bicubic_demo.yml'),
             'SDAN': osp.join('options', 'test_sdan_demo.yml')}
METRIC_RE = re.compile(r'# (\w+): ([-+0-9.eE]+)')
#: SDANModel's per-image line of a ``test.py`` log: ``Image <scene>_<shot>: psnr 25.1, ssim 0.68, ...``.
IMAGE_RE = re.compile(r'Image (\S+): (.+)$', re.MULTILINE)
#: Border that the demo's metrics crop (``crop_border`` of its test option files), also for the colour means.
CROP_BORDER = 32


def _launch(script: str, opt: str, *extra: str) -> None:
    cmd = [sys.executable, osp.join(REPO_ROOT, 'sdan_basicsr', script), '-opt', opt, *extra]
    print('$', ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _latest_test_log(root: str, name: str) -> str:
    logs = sorted(glob.glob(osp.join(root, 'results', name, f'test_{name}_*.log')), key=osp.getmtime)
    if not logs:
        raise FileNotFoundError(f'no test log of {name} under {osp.join(root, "results", name)}')
    with open(logs[-1], encoding='utf-8') as f:
        return f.read()


def read_test_metrics(root: str, name: str) -> Dict[str, float]:
    """Metrics of the latest ``test.py`` log of experiment ``name`` (BasicSR's ``# metric: value`` lines)."""
    return {k: float(v) for k, v in METRIC_RE.findall(_latest_test_log(root, name))}


def read_image_metrics(root: str, name: str) -> Dict[str, Dict[str, float]]:
    """Per-image metrics ``{'<scene>_<shot>': {metric: value}}`` of the latest ``test.py`` log of ``name``."""
    return {image: {k: float(v) for k, v in (item.split() for item in values.split(', '))}
            for image, values in IMAGE_RE.findall(_latest_test_log(root, name))}


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


def _white_balanced_target(item: dict) -> np.ndarray:
    """A test item's target with its white balance, as saved images are (BGR, uint8)."""
    from basicsr.utils import tensor2img

    from sdan_basicsr.data.raw_utils import apply_white_balance

    return tensor2img(apply_white_balance(item['gt'].unsqueeze(0), item['wb'].unsqueeze(0)))


#: The two readings of an image's mean colour that the demo prints: of its 8-bit values as saved, and of linear light.
COLOUR_READINGS = ('8-bit', 'linear')


def mean_colour(img: np.ndarray, reading: str) -> np.ndarray:
    """Mean R, G, B of a saved image (BGR, uint8) inside the metrics' border crop, read as ``reading``.

    ``8-bit``: of the values as saved (gamma-encoded, what a viewer shows); ``linear``: of linear light (values ** 2.2).
    The two part when two images differ in sharpness: a blur in linear light keeps the linear means and raises the
    8-bit ones (bicubic of the camera JPEG, which was downsampled in linear light, reads high in 8-bit means); a blur of
    the 8-bit values keeps those and lowers the linear means, most in the channel with the most contrast (a network
    trained by L1 on the 8-bit targets reads low in linear means where it is softer than the target, with no colour
    cast). ``bench/colour_sharpness.py`` measures how much of each method's error a blur alone gives.
    """
    from sdan_basicsr.data.raw_utils import JPEG_GAMMA

    if reading not in COLOUR_READINGS:
        raise ValueError(f'reading must be one of {COLOUR_READINGS}, got {reading!r}')
    c = CROP_BORDER
    values = img[c:-c, c:-c].astype(np.float64) / 255
    if reading == 'linear':
        values = values**JPEG_GAMMA
    return values.reshape(-1, 3).mean(0)[::-1]


def colour_errors(root: str) -> Dict[str, Dict[str, Dict[str, np.ndarray]]]:
    """``{label: {'<scene>_<shot>': {reading: (3,) %}}}``: the mean R, G, B of each saved result over those of the
    white-balanced target, minus 1, in percent, in each of :data:`COLOUR_READINGS` (:func:`mean_colour`)."""
    from sdan_basicsr.models.sdan_model import image_name

    dataset = _test_dataset(root)
    errors = {label: {} for label in TEST_OPTS}
    for i in range(len(dataset)):
        item = dataset[i]
        stem = image_name(item['lq_path'])
        target = _white_balanced_target(item)
        for label in TEST_OPTS:
            result = _saved_result(root, label, stem)
            errors[label][stem] = {
                reading: 100 * (mean_colour(result, reading) / np.maximum(mean_colour(target, reading), 1e-9) - 1)
                for reading in COLOUR_READINGS}
    return errors


def _detail_box(img: np.ndarray, height: int, width: int) -> Tuple[int, int]:
    """Top-left (y, x) of the ``height`` × ``width`` window of ``img`` (BGR) with the most detail (mean |Laplacian|),
    inside the metrics' border crop where the image allows."""
    detail = np.abs(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32), cv2.CV_32F))
    h, w = detail.shape
    y0, x0 = (min(CROP_BORDER, max(0, (n - m) // 2)) for n, m in ((h, height), (w, width)))
    # window sums for every top-left (y, x) in [y0, h - y0 - height] × [x0, w - x0 - width]
    total = cv2.integral(detail[y0:h - y0, x0:w - x0])
    sums = total[height:, width:] - total[:-height, width:] - total[height:, :-width] + total[:-height, :-width]
    y, x = np.unravel_index(np.argmax(sums), sums.shape)
    return y0 + int(y), x0 + int(x)


def _label_band(labels: List[str], width: int, height: int, gap: int) -> np.ndarray:
    """A white band of ``height`` with each label centred in black above its ``width``-wide column."""
    band = np.full((height, len(labels) * (width + gap) - gap, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i, label in enumerate(labels):
        scale = height / 50
        (tw, th), _ = cv2.getTextSize(label, font, scale, 1)
        scale *= min(1., 0.95 * width / tw)
        thickness = max(1, round(scale * 2))
        (tw, th), _ = cv2.getTextSize(label, font, scale, thickness)
        org = (i * (width + gap) + (width - tw) // 2, (height + th) // 2)
        cv2.putText(band, label, org, font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return band


def side_by_side(root: str, out_path: str) -> str:
    """Input | bicubic | SDAN | target | exact zoom of the first test scene, as one PNG.

    Labels sit on a white band above the panels, in letters that scale with the panels. Below each panel,
    its boxed region (a quarter of the area, where the target has the most detail) is shown at 2× with
    nearest-neighbour pixels.
    """
    from sdan_basicsr.models.sdan_model import image_name
    from sdan_basicsr.tools.make_demo import read_meta

    dataset = _test_dataset(root)
    item = dataset[0]
    target = _white_balanced_target(item)
    h, w = target.shape[:2]
    lq = _white_balanced_target(dict(item, gt=item['lq_rgb']))
    panels = [('input (camera JPEG)', cv2.resize(lq, (w, h), interpolation=cv2.INTER_NEAREST))]
    stem = image_name(item['lq_path'])
    panels += [(label, _saved_result(root, label, stem)) for label in TEST_OPTS]
    panels.append(('target (long focal)', target))
    panels.append(('exact zoom', _exact_display(read_meta(osp.join(root, DEMO_DATA)), dataset.samples[0],
                                                dataset.scale)))
    ch, cw = h // 2, w // 2
    y, x = _detail_box(target, ch, cw)
    gap = max(4, w // 100)
    line = max(2, w // 250)
    tops, crops = [], []
    for _, img in panels:
        img = np.ascontiguousarray(img[:h, :w])
        crops.append(cv2.resize(img[y:y + ch, x:x + cw], (2 * cw, 2 * ch), interpolation=cv2.INTER_NEAREST))
        boxed = img.copy()
        cv2.rectangle(boxed, (x, y), (x + cw - 1, y + ch - 1), (0, 0, 0), 2 * line + 2)
        cv2.rectangle(boxed, (x, y), (x + cw - 1, y + ch - 1), (255, 255, 255), line)
        tops.append(boxed)

    def row(tiles: List[np.ndarray]) -> np.ndarray:
        spacer = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
        return np.concatenate([t for tile in tiles for t in (tile, spacer)][:-1], axis=1)

    band = max(32, w // 12)
    labels = [label for label, _ in panels]
    figure = np.concatenate([
        _label_band(labels, w, band, gap), row(tops), np.full((gap, row(tops).shape[1], 3), 255, np.uint8),
        _label_band([f'2x: {label}' for label in labels], w, band * 2 // 3, gap),
        row([np.pad(c, ((0, h - c.shape[0]), (0, w - c.shape[1]), (0, 0)), constant_values=255) for c in crops])
    ])
    cv2.imwrite(out_path, figure)
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


def trained_with_other_options(experiment: str, opt_path: str) -> bool:
    """True if ``experiment`` (a training folder) holds the option file of another network or training schedule
    than ``opt_path`` (its checkpoints could then not be resumed with ``opt_path``)."""
    copies = sorted(glob.glob(osp.join(experiment, '*.yml')), key=osp.getmtime)
    if not copies:
        return False
    saved, wanted = _load_opt(copies[-1]), _load_opt(opt_path)
    return any(saved.get(key) != wanted.get(key) for key in ('network_g', 'train'))


def _with_matched(rows: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    """Each method's metrics, and those after colour matching (``<metric>_color_matched``) as a row of their own."""
    from sdan_basicsr.models.sdan_model import COLOR_MATCHED

    out = {}
    for label, values in rows.items():
        out[label] = {k: v for k, v in values.items() if not k.endswith(COLOR_MATCHED)}
        matched = {k[:-len(COLOR_MATCHED)]: v for k, v in values.items() if k.endswith(COLOR_MATCHED)}
        if matched:
            out[f'{label}, colour-matched'] = matched
    return out


def _by_method(images: Dict[str, Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``{label: {image: metrics}}`` with the colour-matched metrics of a label as a method of their own."""
    out = {}
    for label, per_image in images.items():
        for stem, values in per_image.items():
            for method, split in _with_matched({label: values}).items():
                out.setdefault(method, {})[stem] = split
    return out


def _table(title: str, rows: Dict[str, Dict[str, float]]) -> None:
    metrics = list(rows['SDAN'])
    width = max(len(label) for label in rows) + 2
    print(f'\n{title}')
    print(f"{'method':<{width}}" + ''.join(f'{m:>10}' for m in metrics))
    for label, values in rows.items():
        print(f'{label:<{width}}' + ''.join(f'{values.get(m, float("nan")):>10.4f}' for m in metrics))


def _scene_table(title: str, images: Dict[str, Dict[str, Dict[str, float]]], photos: Dict[str, str],
                 colours: Dict[str, Dict[str, np.ndarray]]) -> None:
    """One row per held-out scene and method: its metrics and the colour error of its saved image."""
    metrics = list(next(iter(images['SDAN'].values())))
    width = max(len(label) for label in images) + 2
    print(f'\n{title}')
    print(f"{'scene':<13}{'photo':<19}{'method':<{width}}" + ''.join(f'{m:>10}' for m in metrics) +
          '   colour R/G/B (%): ' + ' | '.join(COLOUR_READINGS))
    for stem in images['SDAN']:
        for i, (label, per_image) in enumerate(images.items()):
            values = per_image.get(stem, {})
            colour = colours.get(label, {}).get(stem)
            line = (f"{stem if i == 0 else '':<13}{photos[stem] if i == 0 else '':<19}{label:<{width}}" +
                    ''.join(f'{values.get(m, float("nan")):>10.4f}' for m in metrics))
            if colour is not None:
                line += '   ' + ' | '.join('/'.join(f'{e:+.1f}' for e in colour[r]) for r in COLOUR_READINGS)
            print(line)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--skip-train', action='store_true', help='reuse the trained demo model')
    args = parser.parse_args(argv)
    root = project_root()
    os.chdir(root)

    from sdan_basicsr.tools.make_demo import make_demo, read_meta

    experiment = osp.join('experiments', _experiment_name(TRAIN_OPT))
    if demo_tree_params(DEMO_DATA) != DEMO_TREE:
        print(f'making the demo SR-RAW tree at {DEMO_DATA}', flush=True)
        shutil.rmtree(DEMO_DATA, ignore_errors=True)
        make_demo(DEMO_DATA, **DEMO_TREE)
        # a model trained on another tree must not be resumed
        shutil.rmtree(experiment, ignore_errors=True)
    if not args.skip_train:
        if trained_with_other_options(experiment, TRAIN_OPT):
            print(f'{experiment} was trained with other options (an earlier demo): training anew', flush=True)
            shutil.rmtree(experiment)
        _launch('train.py', TRAIN_OPT, '--auto_resume')
    rows, images = {}, {}
    for label, opt in TEST_OPTS.items():
        _launch('test.py', opt)
        rows[label] = read_test_metrics(root, _experiment_name(opt))
        images[label] = read_image_metrics(root, _experiment_name(opt))
    # the released test code's protocol: SDAN's reference is the target downsampled (val.ref: target)
    released = f'{_experiment_name(TEST_OPTS["SDAN"])}_ref_target'
    _launch('test.py', TEST_OPTS['SDAN'], '--force_yml', f'name={released}', 'val:ref=target', 'val:save_img=false')
    released_row = read_test_metrics(root, released)
    png = side_by_side(root, osp.join('results', 'sdan_demo_side_by_side.png'))

    protocol = 'SR-RAW protocol: RGB, 32-px border crop, no white balance'
    _table(f'Held-out demo scenes vs their long-focal shots ({protocol}; colour-matched: the output brought to the '
           "input JPEG's colours by one 3x3 + offset transform, an extra row, not the protocol; ref: target: the "
           "released test code's reference, the target downsampled, instead of the input's RGB):",
           {**_with_matched(rows), 'SDAN, ref: target': released_row})
    scenes = read_meta(DEMO_DATA)['scenes']
    photos = {stem: scenes[f'test/{stem.split("_")[0]}']['photo'] for stem in images['SDAN']}
    _scene_table(f'Per held-out scene ({protocol}; colour: mean R/G/B of the saved image against the white-balanced '
                 'target, of its 8-bit values and of linear light):', _by_method(images), photos, colour_errors(root))
    _table('Held-out demo scenes vs the exact zoom of each input (known geometry, no misalignment; '
           'saved images, white balance applied):', exact_scores(root))
    print(f'\nside-by-side (input | bicubic | SDAN | target | exact zoom): {osp.join(root, png)}')


if __name__ == '__main__':
    main()
