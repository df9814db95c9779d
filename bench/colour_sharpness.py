"""How much of a result's mean-colour error a difference in sharpness alone gives, per held-out demo scene.

The demo prints each saved result's mean R/G/B against the white-balanced target in two readings
(``demo.mean_colour``): of the 8-bit values and of linear light. A result softer than the target differs from it in
one of them even with no colour cast: which one depends on where the blur happened (in linear light: the 8-bit means
rise; in the 8-bit values: the linear means fall). This script blurs the target, in each of the two domains, by the
Gaussian σ (output pixels) that gives it the result's sharpness (mean gradient magnitude of the 8-bit luminance, which
the residual misalignment does not change), and prints the result's colour error against that blurred target. What
is left there is colour, not sharpness.

    python -m sdan_basicsr.tools.demo            # first: trains, tests and saves the results
    python bench/colour_sharpness.py             # then: one row per held-out scene and method
"""
import argparse
import sys
from os import path as osp

import cv2
import numpy as np

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from sdan_basicsr.data.raw_utils import JPEG_GAMMA  # noqa: E402
from sdan_basicsr.models.sdan_model import image_name  # noqa: E402
from sdan_basicsr.tools import demo  # noqa: E402

#: Blur domains: of the 8-bit values as saved, or of linear light.
DOMAINS = ('8-bit', 'linear')


def blur(img: np.ndarray, sigma: float, domain: str) -> np.ndarray:
    """``img`` (BGR uint8) Gaussian-blurred by ``sigma`` in ``domain``, back as uint8."""
    if sigma <= 0:
        return img
    x = img.astype(np.float64) / 255
    if domain == 'linear':
        x = x**JPEG_GAMMA
    x = cv2.GaussianBlur(x, (0, 0), sigma)
    if domain == 'linear':
        x = x**(1 / JPEG_GAMMA)
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def sharpness(img: np.ndarray) -> float:
    """Mean gradient magnitude of the 8-bit luminance (Sobel), inside a 32-px border."""
    y = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    g = np.hypot(cv2.Sobel(y, cv2.CV_32F, 1, 0), cv2.Sobel(y, cv2.CV_32F, 0, 1))
    return float(g[32:-32, 32:-32].mean())


def matching_sigma(target: np.ndarray, result: np.ndarray, domain: str, high: float = 8.) -> float:
    """σ for which ``target`` blurred in ``domain`` is as sharp as ``result`` (bisection; 0 if it is sharper)."""
    goal = sharpness(result)
    if sharpness(target) <= goal:
        return 0.
    low = 0.
    for _ in range(20):
        mid = (low + high) / 2
        low, high = (mid, high) if sharpness(blur(target, mid, domain)) > goal else (low, mid)
    return (low + high) / 2


def error(result: np.ndarray, target: np.ndarray, reading: str) -> np.ndarray:
    return 100 * (demo.mean_colour(result, reading) / np.maximum(demo.mean_colour(target, reading), 1e-9) - 1)


def _fmt(e: np.ndarray) -> str:
    return '/'.join(f'{v:+.1f}' for v in e)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--root', default=ROOT, help='project root holding the demo tree and results/')
    args = parser.parse_args()
    dataset = demo._test_dataset(args.root)
    print('colour R/G/B (%), readings ' + ' | '.join(demo.COLOUR_READINGS) +
          '; against the target, then against the target blurred to the result\'s sharpness in each domain')
    print(f"{'scene':<13}{'method':<10}{'vs target':<36}" +
          ''.join(f"{'blur in ' + d + ': sigma, vs blurred':<42}" for d in DOMAINS).rstrip())
    for i in range(len(dataset)):
        item = dataset[i]
        stem = image_name(item['lq_path'])
        target = demo._white_balanced_target(item)
        for label in demo.TEST_OPTS:
            result = demo._saved_result(args.root, label, stem)
            raw = ' | '.join(_fmt(error(result, target, r)) for r in demo.COLOUR_READINGS)
            line = f'{stem:<13}{label:<10}{raw:<36}'
            for domain in DOMAINS:
                sigma = matching_sigma(target, result, domain)
                blurred = blur(target, sigma, domain)
                cell = f'{sigma:4.2f}  ' + ' | '.join(_fmt(error(result, blurred, r)) for r in demo.COLOUR_READINGS)
                line += f'{cell:<42}'
            print(line.rstrip(), flush=True)


if __name__ == '__main__':
    main()
