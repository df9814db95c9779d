"""Train any registered model with BasicSR's pipeline: ``python sdan_basicsr/train.py -opt options/X.yml``.

Also ``sdan-train``; distributed: ``torchrun --nproc_per_node=N sdan_basicsr/train.py -opt X.yml --launcher pytorch``.
"""
import sys
from os import path as osp

if __package__ in (None, ''):  # run as a script: import the package from the checkout, not this folder
    sys.path[0] = osp.dirname(osp.dirname(osp.abspath(__file__)))

from sdan_basicsr.launch import run  # noqa: E402  (the package applies the basicsr fixes before basicsr loads)


def main() -> None:
    from basicsr.train import train_pipeline

    run(train_pipeline, is_train=True)


if __name__ == '__main__':
    main()
