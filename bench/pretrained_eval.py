"""The shipped SDAN's figures (its model card): held-out demo scenes, noise levels and unseen colour matrices.

Every row is ``sdan_basicsr/test.py`` run as a user would (SR-RAW protocol: RGB, 32-px border crop, no white
balance), on photographs the shipped weights never trained on (``make_demo.TEST_PHOTOS``):

- ``demo``: the README demo's five held-out scenes (the demo's fixed camera), made if missing;
- ``noise_low`` / ``noise_mid`` / ``noise_high``: the same photographs through random training-like cameras with
  sensor noise at the low, mid and high ISO of the range (:data:`~sdan_basicsr.data.camera.NOISE_LEVELS`);
- one tree per colour matrix of :data:`~sdan_basicsr.data.camera.HELD_OUT_XYZ_TO_CAM`, outside the training mixture.

Rows: bicubic, SDAN, SDAN colour-matched (``val.match_color``: the output brought to the input JPEG's colours),
and per scene the 8-bit mean-colour error of the saved SDAN image against the white-balanced target.

    python bench/pretrained_eval.py [--weights sdan_basicsr/weights/sdan_x4_bayer.pth] [--out bench/pretrained_eval.md]
    python bench/pretrained_eval.py --trees demo          # only the demo's held-out scenes
    python bench/pretrained_eval.py --weights checkpoints/SDAN_size_32x8/net_g_3500.pth --out /tmp/eval_32x8.md
                                                          # a training's checkpoint, of any size (read off its shapes)
"""
import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import time
from os import path as osp

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from sdan_basicsr.data import camera as cam  # noqa: E402
from sdan_basicsr.tools import demo  # noqa: E402
from sdan_basicsr.tools.make_demo import TEST_PHOTOS, make_demo, read_meta  # noqa: E402
from sdan_basicsr.weights import SHIPPED_WEIGHTS  # noqa: E402

SDAN_OPT = osp.join('options', 'test_sdan_pretrained.yml')
#: The model card, whose figures section (between these markers) this script writes.
MODEL_CARD = osp.join('sdan_basicsr', 'weights', 'MODEL_CARD.md')
MARKERS = ('<!-- BEGIN bench/pretrained_eval.py -->', '<!-- END bench/pretrained_eval.py -->')
BICUBIC_OPT = osp.join('options', 'baselines', 'test_bicubic_demo.yml')
ROBUST_ROOT = osp.join('datasets', 'sdan_robust')
#: The robustness trees: name → make_demo's camera options; the held-out photographs once each, shots 768 px wide.
ROBUST_TREES = {
    **{f'noise_{level}': dict(noise=level) for level in cam.NOISE_LEVELS},
    **{name.lower().replace('canon eos ', 'canon_').replace(' ', '_'): dict(camera_matrix=name)
       for name in cam.HELD_OUT_XYZ_TO_CAM},
}


def tree_folder(name: str) -> str:
    """The test folder of tree ``name`` (made if missing)."""
    if name == 'demo':
        if demo.demo_tree_params(demo.DEMO_DATA) != demo.DEMO_TREE:
            shutil.rmtree(demo.DEMO_DATA, ignore_errors=True)
            make_demo(demo.DEMO_DATA, **demo.DEMO_TREE)
        return osp.join(demo.DEMO_DATA, 'test')
    folder = osp.join(ROBUST_ROOT, name)
    if read_meta(folder) is None:
        shutil.rmtree(folder, ignore_errors=True)
        n = len(TEST_PHOTOS)
        make_demo(folder, num_scenes=n, num_test=n, size=768, seed=0, residual=3., camera='random',
                  **ROBUST_TREES[name])
    return osp.join(folder, 'test')


def network_force(weights: str) -> list:
    """``--force_yml`` entries that fit the ``network_g`` of :data:`SDAN_OPT` to ``weights``: their stored options,
    or those read off their shapes for a training's own checkpoint (another size than the shipped one); a network
    that reads its input's noise level gets the dataset's noise profiles."""
    import inspect

    import yaml

    from sdan_basicsr.archs.sdan_arch import SDAN
    from sdan_basicsr.tools.zoom import infer_sdan_options, load_weights

    state, stored = load_weights(weights)
    network = stored or infer_sdan_options(state, weights)
    with open(osp.join(ROOT, SDAN_OPT), encoding='utf-8') as f:
        opt = yaml.safe_load(f)
    base, profiles = opt['network_g'], opt['datasets']['test'].get('noise_profile', False)
    def same(a, b):  # in_gamma is read off a float32 buffer
        return abs(a - b) <= 1e-6 * abs(b) if isinstance(a, float) and isinstance(b, float) else a == b

    defaults = {k: p.default for k, p in inspect.signature(SDAN).parameters.items()}
    if stored:  # an option the file's network_g leaves out is SDAN's default (what the shapes say is all there)
        network = {**defaults, **network}
    force = [f'network_g:{k}={str(v).lower() if isinstance(v, bool) else v}' for k, v in network.items()
             if k != 'type' and not same(v, base.get(k, defaults.get(k)))]
    if bool(network.get('noise_input')) != profiles:
        force.append(f"datasets:test:noise_profile={str(bool(network.get('noise_input'))).lower()}")
    return force


def run_test(opt: str, name: str, dataroot: str, weights: str = None) -> None:
    force = [f'name={name}', f'datasets:test:dataroot={dataroot}']
    if weights is not None:
        force += [f'path:pretrain_network_g={weights}', *network_force(weights)]
    cmd = [sys.executable, osp.join(ROOT, 'sdan_basicsr', 'test.py'), '-opt', opt, '--force_yml', *force]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f'{" ".join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}')


def colour_errors(experiment: str, dataroot: str) -> dict:
    """``{image: (3,) %}``: 8-bit mean R/G/B of each saved result against the white-balanced target, minus 1."""
    import glob

    import cv2

    from sdan_basicsr.data.srraw_dataset import SRRAWPairedDataset
    from sdan_basicsr.models.sdan_model import image_name

    dataset = SRRAWPairedDataset({'name': 'eval', 'dataroot': dataroot, 'phase': 'test'})
    errors = {}
    for i in range(len(dataset)):
        item = dataset[i]
        stem = image_name(item['lq_path'])
        saved = glob.glob(osp.join(ROOT, 'results', experiment, 'visualization', '*', f'{stem}_*.png'))
        target = demo.mean_colour(demo._white_balanced_target(item), '8-bit')
        errors[stem] = 100 * (demo.mean_colour(cv2.imread(saved[0]), '8-bit') / np.maximum(target, 1e-9) - 1)
    return errors


#: Flat regions: the target's FLAT_BLOCK² blocks (inside the metrics' border crop) whose high-pass σ is in its lowest
#: FLAT_SHARE; high pass: the grey image minus its Gaussian blur of σ HIGH_PASS_SIGMA.
FLAT_BLOCK, FLAT_SHARE, HIGH_PASS_SIGMA = 32, 0.1, 3.


def _block_variances(img: np.ndarray) -> np.ndarray:
    """Variance of the high pass of a BGR uint8 image in each FLAT_BLOCK² block inside the border crop."""
    import cv2

    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    high = (grey - cv2.GaussianBlur(grey, (0, 0), HIGH_PASS_SIGMA))[demo.CROP_BORDER:-demo.CROP_BORDER,
                                                                    demo.CROP_BORDER:-demo.CROP_BORDER]
    b = FLAT_BLOCK
    h, w = (high.shape[0] // b) * b, (high.shape[1] // b) * b
    return high[:h, :w].reshape(h // b, b, w // b, b).var(axis=(1, 3))


def flat_noise(tree: str, dataroot: str) -> dict:
    """``{label: σ}``: the high-pass σ (grey levels) in the target's flattest blocks of every scene of the tree, of
    the target and of each method's saved images: noise a method adds, or keeps, where the scene has no detail."""
    import glob

    import cv2

    from sdan_basicsr.data.srraw_dataset import SRRAWPairedDataset
    from sdan_basicsr.models.sdan_model import image_name

    dataset = SRRAWPairedDataset({'name': 'eval', 'dataroot': dataroot, 'phase': 'test'})
    variances = {'target': [], 'Bicubic': [], 'SDAN': []}
    for i in range(len(dataset)):
        item = dataset[i]
        stem = image_name(item['lq_path'])
        target = _block_variances(demo._white_balanced_target(item))
        flat = target <= np.quantile(target, FLAT_SHARE)
        variances['target'].append(target[flat])
        for label in ('Bicubic', 'SDAN'):
            saved = glob.glob(osp.join(ROOT, 'results', f'pretrained_eval_{tree}_{label}', 'visualization', '*',
                                       f'{stem}_*.png'))
            variances[label].append(_block_variances(cv2.imread(saved[0]))[flat])
    return {label: float(np.sqrt(np.concatenate(v).mean())) for label, v in variances.items()}


def evaluate(tree: str, weights: str) -> dict:
    dataroot = tree_folder(tree)
    rows = {}
    for label, opt in (('Bicubic', BICUBIC_OPT), ('SDAN', SDAN_OPT)):
        name = f'pretrained_eval_{tree}_{label}'
        run_test(opt, name, dataroot, weights if label == 'SDAN' else None)
        rows[label] = dict(mean=demo.read_test_metrics(ROOT, name), images=demo.read_image_metrics(ROOT, name),
                           colour=colour_errors(name, dataroot))
    rows['flat'] = flat_noise(tree, dataroot)
    return rows


def side_by_side(tree: str, out: str, sdan: str, width: int = 320) -> str:
    """Input | bicubic | ``sdan`` (the SDAN panel's label) | target of the tree's first scene, cropped where the
    target has most detail, as the images were saved (white balance applied); a JPEG small enough for the README."""
    import glob

    import cv2

    from sdan_basicsr.data.srraw_dataset import SRRAWPairedDataset
    from sdan_basicsr.models.sdan_model import image_name

    dataset = SRRAWPairedDataset({'name': 'eval', 'dataroot': tree_folder(tree), 'phase': 'test'})
    item = dataset[0]
    stem = image_name(item['lq_path'])
    target = demo._white_balanced_target(item)
    h, w = target.shape[:2]
    lq = cv2.resize(demo._white_balanced_target(dict(item, gt=item['lq_rgb'])), (w, h), interpolation=cv2.INTER_NEAREST)
    saved = [cv2.imread(glob.glob(osp.join(ROOT, 'results', f'pretrained_eval_{tree}_{label}', 'visualization', '*',
                                           f'{stem}_*.png'))[0]) for label in ('Bicubic', 'SDAN')]
    ch = width * 3 // 4
    y, x = demo._detail_box(target, ch, width)
    panels = [img[y:y + ch, x:x + width] for img in (lq, *saved, target)]
    labels = ['input (JPEG of the RAW)', 'bicubic', sdan, 'target (long focal)']
    band = demo._label_band(labels, width, 28, 4)
    spacer = np.full((ch, 4, 3), 255, np.uint8)
    row = np.concatenate([t for p in panels for t in (p, spacer)][:-1], axis=1)
    cv2.imwrite(out, np.concatenate([band, row]), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return out


def markdown(results: dict, weights: str, seconds: float) -> str:
    title = 'Shipped SDAN' if osp.join(ROOT, weights) == SHIPPED_WEIGHTS else f'`{weights}`'
    threads = int(os.environ.get('OMP_NUM_THREADS') or os.cpu_count())
    lines = [f'# {title}: held-out figures\n',
             f'`python bench/pretrained_eval.py` with `{weights}`, {platform.processor() or platform.machine()}, '
             f'{threads} thread{"s" if threads > 1 else ""}, {datetime.date.today()}, {seconds / 60:.1f} min. '
             'PSNR / SSIM / LPIPS on photographs never trained on; colour: worst 8-bit mean-colour error of a scene '
             "and channel (bicubic: the camera JPEG's own colours); flat-region noise: high-pass σ in grey levels "
             f"(grey minus its Gaussian blur of σ {HIGH_PASS_SIGMA:g}) in the target's flattest tenth of "
             f'{FLAT_BLOCK}² blocks, target / bicubic / SDAN: input noise that SDAN magnifies shows as SDAN > '
             'bicubic.\n',
             '| tree | Bicubic | SDAN | SDAN, colour-matched | Δ PSNR (plain / matched) '
             '| worst colour (bicubic / SDAN) | flat-region noise (target / bicubic / SDAN) |',
             '|---|---|---|---|---|---|---|']
    for tree, rows in results.items():
        b, s = rows['Bicubic']['mean'], rows['SDAN']['mean']
        matched = {k[:-len('_color_matched')]: v for k, v in s.items() if k.endswith('_color_matched')}
        worst = {label: max(np.abs(e).max() for e in rows[label]['colour'].values()) for label in ('Bicubic', 'SDAN')}
        flat = ' / '.join(f"{rows['flat'][label]:.2f}" for label in ('target', 'Bicubic', 'SDAN'))

        def cell(m):
            return f"{m['psnr']:.2f} / {m['ssim']:.4f} / {m['lpips']:.4f}"
        lines.append(f"| {tree} | {cell(b)} | {cell(s)} | {cell(matched)} | {s['psnr'] - b['psnr']:+.2f} / "
                     f"{matched['psnr'] - b['psnr']:+.2f} | {worst['Bicubic']:.1f} / {worst['SDAN']:.1f} % | {flat} |")
    lines += ['', '## Per scene', '', '| tree | scene | Bicubic | SDAN | colour R/G/B (%) | ahead on all three |',
              '|---|---|---|---|---|---|']
    for tree, rows in results.items():
        for stem, s in rows['SDAN']['images'].items():
            b = rows['Bicubic']['images'][stem]
            ahead = s['psnr'] > b['psnr'] and s['ssim'] > b['ssim'] and s['lpips'] < b['lpips']
            colour = '/'.join(f'{e:+.1f}' for e in rows['SDAN']['colour'][stem])
            lines.append(f"| {tree} | {stem} | {b['psnr']:.2f} / {b['ssim']:.4f} / {b['lpips']:.4f} | "
                         f"{s['psnr']:.2f} / {s['ssim']:.4f} / {s['lpips']:.4f} | {colour} | "
                         f"{'yes' if ahead else 'no'} |")
    return '\n'.join(lines) + '\n'


def checkpoint_name(weights: str) -> str:
    """``<experiment> <iteration>`` of a training's ``experiments/<experiment>/models/net_g_<iteration>.pth``, else the
    file's name without extension."""
    folder, stem = osp.split(osp.splitext(osp.abspath(weights))[0])
    if osp.basename(folder) == 'models' and stem.startswith('net_g_'):
        return f"{osp.basename(osp.dirname(folder))} {stem[len('net_g_'):]}"
    return stem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--weights', default=SHIPPED_WEIGHTS)
    parser.add_argument('--trees', nargs='+', default=['demo', *ROBUST_TREES], choices=['demo', *ROBUST_TREES])
    parser.add_argument('--out', default=osp.join('bench', 'pretrained_eval.md'))
    parser.add_argument('--figure', help="side-by-side of the demo tree's first held-out scene (default: the "
                        "README's docs/figures/pretrained_side_by_side.jpg for the shipped weights, else beside --out)")
    args = parser.parse_args()
    os.chdir(ROOT)
    start = time.time()
    results = {tree: evaluate(tree, osp.abspath(args.weights)) for tree in args.trees}
    text = markdown(results, osp.relpath(osp.abspath(args.weights), ROOT), time.time() - start)
    with open(args.out, 'w', encoding='utf-8') as f:
        f.write(text)
    print(text)
    shipped = osp.abspath(args.weights) == SHIPPED_WEIGHTS
    if shipped and set(args.trees) == {'demo', *ROBUST_TREES}:
        with open(MODEL_CARD, encoding='utf-8') as f:
            card = f.read()
        head, rest = card.split(MARKERS[0])
        tail = rest.split(MARKERS[1])[1]
        figures = text.split('\n', 2)[2]  # without the title
        with open(MODEL_CARD, 'w', encoding='utf-8') as f:
            f.write(f'{head}{MARKERS[0]}\n{figures}{MARKERS[1]}{tail}')
    if 'demo' in results:
        args.figure = args.figure or (osp.join('docs', 'figures', 'pretrained_side_by_side.jpg') if shipped else
                                      osp.splitext(args.out)[0] + '_side_by_side.jpg')
        os.makedirs(osp.dirname(args.figure) or '.', exist_ok=True)
        label = 'SDAN (shipped)' if shipped else f'SDAN ({checkpoint_name(args.weights)})'
        print(f"side-by-side: {side_by_side('demo', args.figure, label)}")


if __name__ == '__main__':
    main()
