"""Preprocess an SR-RAW tree: write ``tform.txt`` (ECC affines) and ``wb.txt`` (white balance) in every scene.

Usage: ``sdan-prepare-srraw ROOT [--jobs N] [--force]`` (or ``python -m sdan_basicsr.tools.prepare_srraw``).
"""
import argparse
import multiprocessing
import os.path as osp
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from sdan_basicsr.data import raw_utils

#: ECC runs on images whose width is at least this after downscaling by a power of 2 (at most 8).
ECC_MIN_WIDTH = 256
ECC_MAX_DOWNSCALE = 8
#: An ECC result whose translation exceeds this fraction of the image is rejected as not converged.
ECC_MAX_SHIFT = 0.2


@dataclass
class PrepareReport:
    """What :func:`prepare_srraw` did: scenes written or already done, and the problems it skipped."""
    written: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    unreadable: List[str] = field(default_factory=list)
    not_converged: List[str] = field(default_factory=list)

    def merge(self, other: 'PrepareReport') -> None:
        for name in ('written', 'skipped', 'unreadable', 'not_converged'):
            getattr(self, name).extend(getattr(other, name))

    def summary(self) -> str:
        lines = [f'{len(self.written)} scenes written, {len(self.skipped)} already prepared.']
        if self.unreadable:
            lines.append(f'{len(self.unreadable)} unreadable files (skipped):')
            lines += [f'  {u}' for u in self.unreadable]
        if self.not_converged:
            lines.append(f'{len(self.not_converged)} shots whose ECC did not converge (left out of tform.txt):')
            lines += [f'  {u}' for u in self.not_converged]
        return '\n'.join(lines)


def ecc_downscale(width: int) -> int:
    """Power-of-2 downscale factor for ECC: the largest ≤ 8 keeping ``width`` ≥ 256 (8 for SR-RAW)."""
    factor = 1
    while factor < ECC_MAX_DOWNSCALE and width / (factor * 2) >= ECC_MIN_WIDTH:
        factor *= 2
    return factor


def _read_gray(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise OSError(f'cannot read image {path}')
    return img.astype(np.float32) / 255.


def align_scene(scene: str, downscale: Optional[int] = None) -> Tuple[dict, Tuple[int, int, int, int], list, list]:
    """ECC affines from ``00001`` to every shot of a scene, each shot first brought to ``00001``'s field of view.

    Args:
        scene (str): Scene folder.
        downscale (int | None): Downscale factor for ECC. Default: None (:func:`ecc_downscale`).

    Returns:
        tuple: ``{'0000k': (2, 3) affine}`` at full ``00001`` resolution, the valid corner
        (min_h, max_h, min_w, max_w), unreadable files, shots that did not converge.
    """
    shots = sorted(osp.splitext(osp.basename(p))[0] for p in _list(scene, '.JPG'))
    ref_path = osp.join(scene, '00001.JPG')
    ref = _read_gray(ref_path)
    f_ref = raw_utils.read_focal_length(ref_path)
    h, w = ref.shape
    factor = downscale or ecc_downscale(w)
    hs, ws = int(round(h / factor)), int(round(w / factor))
    # small (downscaled) grid -> full grid of 00001, pixel centres aligned
    small_to_ref = raw_utils.grid_matrix(0, 0, factor) @ np.diag([w / (ws * factor), h / (hs * factor), 1])
    template = cv2.resize(ref, (ws, hs), interpolation=cv2.INTER_AREA)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 500, 1e-6)

    tforms, unreadable, failed = {}, [], []
    warp = np.eye(2, 3, dtype=np.float32)
    for name in shots:
        path = osp.join(scene, f'{name}.JPG')
        try:
            img = _read_gray(path)
            fov = raw_utils.to3x3(raw_utils.fov_matrix((h, w), img.shape, raw_utils.read_focal_length(path) / f_ref))
        except (OSError, ValueError) as err:
            unreadable.append(f'{path}: {err}')
            continue
        # the shot in 00001's field of view, on the small grid (anti-aliased by blurring first)
        sigma = max(0.0, 0.5 * (fov[0, 0] * factor - 1))
        if sigma > 0:
            img = cv2.GaussianBlur(img, (0, 0), sigma)
        moving = cv2.warpAffine(img, (fov @ small_to_ref)[:2], (ws, hs),
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
        result = None
        for init in (np.eye(2, 3, dtype=np.float32), warp):  # identity first, then the previous shot's
            try:
                _, result = cv2.findTransformECC(template, moving, init.copy(), cv2.MOTION_AFFINE, criteria, None, 5)
                break
            except cv2.error:
                continue
        if result is None:
            failed.append(f'{path}: ECC did not converge')
            continue
        if np.abs(result[:, 2]).max() > ECC_MAX_SHIFT * min(hs, ws):
            failed.append(f'{path}: ECC diverged (shift {result[:, 2]} px at 1/{factor} scale)')
            continue
        warp = result
        full = small_to_ref @ raw_utils.to3x3(result) @ np.linalg.inv(small_to_ref)
        tforms[name] = full[:2]

    min_w, min_h, max_w, max_h = 0.0, 0.0, float(w), float(h)
    for t in tforms.values():
        inv = np.linalg.inv(raw_utils.to3x3(t))
        pts = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64) @ inv[:2, :2].T + inv[:2, 2]
        min_w, max_w = max(min_w, pts[0, 0], pts[2, 0]), min(max_w, pts[1, 0], pts[3, 0])
        min_h, max_h = max(min_h, pts[0, 1], pts[1, 1]), min(max_h, pts[2, 1], pts[3, 1])
    corner = (int(np.ceil(min_h)), int(np.floor(max_h)), int(np.ceil(min_w)), int(np.floor(max_w)))
    return tforms, corner, unreadable, failed


def _list(scene: str, ext: str) -> List[str]:
    return [osp.join(scene, f'{raw_utils.shot_name(i)}{ext}') for i in range(1, 100)
            if osp.isfile(osp.join(scene, f'{raw_utils.shot_name(i)}{ext}'))]


def prepare_scene(scene: str, force: bool = False, downscale: Optional[int] = None) -> PrepareReport:
    """Write ``tform.txt`` and ``wb.txt`` of one scene (skipped when both exist, unless ``force``).

    Args:
        scene (str): Scene folder.
        force (bool): Rewrite existing files. Default: False.
        downscale (int | None): Downscale factor for ECC. Default: None (automatic).

    Returns:
        PrepareReport: The scene's outcome.
    """
    report = PrepareReport()
    tform_path, wb_path = osp.join(scene, 'tform.txt'), osp.join(scene, 'wb.txt')
    if not force and osp.isfile(tform_path) and osp.isfile(wb_path):
        report.skipped.append(scene)
        return report
    try:
        tforms, corner, unreadable, failed = align_scene(scene, downscale)
    except (OSError, ValueError) as err:
        report.unreadable.append(f'{osp.join(scene, "00001.JPG")}: {err}')
        return report
    report.unreadable += unreadable
    report.not_converged += failed
    gains = {}
    for path in _list(scene, '.ARW'):
        try:
            gains[osp.splitext(osp.basename(path))[0]] = raw_utils.camera_wb(path)
        except raw_utils.RawReadError as err:
            report.unreadable.append(str(err))
    raw_utils.write_tform(tform_path, tforms, corner)
    raw_utils.write_wb(wb_path, gains)
    report.written.append(scene)
    return report


def _prepare_args(args: tuple) -> PrepareReport:
    return prepare_scene(*args)


def prepare_srraw(root: str, jobs: int = 1, force: bool = False, downscale: Optional[int] = None) -> PrepareReport:
    """Write ``tform.txt`` and ``wb.txt`` for every scene folder at or below ``root``.

    Idempotent; unreadable files and non-converging shots are reported, never fatal.

    Args:
        root (str): An SR-RAW split folder or any parent of one.
        jobs (int): Scenes processed in parallel. Default: 1.
        force (bool): Rewrite existing files. Default: False.
        downscale (int | None): Downscale factor for ECC. Default: None (automatic, 8 for SR-RAW).

    Returns:
        PrepareReport: What was done and what was skipped.
    """
    scenes = raw_utils.find_scenes(root)
    if not scenes:
        raise FileNotFoundError(f'no SR-RAW scene folder (holding 00001.JPG/ARW) found under {root}')
    report = PrepareReport()
    tasks = [(scene, force, downscale) for scene in scenes]
    progress = dict(total=len(tasks), desc='sdan-prepare-srraw', unit='scene')
    if jobs > 1:
        with multiprocessing.get_context('spawn').Pool(jobs) as pool:  # fork may deadlock OpenCV/torch threads
            for result in tqdm(pool.imap_unordered(_prepare_args, tasks), **progress):
                report.merge(result)
    else:
        for task in tqdm(tasks, **progress):
            report.merge(_prepare_args(task))
    return report


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', help='SR-RAW split folder (scene folders inside) or any parent of one')
    parser.add_argument('--jobs', type=int, default=1, help='scenes processed in parallel')
    parser.add_argument('--force', action='store_true', help='rewrite existing tform.txt / wb.txt')
    parser.add_argument('--downscale', type=int, default=None, help='ECC downscale factor (default: automatic)')
    args = parser.parse_args(argv)
    report = prepare_srraw(args.root, jobs=args.jobs, force=args.force, downscale=args.downscale)
    print(report.summary())


if __name__ == '__main__':
    main()
