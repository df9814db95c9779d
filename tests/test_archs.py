"""One test over every arch the plugin registers: forward at tiny sizes, shapes, finite, gradients everywhere.

An arch registered without an entry in ``TINY`` fails here, so every new arch is tested from the start; ``VARIANTS``
runs the same test over the options that change an arch's structure (the papers' ablations).
"""
import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY

# name → (tiny constructor kwargs, input shapes, expected output shape of the main output)
TINY = {
    'SDAN': (dict(num_feat=8, num_block=2), [(2, 1, 12, 16), (2, 3, 12, 16)], (2, 3, 48, 64)),
    'Bicubic': (dict(upscale=4), [(2, 3, 6, 5)], (2, 3, 24, 20)),
    'DKSAN': (dict(num_feat=16, num_frame=3, num_extract_block=1, num_rcab=1, upscale=4, squeeze_factor=4,
                   num_dk_align=1, num_dk_attn=1, num_dk_light=1, deformable_groups=2),
              [(1, 3, 3, 8, 8)], (1, 3, 32, 32)),
    'MSFFN': (dict(num_feat=8, num_frame=3, num_extract_block=1, num_block=2, deformable_groups=2),
              [(1, 3, 3, 8, 8)], (1, 3, 32, 32)),
    'CentreFrameRepeat': (dict(network=dict(type='MSFFN', num_feat=8, num_frame=3, num_extract_block=1, num_block=2,
                                            deformable_groups=2)), [(1, 3, 3, 8, 8)], (1, 3, 32, 32)),
}
#: name of a variant → (arch, options on top of its ``TINY`` ones)
VARIANTS = {
    'MSFFN alignment=pcd': ('MSFFN', dict(alignment='pcd')),
    'MSFFN fusion=df': ('MSFFN', dict(fusion='df')),
    'DKSAN backbone': ('DKSAN', dict(with_ca=False, with_dkc_align=False, with_dksa=False)),
    'DKSAN + CA': ('DKSAN', dict(with_dkc_align=False, with_dksa=False)),
    'DKSAN + DKC_Align': ('DKSAN', dict(with_dksa=False)),
    'CentreFrameRepeat of DKSAN': ('CentreFrameRepeat', dict(network=dict(TINY['DKSAN'][0], type='DKSAN'))),
}


def plugin_archs():
    return sorted(name for name, obj in ARCH_REGISTRY._obj_map.items() if obj.__module__.startswith('sdan_basicsr'))


def test_every_plugin_arch_has_a_tiny_config():
    assert plugin_archs(), 'the plugin registers no arch'
    assert set(plugin_archs()) == set(TINY)


@pytest.mark.parametrize('name', plugin_archs() + sorted(VARIANTS))
def test_forward_backward(name):
    arch, options = VARIANTS.get(name, (name, {}))
    kwargs, input_shapes, out_shape = TINY[arch]
    net = ARCH_REGISTRY.get(arch)(**{**kwargs, **options})
    inputs = [torch.rand(shape) for shape in input_shapes]
    out = net(*inputs)
    outputs = tuple(out) if isinstance(out, tuple) else (out, )
    assert outputs[0].shape == out_shape
    assert all(torch.isfinite(o).all() for o in outputs)
    if any(True for _ in net.parameters()):
        sum(o.float().mean() for o in outputs if o.requires_grad).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing, f'no gradient reaches {missing}'
