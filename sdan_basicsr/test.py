"""Test any registered model with BasicSR's pipeline: ``python sdan_basicsr/test.py -opt options/X.yml``.

Also ``sdan-test``; distributed: ``torchrun --nproc_per_node=N sdan_basicsr/test.py -opt X.yml --launcher pytorch``.
"""
import sys
from os import path as osp

if __package__ in (None, ''):  # run as a script: import the package from the checkout, not this folder
    sys.path[0] = osp.dirname(osp.dirname(osp.abspath(__file__)))

import sdan_basicsr  # noqa: E402,F401  (compatibility fixes + registries, before basicsr's pipeline)
from basicsr.test import test_pipeline  # noqa: E402
from sdan_basicsr.launch import run  # noqa: E402


def main() -> None:
    run(test_pipeline)


if __name__ == '__main__':
    main()
