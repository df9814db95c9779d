"""sdan-basicsr: SDAN (ICME 2021), DKSAN and MSFFN as a BasicSR plugin.

``import sdan_basicsr`` applies the basicsr compatibility fixes and registers every arch,
dataset, loss, metric and model of the plugin in BasicSR's registries.
"""
__version__ = '0.1.0'

from . import compat  # noqa: E402

compat.apply()

from . import archs, data, losses, metrics, models, ops  # noqa: E402,F401
