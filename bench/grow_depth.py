"""Deepen a trained SDAN without changing what it computes: residual blocks appended with their last conv at zero.

    python bench/grow_depth.py --weights shipped --num-block 16 --out checkpoints/SDAN_grown_16x16/net_g_0.pth

The question it serves: at 16 features the body's blocks cost little of a zoom (``bench/network_size.py``: 16×16 at
1.06 times 16×8's time per MP), so depth is the capacity the 5-minute zoom target leaves room for. The appended
``ResidualBlockNoBN``s start as identities (conv2 = 0: x + 0), so the grown network gives the source's output (checked
here on a random input) and a training from it (``path:pretrain_network_g``) starts at the source's quality; the file
carries the grown ``network_g`` as a training's checkpoint does.
"""
import argparse
import os
import os.path as osp
import sys

import torch
from basicsr.archs import build_network as build_arch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from sdan_basicsr.tools.zoom import build_network  # noqa: E402
from sdan_basicsr.utils.checkpoint import atomic_save  # noqa: E402
from sdan_basicsr.weights import NETWORK_KEY, SHIPPED_WEIGHTS, network_options  # noqa: E402


def grow(weights: str, num_block: int) -> dict:
    """The checkpoint ``{'params', 'network_g'}`` of ``weights``'s network with ``num_block`` residual blocks."""
    options = network_options(weights)
    if options is None:
        raise ValueError(f'{weights} stores no network_g options (a plain BasicSR checkpoint): give a checkpoint that '
                         'a training of this project wrote, or the shipped weights')
    source = build_network(weights)
    old = len(source.body)
    if num_block <= old:
        raise ValueError(f'{weights} has {old} residual blocks: --num-block must be more, got {num_block}')
    options = dict(options, num_block=num_block)
    grown = build_arch(options).eval()
    missing, unexpected = grown.load_state_dict(source.state_dict(), strict=False)
    if unexpected or any(not k.startswith('body.') for k in missing):
        raise ValueError(f'{weights} does not fit a deeper SDAN: unexpected {unexpected}, missing {missing}')
    with torch.no_grad():
        for block in grown.body[old:]:
            block.conv2.weight.zero_()
            block.conv2.bias.zero_()
        torch.manual_seed(0)
        x, ref = torch.rand(1, 1, 64, 64), torch.rand(1, 3, 64, 64)
        noise = torch.full((1, 2, 2, 2), 1e-4) if source.noise_input else None
        err = (grown(x, ref, noise).sr - source(x, ref, noise).sr).abs().max().item()
    if err > 1e-5:
        raise RuntimeError(f'the grown network differs from the source by {err:.2e}')
    return {'params': grown.state_dict(), NETWORK_KEY: options}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--weights', default='shipped', help='a checkpoint with network_g ("shipped": the package\'s)')
    parser.add_argument('--num-block', type=int, required=True, help='residual blocks of the grown network')
    parser.add_argument('--out', required=True)
    args = parser.parse_args()
    weights = SHIPPED_WEIGHTS if args.weights == 'shipped' else args.weights
    state = grow(weights, args.num_block)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    atomic_save(state, args.out)
    print(f'{args.out}: {weights} grown to {args.num_block} residual blocks, the same output')


if __name__ == '__main__':
    main()
