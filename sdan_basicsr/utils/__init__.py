"""Small shared helpers of the plugin."""
from .registry import import_modules

__all__ = ['import_modules']
