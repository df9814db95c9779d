"""Every backend of the squared deformable convolution against torchvision's deform_conv2d on expanded offsets."""
import pytest
import torch
from torchvision.ops import deform_conv2d

from sdan_basicsr.ops import SquaredDeformConv2d, expand_squared_offset, squared_deform_conv2d


def _mmcv_available() -> bool:
    try:
        import mmcv.ops  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS = ['fast', 'torchvision', pytest.param('mmcv', marks=pytest.mark.skipif(
    not _mmcv_available(), reason='mmcv.ops does not import here'))]
# offset fields: zero, fractional, integer (every tap on a grid point), larger than the image
OFFSETS = {
    'zero': lambda shape: torch.zeros(shape),
    'fractional': lambda shape: torch.randn(shape) * 1.7,
    'integer': lambda shape: (torch.randn(shape) * 3).round(),
    'beyond': lambda shape: torch.randn(shape) * 40,
}


def _reference(x, theta, weight, bias, mask):
    k = weight.shape[-1]
    m = None if mask is None else mask.expand(-1, k * k, -1, -1)
    return deform_conv2d(x, expand_squared_offset(theta, k), weight, bias, padding=k // 2, mask=m)


def _case(dtype, offsets, with_mask, kernel_size=3, shape=(2, 5, 9, 11), out_ch=4):
    n, c, h, w = shape
    x = torch.randn(n, c, h, w, dtype=dtype)
    theta = OFFSETS[offsets]((n, 2, h, w)).to(dtype)
    weight = torch.randn(out_ch, c, kernel_size, kernel_size, dtype=dtype)
    bias = torch.randn(out_ch, dtype=dtype)
    mask = torch.rand(n, 1, h, w, dtype=dtype) if with_mask else None
    return [t if t is None else t.requires_grad_() for t in (x, theta, weight, bias, mask)]


def _value_and_grads(fn, inputs):
    out = fn(*inputs)
    # a non-linear read-out so every gradient path is exercised with varied upstream values
    loss = (out * torch.cos(out)).sum()
    wrt = [t for t in inputs if t is not None]
    return [out] + list(torch.autograd.grad(loss, wrt))


def _on_left_kink(theta, kernel_size):
    """Pixels where a tap samples exactly row −1 or column −1 (N, 1, H, W).

    Bilinear sampling is not differentiable there; torchvision takes the right-hand derivative
    (the image pixel at 0 counts), mmcv's kernels take 0. Everywhere else the two agree exactly.
    """
    h, w = theta.shape[2:]
    rows = theta[:, :1] + torch.arange(h, dtype=theta.dtype).view(h, 1)
    cols = theta[:, 1:] + torch.arange(w, dtype=theta.dtype)
    taps = torch.arange(kernel_size, dtype=theta.dtype).view(-1, 1, 1, 1, 1) - kernel_size // 2
    return ((rows + taps == -1).any(0) | (cols + taps == -1).any(0)).expand(-1, 2, -1, -1)


def _compare(backend, inputs, rtol):
    """Output and gradients equal within ``rtol`` relative to the largest reference value."""
    expected = _value_and_grads(_reference, inputs)
    got = _value_and_grads(lambda *a: squared_deform_conv2d(*a, backend=backend), inputs)
    names = ['output', 'grad x', 'grad theta', 'grad weight', 'grad bias', 'grad mask']
    for name, e, g in zip(names, expected, got):
        if backend == 'mmcv' and name == 'grad theta':
            kink = _on_left_kink(inputs[1].detach(), inputs[2].shape[-1])
            e, g = e[~kink], g[~kink]
        err = (g - e).abs().max().item()
        assert err <= rtol * max(e.abs().max().item(), 1.0), f'{backend} {name}: max error {err:.3g}'


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('offsets', list(OFFSETS))
@pytest.mark.parametrize('with_mask', [False, True])
def test_matches_torchvision_float64(backend, offsets, with_mask):
    inputs = _case(torch.float64, offsets, with_mask)
    _compare(backend, inputs, rtol=1e-10)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('offsets', ['fractional', 'beyond'])
def test_matches_torchvision_float32(backend, offsets):
    inputs = _case(torch.float32, offsets, with_mask=True, shape=(3, 16, 17, 13), out_ch=8)
    _compare(backend, inputs, rtol=1e-4)


@pytest.mark.parametrize('kernel_size', [1, 5])
def test_other_kernel_sizes(kernel_size):
    inputs = _case(torch.float64, 'fractional', True, kernel_size=kernel_size, shape=(1, 3, 7, 8))
    _compare('fast', inputs, rtol=1e-10)


def test_module_uses_its_parameters_and_backend():
    conv = SquaredDeformConv2d(6, 4, backend='auto')
    assert conv.backend == 'fast'
    x, theta = torch.randn(2, 6, 8, 8), torch.randn(2, 2, 8, 8)
    torch.testing.assert_close(conv(x, theta), _reference(x, theta, conv.weight, conv.bias, None))


def test_zero_offset_is_a_plain_convolution():
    x, weight, bias = torch.randn(2, 3, 10, 12), torch.randn(5, 3, 3, 3), torch.randn(5)
    out = squared_deform_conv2d(x, torch.zeros(2, 2, 10, 12), weight, bias)
    torch.testing.assert_close(out, torch.nn.functional.conv2d(x, weight, bias, padding=1))


def test_expand_squared_offset_layout():
    theta = torch.randn(2, 2, 4, 5)
    offset = expand_squared_offset(theta)
    assert offset.shape == (2, 18, 4, 5)
    assert torch.equal(offset[:, 0::2], theta[:, :1].expand(-1, 9, -1, -1))
    assert torch.equal(offset[:, 1::2], theta[:, 1:].expand(-1, 9, -1, -1))


@pytest.mark.parametrize('args, message', [
    (dict(theta=torch.zeros(1, 3, 8, 8)), r'theta must have shape \(N, 2, H, W\), got \(1, 3, 8, 8\)'),
    (dict(theta=torch.zeros(1, 2, 8, 7)), r'theta \(1, 2, 8, 7\) does not match x \(1, 4, 8, 8\)'),
    (dict(weight=torch.zeros(2, 3, 3, 3)), r'weight must have shape \(C_out, 4, k, k\).*\(2, 3, 3, 3\)'),
    (dict(mask=torch.zeros(1, 2, 8, 8)), r'mask must have shape \(1, 1, 8, 8\), got \(1, 2, 8, 8\)'),
    (dict(backend='cuda'), r"Unknown squared deformable conv backend 'cuda'"),
])
def test_bad_input_names_the_tensor_and_shapes(args, message):
    kwargs = dict(x=torch.zeros(1, 4, 8, 8), theta=torch.zeros(1, 2, 8, 8), weight=torch.zeros(2, 4, 3, 3))
    kwargs.update(args)
    with pytest.raises(ValueError, match=message):
        squared_deform_conv2d(**kwargs)


def test_mmcv_backend_missing_names_the_package(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mmcv(name, *args, **kwargs):
        if name.startswith('mmcv'):
            raise ImportError(f'No module named {name!r}')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_mmcv)
    with pytest.raises(ImportError, match="backend 'mmcv' needs the package mmcv"):
        squared_deform_conv2d(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.zeros(2, 2, 3, 3),
                              backend='mmcv')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('backend', ['fast', 'torchvision'])
def test_cuda_matches_cpu(backend):
    inputs = _case(torch.float64, 'fractional', True)
    cpu = _value_and_grads(lambda *a: squared_deform_conv2d(*a, backend=backend), inputs)
    gpu_inputs = [t.detach().cuda().requires_grad_() for t in inputs]
    gpu = _value_and_grads(lambda *a: squared_deform_conv2d(*a, backend=backend), gpu_inputs)
    for c, g in zip(cpu, gpu):
        torch.testing.assert_close(g.cpu(), c, rtol=0, atol=1e-10)
