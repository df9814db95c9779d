"""DKSAN and MSFFN: shapes at tiny sizes, gradients, odd sizes, bad input, paper-size constructors."""
import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY

from sdan_basicsr.archs.dksan_arch import DKSAN
from sdan_basicsr.archs.msffn_arch import MSFFN

TINY = {
    'DKSAN': dict(num_feat=16, num_extract_block=1, num_rcab=1, upscale=4, squeeze_factor=4, num_dk_align=2,
                  num_dk_attn=2, num_dk_light=1, deformable_groups=2),
    'MSFFN': dict(num_feat=16, num_extract_block=1, num_block=2, deformable_groups=2),
}


def _tiny(name, **kwargs):
    return ARCH_REGISTRY.get(name)(**{**TINY[name], **kwargs})


@pytest.mark.parametrize('name', sorted(TINY))
def test_registered_shape_finite_and_gradients(name):
    net = _tiny(name)
    out = net(torch.rand(2, 7, 3, 6, 8))
    assert out.shape == (2, 3, 24, 32)
    assert torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing, f'no gradient reaches {missing}'


@pytest.mark.parametrize('name', sorted(TINY))
@pytest.mark.parametrize('size', [(5, 7), (7, 6), (3, 3)])
def test_odd_sizes(name, size):
    net = _tiny(name).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 7, 3, *size))
    assert out.shape == (1, 3, 4 * size[0], 4 * size[1])


def test_dksan_odd_size_is_padded_not_resampled():
    """Cropping the padded result back gives the same pixels as running on the padded input."""
    net = _tiny('DKSAN').eval()
    x = torch.rand(1, 7, 3, 5, 7)
    padded = torch.cat([x, x[..., -1:, :]], dim=-2)
    padded = torch.cat([padded, padded[..., -1:]], dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(padded)[..., :20, :28])


@pytest.mark.parametrize('upscale,levels', [(2, 1), (8, 3), (16, 4)])
def test_dksan_levels_follow_upscale(upscale, levels):
    net = _tiny('DKSAN', upscale=upscale)
    assert len(net.levels) == levels
    with torch.no_grad():
        assert net(torch.rand(1, 7, 3, 4, 4)).shape == (1, 3, 4 * upscale, 4 * upscale)


def test_three_frames():
    for name in TINY:
        net = _tiny(name, num_frame=3)
        with torch.no_grad():
            assert net(torch.rand(1, 3, 3, 4, 4)).shape == (1, 3, 16, 16)


@pytest.mark.parametrize('name', sorted(TINY))
@pytest.mark.parametrize('shape', [(1, 6, 3, 8, 8), (1, 5, 3, 8, 8), (1, 7, 1, 8, 8), (7, 3, 8, 8)])
def test_bad_input_names_the_shape(name, shape):
    net = _tiny(name)
    with pytest.raises(ValueError, match=str(tuple(shape)).replace('(', r'\(').replace(')', r'\)')):
        net(torch.rand(shape))


def test_dksan_too_small_frames_name_the_shape():
    with pytest.raises(ValueError, match=r'\(1, 7, 3, 1, 8\)'):
        _tiny('DKSAN')(torch.rand(1, 7, 3, 1, 8))


@pytest.mark.parametrize('name', sorted(TINY))
def test_bad_construction(name):
    with pytest.raises(ValueError, match='num_frame'):
        _tiny(name, num_frame=6)
    with pytest.raises(ValueError, match='upscale'):
        _tiny(name, upscale=3)


def test_dksan_num_rcab_per_level():
    with pytest.raises(ValueError, match='num_rcab'):
        _tiny('DKSAN', num_rcab=[1, 2, 3])
    net = _tiny('DKSAN', num_rcab=[2, 1])
    assert [len(level.rcabs) for level in net.levels] == [2, 1]


def test_msffn_feedback_and_attention_are_options():
    x = torch.rand(1, 7, 3, 6, 6)
    for kwargs in (dict(num_feedback=0), dict(num_feedback=2), dict(attention=False), dict(skip_mode='bicubic')):
        with torch.no_grad():
            assert _tiny('MSFFN', **kwargs)(x).shape == (1, 3, 24, 24)
    a, b = _tiny('MSFFN', num_feedback=0), _tiny('MSFFN', num_feedback=2)
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())


@pytest.mark.parametrize('cls,millions', [(DKSAN, 31.34), (MSFFN, 6.49)])
def test_paper_size_constructors(cls, millions):
    """The no-argument constructors build the paper's sizes; the counts are those in the docstrings."""
    num_params = sum(p.numel() for p in cls().parameters())
    assert round(num_params / 1e6, 2) == millions
    assert f'{millions:.2f} M' in cls.__doc__


def test_ablation_parameter_counts_are_those_in_the_docstrings():
    """Table 3's rows of DKSAN and the PCD / direct-fusion MSFFN of Tables V and VI, at the papers' sizes."""
    rows = [(DKSAN, dict(with_ca=False, with_dkc_align=False, with_dksa=False), '27.00'),
            (DKSAN, dict(with_dkc_align=False, with_dksa=False), '27.17'), (DKSAN, dict(with_dksa=False), '28.00'),
            (MSFFN, dict(num_feat=64, alignment='pcd'), '5.23'), (MSFFN, dict(num_feat=64, fusion='df'), '2.59')]
    for cls, kwargs, millions in rows:
        assert f'{sum(p.numel() for p in cls(**kwargs).parameters()) / 1e6:.2f}' == millions
        assert millions in ' '.join(cls.__doc__.split())


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('name', sorted(TINY))
def test_cuda_matches_cpu(name):
    net = _tiny(name).eval()
    x = torch.rand(1, 7, 3, 6, 5)
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(net.cuda()(x.cuda()).cpu(), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize('mask_distance', ['mean', 'sum'])
def test_msffn_mask_is_eq_8_over_the_channels(mask_distance):
    """M = 1 / (1 + exp(d)), d the L1 distance of F_t and F^a over the channels (mean or sum), weights F^a."""
    net = _tiny('MSFFN', mask_distance=mask_distance).eval()
    x = torch.rand(1, 7, 3, 6, 6)
    seen = {}
    net.align.register_forward_hook(lambda module, inputs, out: seen.update(ref=inputs[1], aligned=out))
    net.body[0].sft1.scale.register_forward_hook(lambda module, inputs, out: seen.update(cond=inputs[0]))
    with torch.no_grad():
        net(x)
    dist = (seen['ref'] - seen['aligned']).abs()
    dist = dist.mean(1, keepdim=True) if mask_distance == 'mean' else dist.sum(1, keepdim=True)
    last = seen['cond'][:, -seen['aligned'].shape[1]:]  # the last supporting frame's masked features
    torch.testing.assert_close(last, seen['aligned'] / (1 + torch.exp(dist)))


@pytest.mark.parametrize('option,value', [('alignment', 'tdan'), ('fusion', '3df'), ('mask_distance', 'l2')])
def test_msffn_ablation_options_reject_unknown_values(option, value):
    with pytest.raises(ValueError, match=option):
        _tiny('MSFFN', **{option: value})


def test_msffn_pcd_alignment_needs_sizes_divisible_by_4():
    net = _tiny('MSFFN', alignment='pcd')
    with torch.no_grad():
        assert net(torch.rand(1, 7, 3, 8, 12)).shape == (1, 3, 32, 48)
        with pytest.raises(ValueError, match=r'divisible by 4.*\(1, 7, 3, 6, 8\)'):
            net(torch.rand(1, 7, 3, 6, 8))


def test_dksan_ablations_leave_out_their_modules():
    full = _tiny('DKSAN')
    backbone = _tiny('DKSAN', with_ca=False, with_dkc_align=False, with_dksa=False)
    assert not hasattr(backbone, 'align') and hasattr(full, 'align')
    assert all(isinstance(level.dksa, torch.nn.Identity) for level in backbone.levels)
    names = {type(m).__name__ for m in backbone.modules()}
    assert 'RCAB' not in names and 'ChannelAttention' not in names and 'DeformKernelConv2d' not in names


def test_centre_frame_repeat_sees_only_the_centre_frame():
    net = ARCH_REGISTRY.get('CentreFrameRepeat')(network=dict(TINY['MSFFN'], type='MSFFN')).eval()
    x = torch.rand(1, 7, 3, 6, 6)
    y = x.clone()
    y[:, [0, 1, 2, 4, 5, 6]] = torch.rand(1, 6, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(y))
        torch.testing.assert_close(net(x), net.net(x[:, 3:4].expand(-1, 7, -1, -1, -1)))
    assert set(net.state_dict()) == {f'net.{k}' for k in net.net.state_dict()}


def test_bicubic_upsamples_the_centre_frame_of_a_video():
    net = ARCH_REGISTRY.get('Bicubic')(upscale=4)
    x = torch.rand(2, 5, 3, 6, 8)
    torch.testing.assert_close(net(x), net(x[:, 2]))
