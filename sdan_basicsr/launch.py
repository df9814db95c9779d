"""Shared start-up of the ``train.py`` / ``test.py`` launchers: project root, argv, cwd."""
import os
import sys
from os import path as osp

from sdan_basicsr.utils.options_check import OptionError, check_option_file

#: Repository root of a source checkout (holds ``options/``); experiments and relative data paths live here.
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def project_root() -> str:
    """Where ``experiments/`` and ``results/`` go and relative paths in option files start.

    ``$SDAN_ROOT`` when set, else the source checkout, else the current directory (installed package).
    """
    if os.environ.get('SDAN_ROOT'):
        return osp.abspath(os.environ['SDAN_ROOT'])
    return REPO_ROOT if osp.isdir(osp.join(REPO_ROOT, 'options')) else os.getcwd()


def prepare_argv(root: str, is_train: bool) -> None:
    """Make ``-opt PATH`` absolute (relative to the caller's cwd), then work from ``root``.

    BasicSR resolves ``experiments/`` from its root and data paths from the cwd; running from the
    root makes both independent of where the command was started.
    """
    argv = sys.argv
    for i, arg in enumerate(argv[:-1]):
        if arg in ('-opt', '--opt'):
            path = osp.abspath(argv[i + 1])
            if not osp.isfile(path):
                raise SystemExit(f'option file not found: {argv[i + 1]}')
            argv[i + 1] = path
            check_option_file(path, is_train)
    os.chdir(root)


def run(pipeline, is_train: bool) -> None:
    """Run ``basicsr.train.train_pipeline`` or ``basicsr.test.test_pipeline`` from the project root."""
    root = project_root()
    try:
        prepare_argv(root, is_train)
    except OptionError as err:
        raise SystemExit(f'error in the option file:\n{err}') from None
    pipeline(root)
