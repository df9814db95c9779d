"""Importing this package registers every ``*_model.py`` in it with BasicSR's model registry."""
from os import path as osp

from sdan_basicsr.utils import import_modules

_modules = import_modules(__name__, osp.dirname(osp.abspath(__file__)), '_model')
