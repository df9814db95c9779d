"""MSFFN (×4) and DKSAN (×16) in miniature on held-out footage: temporal gain, the papers' ablations, EDVR-M.

Every trained row goes through the real launchers: ``sdan_basicsr/train.py`` on the training septuplets of the video
set (``scripts/make_video_data.sh``: opencv-doc's vtest.avi and Megamind.avi, generated pans with moving objects),
all rows with one budget, then ``sdan_basicsr/test.py`` with BasicSR's ``VideoTestDataset`` on the held-out clips
(tree.avi, generated over the test photographs): PSNR / SSIM on Y per clip, then over the clips, as Vid4 is scored.
Writes ``bench/video_bench.md`` (the tables, command, machine, date) and ``bench/video_bench.png`` (a held-out frame:
bicubic | MSFFN | target at ×4, with MSFFN-small's 7-frame and centre-frame rows where they ran, bicubic | DKSAN |
target at ×16).

    python bench/video_bench.py                                      # every row, 1000 iterations, seeds 0 and 1
    python bench/video_bench.py --rows bicubic_x4 msffn msffn_centre  # some rows
    python bench/video_bench.py --smoke                               # a few iterations on tiny clips, one seed

A row whose run finished in ``--work`` with the same options on the same video set is not trained again
(``rows/<row>_seed<k>.json``, also kept in ``bench/video_bench_rows/<name of --work>/`` in the repository), so an
interrupted bench resumes and rows run apart, on other days too, end up in one table. The default
run is 34 trainings (17 rows, 2 seeds); one iteration of 14 of the trained rows costs 27.3 s of single-thread CPU time
at batch 4 (1.9 s for MSFFN, 3.7 s with PCD, 3.3 s for EDVR-M, 2.2 s for DKSAN), the eq. (8) row as much as MSFFN,
the two MSFFN-small rows a third of it each: about 8.5 h on 2 free cores. Five rows are only tested: the 7-frame
weights of MSFFN, one-stage-fusion MSFFN, DKSAN, EDVR-M and MSFFN-small fed the centre frame seven times (how much
their output depends on the neighbouring frames).
"""
import argparse
import copy
import glob
import json
import os
import re
import subprocess
import sys
import time
from os import path as osp
from typing import Optional

import torch
import yaml

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench_util import device_name  # noqa: E402

from sdan_basicsr.tools.make_video_demo import BENCH_SET, make_video_demo  # noqa: E402

#: The networks at the benchmark's size: each paper's structure, fewer channels and blocks (paper sizes in brackets).
#: MSFFN: C 32 [80; 64 for Ours-S], 2 extraction blocks [5], 6 MRFBs [16], 4 deformable groups [8], feedback and
#: attention as the paper. DKSAN: C 32 [128], 2 extraction blocks [5], RCABs (4, 3, 2, 2) per level [30, 20, 15, 10],
#: reduction 8 [16, which would leave 2 channels], 2 DK layers in DKC_Align and DKSA [6, 5], 1 in the light DKSA [2].
#: EDVR-M (BasicSR's EDVR: PCD, TSA, 5 frames) scaled as MSFFN: C 32 [64], 2 extraction blocks [5], 6
#: reconstruction blocks [10], 4 deformable groups [8].
MSFFN_NET = dict(type='MSFFN', num_feat=32, num_frame=7, num_extract_block=2, num_block=6, upscale=4,
                 deformable_groups=4, mask_distance='mean')
DKSAN_NET = dict(type='DKSAN', num_feat=32, num_frame=7, num_extract_block=2, num_rcab=[4, 3, 2, 2], upscale=16,
                 squeeze_factor=8, num_dk_align=2, num_dk_attn=2, num_dk_light=1, deformable_groups=4)
#: MSFFN at a third of the benchmark's cost per iteration, to reach longer budgets: C 16, 1 extraction block, 3 MRFBs,
#: 2 deformable groups (90 k parameters).
MSFFN_SMALL_NET = dict(MSFFN_NET, num_feat=16, num_extract_block=1, num_block=3, deformable_groups=2)
EDVR_NET = dict(type='EDVR', num_feat=32, num_frame=5, num_extract_block=2, num_reconstruct_block=6,
                deformable_groups=4, with_tsa=True)


def _centre(net: dict) -> dict:
    return {'type': 'CentreFrameRepeat', 'network': net}


#: row → (scale, table label, where in the paper, network_g (None: bicubic, not trained))
ROWS = {
    'bicubic_x4': (4, 'Bicubic', '', None),
    'msffn': (4, 'MSFFN, 7 frames (MDD, SFT)', 'Table VIII N_f = 7', MSFFN_NET),
    'msffn_centre': (4, 'MSFFN, centre frame ×7', 'Table VIII N_f = 1', _centre(MSFFN_NET)),
    'msffn_mask_sum': (4, 'MSFFN, eq. (8) distance summed over channels', 'eq. (8) as printed',
                       dict(MSFFN_NET, mask_distance='sum')),
    'msffn_nf3': (4, 'MSFFN, 3 frames', 'Table VIII N_f = 3', dict(MSFFN_NET, num_frame=3)),
    'msffn_nf5': (4, 'MSFFN, 5 frames', 'Table VIII N_f = 5', dict(MSFFN_NET, num_frame=5)),
    'msffn_pcd': (4, 'MSFFN, PCD alignment', 'Table V PCD', dict(MSFFN_NET, alignment='pcd')),
    'msffn_df': (4, 'MSFFN, one-stage fusion (DF)', 'Table VI DF', dict(MSFFN_NET, fusion='df')),
    'msffn_generated': (4, 'MSFFN, 7 frames, generated septuplets only', 'diagnostic', MSFFN_NET),
    'msffn_centre_generated': (4, 'MSFFN, centre frame ×7, generated septuplets only', 'diagnostic',
                               _centre(MSFFN_NET)),
    'msffn_small_generated': (4, 'MSFFN-small (C 16), 7 frames, generated septuplets only', 'budget diagnostic',
                              MSFFN_SMALL_NET),
    'msffn_small_centre_generated': (4, 'MSFFN-small (C 16), centre frame ×7, generated septuplets only',
                                     'budget diagnostic', _centre(MSFFN_SMALL_NET)),
    'edvr_m': (4, 'EDVR-M (BasicSR), 5 frames', 'anchor', EDVR_NET),
    'bicubic_x16': (16, 'Bicubic', '', None),
    'dksan_backbone': (16, 'DKSAN backbone (resblocks)', 'Table 3 backbone',
                       dict(DKSAN_NET, with_ca=False, with_dkc_align=False, with_dksa=False)),
    'dksan_ca': (16, '+ channel attention', 'Table 3 w/o Alignment & DKSA',
                 dict(DKSAN_NET, with_dkc_align=False, with_dksa=False)),
    'dksan_align': (16, '+ DKC_Align', 'Table 3 w/o DKSA', dict(DKSAN_NET, with_dksa=False)),
    'dksan': (16, '+ DKSA = DKSAN, 7 frames', 'Table 3 DKSAN', DKSAN_NET),
    'dksan_centre': (16, 'DKSAN, centre frame ×7', '', _centre(DKSAN_NET)),
    'msffn_fed_centre': (4, 'MSFFN 7-frame weights, fed the centre frame ×7', 'use of the neighbours',
                         _centre(MSFFN_NET)),
    'dksan_fed_centre': (16, 'DKSAN 7-frame weights, fed the centre frame ×7', 'use of the neighbours',
                         _centre(DKSAN_NET)),
    'msffn_df_fed_centre': (4, 'MSFFN (DF) weights, fed the centre frame ×7', 'use of the neighbours',
                            _centre(dict(MSFFN_NET, fusion='df'))),
    'edvr_m_fed_centre': (4, 'EDVR-M weights, fed the centre frame ×5', 'use of the neighbours', _centre(EDVR_NET)),
    'msffn_small_fed_centre': (4, 'MSFFN-small 7-frame weights, fed the centre frame ×7', 'use of the neighbours',
                               _centre(MSFFN_SMALL_NET)),
}
#: Rows trained on the septuplets of some sources only: whether MSFFN learns its temporal gain when every training
#: septuplet holds one (``bench/video_oracle.md``: vtest's, 113 of 198, hold none).
TRAIN_SOURCES = {row: ['generated'] for row in ('msffn_generated', 'msffn_centre_generated', 'msffn_small_generated',
                                                'msffn_small_centre_generated')}
#: Rows that are not trained but tested with the weights another row trained (same seed), every input frame replaced
#: by the centre one: how much the 7-frame network's output depends on its neighbours.
FED_CENTRE = {'msffn_fed_centre': 'msffn', 'dksan_fed_centre': 'dksan', 'msffn_df_fed_centre': 'msffn_df',
              'edvr_m_fed_centre': 'edvr_m', 'msffn_small_fed_centre': 'msffn_small_generated'}
#: The rows of ``--smoke`` and its video set (generated clips only, 64 px) and budget.
SMOKE_ROWS = ['bicubic_x4', 'msffn', 'msffn_centre', 'msffn_fed_centre', 'bicubic_x16', 'dksan']
SMOKE_SET = dict(scale=(4, 16), gt_size=64, num_train_clips=4, num_test_clips=2, num_test_frames=8, num_objects=3,
                 videos=None, seed=0)
#: GT patch side of training per scale (LR 32² at ×4, 16² at ×16), and the smoke run's.
GT_SIZE = {4: 128, 16: 256}
SMOKE_GT_SIZE = {4: 32, 16: 64}
#: The option file whose training settings (optimiser, schedule, loss) every trained row of a scale takes.
BASE_OPTIONS = {4: 'train_msffn_demo.yml', 16: 'train_dksan_demo.yml'}
METRICS = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': True},
           'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': True}}
#: The held-out frame of the picture: the middle of the first clip of tree.avi (of the first clip in the smoke set).
PICTURE = {'clip': 'tree_00', 'frame': 17}
#: The rows the picture shows beside bicubic and the target, and their labels, per scale (those the run has).
PICTURE_ROWS = {4: (('msffn', 'MSFFN'), ('msffn_small_generated', 'MSFFN-small'),
                    ('msffn_small_centre_generated', 'MSFFN-small centre')),
                16: (('dksan', 'DKSAN'),)}
#: The rows whose test (first seed) saves its images for the picture.
PICTURED = {r for scale, rows in PICTURE_ROWS.items() for r in [f'bicubic_x{scale}'] + [row for row, _ in rows]}


def num_frame(row: str) -> int:
    """Frames the row's network reads (7 for bicubic, which upsamples the centre one)."""
    net = ROWS[row][3]
    net = net and (net['network'] if net['type'] == 'CentreFrameRepeat' else net)
    return net['num_frame'] if net else 7


def _data_paths(data: str, scale: int) -> dict:
    return {'dataroot_gt': osp.join(data, 'vimeo_septuplet', 'sequences'),
            'dataroot_lq': osp.join(data, f'vimeo_septuplet_matlabLRx{scale}', 'sequences'),
            'meta_info_file': osp.join(data, 'meta_info_train_GT.txt')}


def _meta_info(meta: str, sources: list, work: str) -> str:
    """A copy of the training list ``meta`` in ``work`` with the septuplets of ``sources`` only."""
    path = osp.join(work, 'meta_info', f'meta_info_train_GT_{"_".join(sources)}.txt')
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(meta, encoding='utf-8') as f:
        lines = [line for line in f if line.split('/')[0] in sources]
    with open(path, 'w', encoding='utf-8') as f:
        f.writelines(lines)
    return path


def train_options(row: str, seed: int, data: str, args) -> dict:
    scale, _, _, net = ROWS[row]
    with open(osp.join(ROOT, 'options', BASE_OPTIONS[scale]), encoding='utf-8') as f:
        opt = yaml.safe_load(f)
    opt.update(name=f'video_bench_{row}_seed{seed}', num_gpu='auto', manual_seed=seed, network_g=copy.deepcopy(net))
    train = opt['datasets']['train']
    train.update(_data_paths(data, scale), name='VideoBench', num_frame=num_frame(row), gt_size=args.gt_size[scale],
                 batch_size_per_gpu=args.batch)
    if args.no_flip_rot:
        train.update(use_hflip=False, use_rot=False)
    if row in TRAIN_SOURCES:
        train['meta_info_file'] = _meta_info(train['meta_info_file'], TRAIN_SOURCES[row], args.work)
    opt['datasets'] = {'train': train}  # no validation: the held-out clips are only tested, after training
    if args.init:  # continue the same row and seed of an earlier bench: its weights, a fresh cosine period
        opt['path']['pretrain_network_g'] = osp.join(args.init, 'experiments', opt['name'], 'models',
                                                     'net_g_latest.pth')
    opt.pop('val', None)
    opt['train'].update(total_iter=args.iters)
    opt['train']['scheduler'].update(periods=[args.iters])
    opt['logger'].update(print_freq=max(args.iters // 20, 1), save_checkpoint_freq=args.iters)
    return opt


def test_options(row: str, seed: int, data: str, weights, save_img: bool) -> dict:
    scale, _, _, net = ROWS[row]
    name = f'video_bench_{row}' + (f'_seed{seed}' if net else '') + '_test'
    return {'name': name, 'model_type': 'VideoBaseModel', 'scale': scale, 'num_gpu': 'auto',
            'datasets': {'test': {'name': 'Vid4', 'type': 'VideoTestDataset',
                                  'dataroot_gt': osp.join(data, 'test', 'GT'),
                                  'dataroot_lq': osp.join(data, 'test', f'BIx{scale}'), 'cache_data': True,
                                  'io_backend': {'type': 'disk'}, 'num_frame': num_frame(row),
                                  'padding': 'reflection_circle'}},
            'network_g': copy.deepcopy(net) or {'type': 'Bicubic', 'upscale': scale},
            'path': {'pretrain_network_g': weights, 'strict_load_g': True},
            'val': {'save_img': save_img, 'suffix': None, 'metrics': METRICS}}


def _write(folder: str, name: str, opt: dict) -> str:
    os.makedirs(folder, exist_ok=True)
    path = osp.join(folder, f'{name}.yml')
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f)
    return path


def _launch(script: str, opt_path: str, work: str) -> None:
    cmd = [sys.executable, osp.join(ROOT, 'sdan_basicsr', script), '-opt', opt_path]
    proc = subprocess.run(cmd, env=dict(os.environ, SDAN_ROOT=work), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}')


def read_video_metrics(work: str, name: str) -> dict:
    """``{metric: {'mean': value, <clip>: value, ...}}`` of the latest ``test.py`` log of ``name``.

    ``VideoBaseModel`` logs one line per metric: ``# psnr: <mean over clips>`` then ``# <clip>: <mean over its
    frames>`` for every clip.
    """
    logs = sorted(glob.glob(osp.join(work, 'results', name, f'test_{name}_*.log')), key=osp.getmtime)
    if not logs:
        raise FileNotFoundError(f'no test log of {name} under {osp.join(work, "results", name)}')
    with open(logs[-1], encoding='utf-8') as f:
        text = f.read()
    metrics = {}
    for metric in METRICS:
        line = re.search(rf'# {metric}: .*', text).group(0)
        values = re.findall(r'# (\S+): ([-+0-9.eE]+)', line)
        metrics[metric] = {'mean' if key == metric else key: float(value) for key, value in values}
    return metrics


def _same_test(kept: dict, test_opt: dict) -> bool:
    """Whether a kept test answers ``test_opt``: the same options, or the same but for images it saved and
    ``test_opt`` does not need."""
    if test_opt['val']['save_img']:
        return kept == test_opt
    return kept == dict(test_opt, val=dict(test_opt['val'], save_img=kept['val']['save_img']))


def _portable(obj):
    """``obj`` with every path inside the repository made relative to it, so that kept rows answer a clone elsewhere."""
    if isinstance(obj, dict):
        return {k: _portable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_portable(v) for v in obj]
    if isinstance(obj, str) and obj.startswith(ROOT + os.sep):
        return osp.relpath(obj, ROOT)
    return obj


def _read_record(row: str, seed: int, args) -> Optional[dict]:
    """The kept record of ``row`` and ``seed``: in ``--work``, else in ``--keep`` (the repository's, across runs)."""
    name = f'{row}_seed{seed}.json'
    for folder in (osp.join(args.work, 'rows'), args.keep):
        if folder and osp.isfile(osp.join(folder, name)):
            with open(osp.join(folder, name), encoding='utf-8') as f:
                return json.load(f)
    return None


def run_row(row: str, seed: int, data: str, set_args: dict, args) -> dict:
    """Train (unless bicubic) and test ``row`` with ``seed``; ``rows/<row>_seed<k>.json`` in ``--work`` and in
    ``--keep`` keeps the result with the options and video set it came from (paths relative to the repository), and
    is reused while they are unchanged (tested again for the picture's images when they are missing and the weights
    are there)."""
    source = FED_CENTRE.get(row, row)
    trained = ROWS[row][3] is not None and row not in FED_CENTRE
    train_opt = train_options(source, seed, data, args) if ROWS[row][3] else None
    trained_weights = (osp.join(args.work, 'experiments', train_opt['name'], 'models', 'net_g_latest.pth')
                       if train_opt else None)
    # a fed-centre row tests the source row's weights under CentreFrameRepeat's prefix, written when it is tested
    weights = osp.join(args.work, 'weights', f'{row}_seed{seed}.pth') if row in FED_CENTRE else trained_weights
    save_img = not args.no_picture and seed == args.seeds[0] and row in PICTURED
    test_opt = test_options(row, seed, data, weights, save_img)
    record = osp.join(args.work, 'rows', f'{row}_seed{seed}.json')
    kept = _read_record(row, seed, args)
    if kept is not None:
        images = osp.isdir(osp.join(args.work, 'results', test_opt['name'], 'visualization'))
        if (kept['train_opt'], kept['set']) != (_portable(train_opt), set_args):
            kept = None
        elif _same_test(kept['test_opt'], _portable(test_opt)) and (
                images or not save_img or (trained and not osp.isfile(trained_weights))):
            print(f'{row} seed {seed}: reusing {record}', flush=True)
            return kept['result']
    opts = osp.join(args.work, 'options')
    seconds = 0.
    if trained and kept is not None and osp.isfile(trained_weights):  # only the test differs (its saved images)
        seconds = kept['result']['seconds']
        print(f'{row} seed {seed}: testing the weights trained for {record} again', flush=True)
    elif trained:
        init = train_opt['path'].get('pretrain_network_g')
        if init and not osp.isfile(init):  # a kept row is reused without them, a training needs them
            raise FileNotFoundError(f'--init {args.init}: no weights of {row} seed {seed} at {init}')
        start = time.time()
        _launch('train.py', _write(opts, train_opt['name'], train_opt), args.work)
        seconds = time.time() - start
    if row in FED_CENTRE:
        os.makedirs(osp.dirname(weights), exist_ok=True)
        params = torch.load(trained_weights, map_location='cpu', weights_only=True)['params']
        torch.save({'params': {f'net.{k}': v for k, v in params.items()}}, weights)
    _launch('test.py', _write(opts, test_opt['name'], test_opt), args.work)
    result = dict(read_video_metrics(args.work, test_opt['name']), seconds=seconds, test=test_opt['name'])
    kept = {'train_opt': _portable(train_opt), 'test_opt': _portable(test_opt), 'set': set_args, 'result': result}
    for folder in {osp.dirname(record), args.keep} - {None}:
        os.makedirs(folder, exist_ok=True)
        with open(osp.join(folder, osp.basename(record)), 'w', encoding='utf-8') as f:
            json.dump(kept, f, indent=1)
    return result


def parameters(row: str) -> int:
    """Parameters of ``row``'s network (0 for bicubic), built through BasicSR's ARCH_REGISTRY."""
    from basicsr.archs import build_network

    import sdan_basicsr  # noqa: F401  (registers the archs)

    net = ROWS[row][3]
    return sum(p.numel() for p in build_network(copy.deepcopy(net)).parameters()) if net else 0


def _stats(values: list) -> tuple:
    """Mean and half the range (the spread of the seeds; 0 for one)."""
    return sum(values) / len(values), (max(values) - min(values)) / 2


def _cell(values: list, digits: int) -> str:
    mean, spread = _stats(values)
    return f'{mean:.{digits}f}' + (f' ± {spread:.{digits}f}' if len(values) > 1 else '')


def scale_table(scale: int, results: dict, clips: list) -> list:
    """Markdown table of the rows of ``scale``: parameters, PSNR-Y / SSIM-Y over the seeds, per clip, train time."""
    rows = [row for row in results if ROWS[row][0] == scale]
    bicubic = f'bicubic_x{scale}'
    lines = ['| row | paper | parameters | PSNR-Y (dB) | SSIM-Y | Δ bicubic (dB) | '
             + ' | '.join(clips) + ' | train (s) |', '|---' * (7 + len(clips)) + '|']
    for row in rows:
        runs = results[row]
        psnr = [r['psnr']['mean'] for r in runs]
        delta = (_cell([p - results[bicubic][0]['psnr']['mean'] for p in psnr], 2)
                 if bicubic in results and row != bicubic else '')
        lines.append(f'| {ROWS[row][1]} | {ROWS[row][2]} | {parameters(row):,} | {_cell(psnr, 2)} | '
                     f'{_cell([r["ssim"]["mean"] for r in runs], 4)} | {delta} | '
                     + ' | '.join(_cell([r['psnr'][c] for r in runs], 2) for c in clips)
                     + f' | {_cell([r["seconds"] for r in runs], 0)} |')
    return lines


#: The papers' claims and the project's targets as (row a, row b, margin in dB): PSNR-Y of a − b ≥ margin.
CHECKS = [('msffn', 'bicubic_x4', 1.5, 'MSFFN (7 frames) over bicubic (target ≥ 1.5 dB)'),
          ('msffn', 'msffn_centre', 0.3, 'MSFFN temporal gain: 7 frames over the centre frame ×7 (target ≥ 0.3 dB)'),
          ('msffn_generated', 'msffn_centre_generated', 0.3, 'MSFFN temporal gain, trained on the generated '
           'septuplets only (all of them hold one)'),
          ('msffn_small_generated', 'msffn_small_centre_generated', 0.3, 'MSFFN-small temporal gain, trained on the '
           'generated septuplets only'),
          ('msffn_nf3', 'msffn_centre', 0., 'N_f = 3 over N_f = 1 (Table VIII)'),
          ('msffn_nf5', 'msffn_nf3', 0., 'N_f = 5 over N_f = 3 (Table VIII)'),
          ('msffn', 'msffn_nf5', 0., 'N_f = 7 over N_f = 5 (Table VIII)'),
          ('msffn', 'msffn_pcd', 0., 'MDD over PCD alignment (Table V: +0.14 dB)'),
          ('msffn', 'msffn_df', 0., 'multi-stage (SFT) over one-stage fusion (Table VI: +0.24 dB)'),
          ('msffn', 'edvr_m', 0., 'MSFFN over EDVR-M'),
          ('dksan', 'bicubic_x16', 0., 'DKSAN over bicubic at ×16'),
          ('dksan', 'dksan_centre', 0., 'DKSAN temporal gain: 7 frames over the centre frame ×7'),
          ('msffn', 'msffn_fed_centre', 0.1, 'MSFFN uses its neighbours: its weights fed 7 frames over fed the centre '
           'frame ×7 (≥ 0.1 dB)'),
          ('dksan', 'dksan_fed_centre', 0.1, 'DKSAN uses its neighbours: its weights fed 7 frames over fed the centre '
           'frame ×7 (≥ 0.1 dB)'),
          ('msffn_df', 'msffn_df_fed_centre', 0.1, 'MSFFN with one-stage fusion uses its neighbours: its weights fed '
           '7 frames over fed the centre frame ×7 (≥ 0.1 dB)'),
          ('msffn_small_generated', 'msffn_small_fed_centre', 0.1, 'MSFFN-small uses its neighbours: its weights fed '
           '7 frames over fed the centre frame ×7 (≥ 0.1 dB)'),
          ('edvr_m', 'edvr_m_fed_centre', 0.1, 'EDVR-M uses its neighbours: its weights fed 5 frames over fed the '
           'centre frame ×5 (≥ 0.1 dB)'),
          ('dksan_ca', 'dksan_backbone', 0., '+ CA over backbone (Table 3: +0.24 dB)'),
          ('dksan_align', 'dksan_ca', 0., '+ DKC_Align over + CA (Table 3: +0.05 dB)'),
          ('dksan', 'dksan_align', 0., '+ DKSA over + DKC_Align (Table 3: +0.11 dB)')]


def check_lines(results: dict) -> list:
    """Each claim whose two rows ran: the difference of their mean PSNR-Y, the seeds' spread, and the verdict
    ('yes' when it clears the margin by more than the spread, 'within spread' when the spread covers the margin)."""
    lines = []
    for a, b, margin, claim in CHECKS:
        if a not in results or b not in results:
            continue
        (mean_a, spread_a), (mean_b, spread_b) = (_stats([r['psnr']['mean'] for r in results[k]]) for k in (a, b))
        diff, spread = mean_a - mean_b, spread_a + spread_b
        verdict = 'yes' if diff - spread >= margin else ('within spread' if diff + spread >= margin else 'no')
        seeds = min(len(results[a]), len(results[b]))
        spread_text = f'spread ± {spread:.2f}' if seeds > 1 else 'one seed, spread not measured'
        lines.append(f'- {claim}: {diff:+.2f} dB ({spread_text}): **{verdict}**')
    return lines


def picture(results: dict, data: str, work: str, out: str) -> str:
    """One held-out frame per scale: bicubic | each pictured network the run has | target, each labelled with its
    PSNR-Y on that frame."""
    import cv2
    import numpy as np
    from basicsr.metrics import calculate_psnr

    clip = PICTURE['clip'] if osp.isdir(osp.join(data, 'test', 'GT', PICTURE['clip'])) else sorted(
        os.listdir(osp.join(data, 'test', 'GT')))[0]
    frame = min(PICTURE['frame'], len(os.listdir(osp.join(data, 'test', 'GT', clip))) // 2)
    gt = cv2.imread(osp.join(data, 'test', 'GT', clip, f'{frame:08d}.png'))
    rows = []
    for scale, networks in PICTURE_ROWS.items():
        shown = {f'bicubic_x{scale}': 'bicubic'}
        shown.update((row, label) for row, label in networks if row in results)
        if len(shown) == 1 or f'bicubic_x{scale}' not in results:
            continue
        found = {r: glob.glob(osp.join(work, 'results', results[r][0]['test'], 'visualization', '*', clip,
                                       f'{frame:08d}_*.png')) for r in shown}
        if not all(found.values()):  # rows of the first seed kept from another run without their images
            continue
        tiles = []
        for r, name in shown.items():
            img = cv2.imread(found[r][0])
            psnr = calculate_psnr(img, gt, 0, test_y_channel=True)
            tiles.append((img, f'{name} x{scale}: {psnr:.2f} dB'))
        tiles.append((gt, 'target'))
        labelled = []
        for img, label in tiles:
            band = np.full((24, img.shape[1], 3), 255, np.uint8)
            cv2.putText(band, label, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
            labelled.append(np.vstack([band, img]))
        rows.append(np.hstack(labelled))
    if rows:
        width = max(row.shape[1] for row in rows)  # scales with fewer networks are padded white on the right
        cv2.imwrite(out, np.vstack([np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=255)
                                    for row in rows]))
    return f'{clip}, frame {frame}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rows', nargs='+', choices=list(ROWS), help='default: all (with --smoke: SMOKE_ROWS)')
    parser.add_argument('--iters', type=int, help='training iterations per row (default 1000; --smoke: 2)')
    parser.add_argument('--batch', type=int, help='training batch (default 4; --smoke: 1)')
    parser.add_argument('--seeds', type=int, nargs='+',
                        help='manual_seed of the trained rows (default 0 1; --smoke: 0)')
    parser.add_argument('--data', help='video set (default datasets/video_opencv, built with BENCH_SET if missing; '
                        '--smoke: <work>/data_smoke, SMOKE_SET)')
    parser.add_argument('--work', help='experiments, results and kept rows (default experiments/video_bench, '
                        '--smoke: experiments/video_bench_smoke)')
    parser.add_argument('--out', help='the report (default bench/video_bench.md; --smoke: <work>/video_bench.md); '
                        'the picture beside it (.png)')
    parser.add_argument('--init', help='the --work of an earlier bench: every trained row starts from the weights of '
                        'the same row and seed there and trains --iters more (a longer budget in rounds)')
    parser.add_argument('--keep', help='a second home of the finished rows, read when --work lacks them (default '
                        'bench/video_bench_rows/<name of --work>, kept in the repository; --smoke: none)')
    parser.add_argument('--no-flip-rot', action='store_true', help='train without flips and 90° rotations, so that a '
                        'set whose clips all move alike (make_video_demo --pan) keeps one motion')
    parser.add_argument('--no-picture', action='store_true', help='no picture beside the report (another report '
                        'shows the same rows)')
    parser.add_argument('--smoke', action='store_true', help='prove the bench end to end: tiny clips, a few '
                        'iterations, one seed, a few rows')
    args = parser.parse_args()
    smoke = args.smoke
    args.rows = [row for row in ROWS if row in (args.rows or (SMOKE_ROWS if smoke else ROWS))]  # sources first
    for row, source in FED_CENTRE.items():
        if row in args.rows and source not in args.rows:
            parser.error(f'--rows {row} needs {source} (whose weights it tests) among the rows')
    args.iters = args.iters or (2 if smoke else 1000)
    args.batch = args.batch or (1 if smoke else 4)
    args.seeds = args.seeds or ([0] if smoke else [0, 1])
    work_given = args.work is not None
    args.work = osp.abspath(args.work or osp.join(ROOT, 'experiments', 'video_bench_smoke' if smoke else 'video_bench'))
    args.init = args.init and osp.abspath(args.init)
    args.keep = osp.abspath(args.keep) if args.keep else (
        None if smoke else osp.join(ROOT, 'bench', 'video_bench_rows', osp.basename(args.work)))
    args.gt_size = SMOKE_GT_SIZE if smoke else GT_SIZE
    video_set = SMOKE_SET if smoke and not args.data else BENCH_SET
    data = osp.abspath(args.data or (osp.join(args.work, 'data_smoke') if smoke else
                                     osp.join(ROOT, 'datasets', 'video_opencv')))
    out = args.out or (osp.join(args.work, 'video_bench.md') if smoke else osp.join(ROOT, 'bench', 'video_bench.md'))
    if not args.data:
        make_video_demo(data, **video_set)  # kept when it is already there
    with open(osp.join(data, 'clips.json'), encoding='utf-8') as f:
        clips_meta = json.load(f)

    results = {}
    for row in args.rows:
        seeds = args.seeds if ROWS[row][3] else args.seeds[:1]
        results[row] = [run_row(row, seed, data, clips_meta['args'], args) for seed in seeds]
        print(row, [round(r['psnr']['mean'], 3) for r in results[row]], flush=True)

    png = osp.splitext(out)[0] + '.png'
    frame = None if args.no_picture else picture(results, data, args.work, png)
    clips = sorted(clips_meta['test'])
    sources = {}
    for key in clips_meta['train']:
        sources[key.split('/')[0]] = sources.get(key.split('/')[0], 0) + 1
    command = 'python bench/video_bench.py' + ' '.join(
        [''] + (['--smoke'] if smoke else []) + (['--no-picture'] if args.no_picture else [])
        + (['--no-flip-rot'] if args.no_flip_rot else [])
        + ([f'--data {osp.relpath(data, ROOT)}'] if args.data else [])
        + [f'--rows {" ".join(args.rows)}', f'--iters {args.iters}', f'--batch {args.batch}',
           f'--seeds {" ".join(map(str, args.seeds))}']
        + ([f'--work {osp.relpath(args.work, ROOT)}'] if args.init or work_given else [])
        + ([f'--init {osp.relpath(args.init, ROOT)}'] if args.init else []))
    lines = [
        '# Video benchmark: MSFFN (×4) and DKSAN (×16) on held-out clips', '',
        f'Command: `{command}`; {time.strftime("%Y-%m-%d")}; {device_name(torch.device("cpu"))}, '
        f'OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")}.', '',
        f'Data: `{osp.relpath(data, ROOT)}` ({json.dumps(clips_meta["args"])}); training septuplets by source: '
        + ', '.join(f'{k} {v}' for k, v in sources.items()) + '; held-out clips: '
        + ', '.join(f'{c} ({clips_meta["test"][c]["source"]})' for c in clips) + '.', '',
        f'Budget per trained row: {args.iters} iterations'
        + (f' from the weights of the same row and seed in `{osp.relpath(args.init, ROOT)}` (one more cosine period)'
           if args.init else '') + f', batch {args.batch}, GT patches '
        + ', '.join(f'{g}² at ×{s}' for s, g in args.gt_size.items())
        + ', Adam 4e-4 with cosine decay, Charbonnier loss (the training settings of '
        + ' and '.join(f'`options/{f}`' for f in BASE_OPTIONS.values()) + f'); seeds {args.seeds} (PSNR ± half '
        'the range over the seeds). Test: `VideoTestDataset` (each row\'s own frame window, reflection_circle '
        'padding), PSNR / SSIM on Y without a border crop, averaged per clip then over the clips.', '']
    for scale, title in ((4, 'MSFFN ×4'), (16, 'DKSAN ×16')):
        if any(ROWS[row][0] == scale for row in results):
            lines += [f'## {title}', ''] + scale_table(scale, results, clips) + ['']
    lines += ['## The papers\' claims and the project\'s targets', '',
              'PSNR-Y of one row minus another; **yes** when the difference clears the margin by more than the '
              'spread (the sum of both rows\' half-ranges over the seeds), **within spread** when only the spread '
              'reaches it, **no** otherwise.', ''] + (check_lines(results) or ['- (no pair ran)'])
    if frame and osp.isfile(png):
        lines += ['', f'Held-out frame ({frame}): `{osp.basename(png)}`', '', f'![held-out frame]({osp.basename(png)})']
    with open(out, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
