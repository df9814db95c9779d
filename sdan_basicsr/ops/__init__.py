"""Deformable operators of the plugin: the squared deformable convolution (SDAN) and the
deformable-kernel convolution (DKSAN)."""
from .deform_kernel_conv import DeformKernelConv2d, deform_kernel_conv2d
from .squared_deform_conv import SquaredDeformConv2d, expand_squared_offset, resolve_backend, squared_deform_conv2d

__all__ = ['SquaredDeformConv2d', 'expand_squared_offset', 'resolve_backend', 'squared_deform_conv2d',
           'DeformKernelConv2d', 'deform_kernel_conv2d']
