"""The SDAN that ships with the package (its model card: ``MODEL_CARD.md`` beside this file).

The file holds BasicSR's ``params`` and the ``network_g`` options it was trained with, so that ``sdan-zoom`` and
``test.py`` rebuild the same network. Export a training's checkpoint with
``python -m sdan_basicsr.weights experiments/<name>/models/net_g_<iter>.pth -opt options/train_sdan_pretrained.yml``.
"""
import argparse
import os
from os import path as osp
from typing import List, Optional

import torch
import yaml

#: The shipped weights.
SHIPPED_WEIGHTS = osp.join(osp.dirname(osp.abspath(__file__)), 'sdan_x4_bayer.pth')
#: Key of the network's options in a weights file.
NETWORK_KEY = 'network_g'


def export_weights(checkpoint: str, opt_path: str, out: str = SHIPPED_WEIGHTS) -> dict:
    """Write ``checkpoint``'s ``params`` with the ``network_g`` options of ``opt_path`` to ``out`` (atomically)."""
    params = torch.load(checkpoint, map_location='cpu', weights_only=True)
    if 'params' not in params:
        raise KeyError(f'{checkpoint} has no key params; it holds {sorted(params)}')
    with open(opt_path, encoding='utf-8') as f:
        network = yaml.safe_load(f)[NETWORK_KEY]
    shipped = {'params': params['params'], NETWORK_KEY: network}
    tmp = out + '.tmp'
    torch.save(shipped, tmp)
    os.replace(tmp, out)
    return shipped


def network_options(path: str) -> Optional[dict]:
    """The ``network_g`` options stored in a weights file, None if it has none (a plain BasicSR checkpoint)."""
    return torch.load(path, map_location='cpu', weights_only=True).get(NETWORK_KEY)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description='Export a training checkpoint as shippable weights')
    parser.add_argument('checkpoint', help='net_g_<iter>.pth of a training')
    parser.add_argument('-opt', required=True, help='the training option file (its network_g goes into the file)')
    parser.add_argument('-o', '--out', default=SHIPPED_WEIGHTS)
    args = parser.parse_args(argv)
    export_weights(args.checkpoint, args.opt, args.out)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
