"""The SDAN that ships with the package (its model card: ``MODEL_CARD.md`` beside this file).

The file holds BasicSR's ``params`` and the ``network_g`` options it was trained with, so that ``sdan-zoom`` and
``test.py`` rebuild the same network. Export a training's checkpoint with
``python -m sdan_basicsr.weights experiments/<name>/models/net_g_<iter>.pth`` (a training's checkpoints carry their
``network_g``; one that does not, a plain BasicSR checkpoint, takes ``-opt`` with the option file it was trained with).
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


def export_weights(checkpoint: str, opt_path: Optional[str] = None, out: str = SHIPPED_WEIGHTS) -> dict:
    """Write ``checkpoint``'s ``params`` with its ``network_g`` options to ``out`` (atomically): those of
    ``opt_path`` when given, else those stored in the checkpoint."""
    params = torch.load(checkpoint, map_location='cpu', weights_only=True)
    if 'params' not in params:
        raise KeyError(f'{checkpoint} has no key params; it holds {sorted(params)}')
    if opt_path is not None:
        with open(opt_path, encoding='utf-8') as f:
            network = yaml.safe_load(f)[NETWORK_KEY]
    elif NETWORK_KEY in params:
        network = params[NETWORK_KEY]
    else:
        raise KeyError(f'{checkpoint} stores no {NETWORK_KEY} options; give the option file it was trained with')
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
    parser.add_argument('-opt', help='the option file whose network_g goes into the file (default: the one the '
                        'checkpoint stores)')
    parser.add_argument('-o', '--out', default=SHIPPED_WEIGHTS)
    args = parser.parse_args(argv)
    export_weights(args.checkpoint, args.opt, args.out)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
