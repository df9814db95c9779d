"""Importing this package registers every ``*_arch.py`` in it with BasicSR's arch registry."""
from os import path as osp

from sdan_basicsr.utils import import_modules

_modules = import_modules(__name__, osp.dirname(osp.abspath(__file__)), '_arch')
