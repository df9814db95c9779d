"""Every backend of the squared deformable convolution against torchvision's deform_conv2d on expanded offsets."""
import pytest
import torch
from torchvision.ops import deform_conv2d

from sdan_basicsr.ops import SquaredDeformConv2d, expand_squared_offset, squared_deform_conv2d
from sdan_basicsr.ops import squared_deform_conv as sdc


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


LAYOUTS = {'contiguous': torch.contiguous_format, 'channels_last': torch.channels_last}


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


def test_fused_warp_is_built_and_used_on_cpu():
    """setup.py builds the C++ warp here; ``fast`` must run it for float32/float64 CPU tensors."""
    assert sdc.warp_extension_available(), 'sdan_basicsr.ops._squared_warp was not built'
    for dtype in (torch.float32, torch.float64):
        assert sdc.warp_implementation('cpu', dtype) == 'fused C++ (CPU)'
        x, theta, weight, bias, mask = _case(dtype, 'fractional', True)
        out = squared_deform_conv2d(x, theta, weight, bias, mask, backend='fast')
        assert type(out.grad_fn).__name__ == '_FusedWarpBackward'
    assert sdc.warp_implementation('meta', torch.float32).startswith('PyTorch')


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_fused_warp_serves_autocast(dtype):
    """Under autocast the convolution runs in ``dtype`` and the fused warp in float32 (no silent slow path)."""
    name = str(dtype).replace('torch.', '')
    assert sdc.warp_implementation('cpu', dtype) == f'fused C++ (CPU), float32 from {name}'
    x, theta, weight, bias, mask = _case(torch.float32, 'fractional', True)
    with torch.autocast('cpu', dtype=dtype):
        out = squared_deform_conv2d(x, theta, weight, bias, mask, backend='fast')
    assert type(out.grad_fn).__name__ == '_FusedWarpBackward' and out.dtype == torch.float32
    exact = squared_deform_conv2d(x, theta, weight, bias, mask, backend='fast')
    err = ((out - exact).norm() / exact.norm()).item()
    assert err < 1e-2, f'{name} autocast: relative error {err:.1e}'  # the conv's inputs rounded to 8 / 11 bits
    out.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (x, theta, weight, bias, mask))


def _fast_and_grads(inputs, fused, grad_layout, monkeypatch):
    """``fast`` output and gradients of every input that requires one, for an upstream gradient
    in ``grad_layout`` (``contiguous`` or ``channels_last``), by the fused or the PyTorch warp."""
    with monkeypatch.context() as patch:
        if not fused:
            patch.setattr(sdc, '_squared_warp', None)
        out = squared_deform_conv2d(*inputs, backend='fast')
    assert (type(out.grad_fn).__name__ == '_FusedWarpBackward') == fused
    gen = torch.Generator().manual_seed(1)
    grad = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    grad = grad.contiguous(memory_format=LAYOUTS[grad_layout])
    wrt = [t for t in inputs if t is not None and t.requires_grad]
    return [out] + list(torch.autograd.grad(out, wrt, grad))


@pytest.mark.parametrize('offsets', list(OFFSETS))
@pytest.mark.parametrize('x_layout', ['contiguous', 'channels_last'])
@pytest.mark.parametrize('grad_layout', ['contiguous', 'channels_last'])
@pytest.mark.parametrize('shape, out_ch', [((2, 5, 9, 11), 4), ((1, 3, 6, 7), 20), ((3, 8, 5, 4), 33)])
def test_fused_warp_matches_pytorch_warp_float64(offsets, x_layout, grad_layout, shape, out_ch, monkeypatch):
    """The C++ kernel (mask and bias fused) against the pure-PyTorch warp: output and all gradients."""
    torch.manual_seed(0)
    inputs = _case(torch.float64, offsets, True, shape=shape, out_ch=out_ch)
    inputs[0] = inputs[0].detach().contiguous(memory_format=LAYOUTS[x_layout]).requires_grad_()
    fused = _fast_and_grads(inputs, True, grad_layout, monkeypatch)
    reference = _fast_and_grads(inputs, False, grad_layout, monkeypatch)
    names = ['output', 'grad x', 'grad theta', 'grad weight', 'grad bias', 'grad mask']
    for name, f, r in zip(names, fused, reference):
        err = (f - r).abs().max().item()
        assert err <= 1e-10 * max(r.abs().max().item(), 1.0), f'{name}: max error {err:.3g}'
    assert fused[0].is_contiguous(memory_format=LAYOUTS[x_layout])


# which of (x, Θ, weight, bias, mask) need a gradient, with and without mask and bias
PARTIAL = [(wrt, extras) for extras in (True, False) for wrt in [(0, ), (1, ), (3, ), (4, ), (1, 4), (0, 2)]
           if extras or not set(wrt) <= {3, 4}]


@pytest.mark.parametrize('wrt, with_mask_and_bias', PARTIAL)
def test_fused_warp_partial_gradients(wrt, with_mask_and_bias, monkeypatch):
    """Only some inputs need a gradient, with and without mask and bias."""
    torch.manual_seed(0)
    inputs = [t.detach() if t is not None else None for t in _case(torch.float64, 'fractional', with_mask_and_bias)]
    if not with_mask_and_bias:
        inputs[3] = None
    for i in wrt:
        if inputs[i] is not None:
            inputs[i].requires_grad_()
    fused = _fast_and_grads(inputs, True, 'contiguous', monkeypatch)
    reference = _fast_and_grads(inputs, False, 'contiguous', monkeypatch)
    for f, r in zip(fused, reference):
        torch.testing.assert_close(f, r, rtol=0, atol=1e-10)


def test_fused_warp_does_not_depend_on_thread_count():
    """Deterministic: bitwise the same with 1, 2 or 4 threads (one or several channel blocks per image)."""
    torch.manual_seed(0)
    inputs = _case(torch.float32, 'fractional', True, shape=(4, 6, 12, 10), out_ch=48)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 4):
            torch.set_num_threads(n)
            results.append(_value_and_grads(lambda *a: squared_deform_conv2d(*a, backend='fast'), inputs))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_fused_warp_gradcheck():
    """torch.autograd.gradcheck of the C++ warp (source, Θ, mask, bias), positions away from integers."""
    gen = torch.Generator().manual_seed(0)
    n, c, h, w = 2, 3, 4, 5
    source = torch.randn(n, c, h + 2, w + 2, dtype=torch.float64, generator=gen)
    whole = torch.randint(-3, 4, (n, 2, h, w), generator=gen).double()
    theta = whole + 0.15 + 0.7 * torch.rand(n, 2, h, w, dtype=torch.float64, generator=gen)
    mask = torch.rand(n, 1, h, w, dtype=torch.float64, generator=gen)
    bias = torch.randn(c, dtype=torch.float64, generator=gen)
    for layout in (torch.contiguous_format, torch.channels_last):
        inputs = [t.clone().requires_grad_() for t in (source.contiguous(memory_format=layout), theta, mask, bias)]
        assert torch.autograd.gradcheck(lambda *a: sdc._FusedWarp.apply(*a, 1), inputs)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    theta = (torch.randint(-2, 3, (1, 2, 5, 4), generator=gen) + 0.3).double().requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: squared_deform_conv2d(*a, backend='fast'), (x, theta, weight))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('backend', ['fast', 'torchvision'])
def test_cuda_matches_cpu(backend):
    inputs = _case(torch.float64, 'fractional', True)
    cpu = _value_and_grads(lambda *a: squared_deform_conv2d(*a, backend=backend), inputs)
    gpu_inputs = [t.detach().cuda().requires_grad_() for t in inputs]
    gpu = _value_and_grads(lambda *a: squared_deform_conv2d(*a, backend=backend), gpu_inputs)
    for c, g in zip(cpu, gpu):
        torch.testing.assert_close(g.cpu(), c, rtol=0, atol=1e-10)
