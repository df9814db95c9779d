"""DeformKernelConv2d against conv2d and against a direct loop over pixels, channels and taps."""
import math

import pytest
import torch
import torch.nn.functional as F

from sdan_basicsr.ops import DeformKernelConv2d, deform_kernel_conv2d


def _sample_kernel(kernel: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bilinear value of an (S, S) kernel at (y, x), zero outside; differentiable in kernel, y and x."""
    space = kernel.shape[-1]
    y0, x0 = math.floor(y.item()), math.floor(x.item())
    value = kernel.new_zeros(())
    for yi in (y0, y0 + 1):
        for xi in (x0, x0 + 1):
            if 0 <= yi < space and 0 <= xi < space:
                value = value + kernel[yi, xi] * (1 - (y - yi).abs()) * (1 - (x - xi).abs())
    return value


def _loop_reference(x, offset, weight, bias, k, stride, padding, dilation):
    """y_c(p) = Σ_k W_c(k + Δ_{c mod G, k}(p) + (S − K)/2) · x_c(p·stride + k·dilation − padding) + b_c."""
    n, c, h, w = x.shape
    space = weight.shape[-1]
    groups = offset.shape[1] // (2 * k * k)
    h_out = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    w_out = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    xp = F.pad(x, (padding, ) * 4)
    shift = (space - k) / 2
    out = []
    for b in range(n):
        for ch in range(c):
            g = ch % groups
            for oy in range(h_out):
                for ox in range(w_out):
                    oy_off, ox_off = (0, 0) if offset.shape[2] == 1 else (oy, ox)
                    acc = bias[ch].clone()
                    for i in range(k):
                        for j in range(k):
                            tap = i * k + j
                            dy = offset[b, g * 2 * k * k + 2 * tap, oy_off, ox_off]
                            dx = offset[b, g * 2 * k * k + 2 * tap + 1, oy_off, ox_off]
                            wk = _sample_kernel(weight[ch, 0], i + dy + shift, j + dx + shift)
                            acc = acc + wk * xp[b, ch, oy * stride + i * dilation, ox * stride + j * dilation]
                    out.append(acc)
    return torch.stack(out).view(n, c, h_out, w_out)


@pytest.mark.parametrize('variant', ['local', 'global'])
@pytest.mark.parametrize('stride,dilation', [(1, 1), (2, 1), (1, 2)])
def test_zero_offsets_equal_depthwise_conv2d(variant, stride, dilation):
    layer = DeformKernelConv2d(6, 6, kernel_size=3, kernel_space=3, variant=variant, stride=stride,
                               dilation=dilation).double()
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(2, 6, 9, 10, dtype=torch.float64)
    expected = F.conv2d(x, layer.weight, layer.bias, stride, layer.padding, dilation, groups=6)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)


def test_offset_predictor_starts_at_zero_and_samples_the_centre():
    layer = DeformKernelConv2d(4, 4, kernel_size=3, kernel_space=5)
    x = torch.randn(1, 4, 6, 6)
    assert torch.count_nonzero(layer.conv_offset(x)) == 0
    centre = layer.weight[:, :, 1:4, 1:4]
    torch.testing.assert_close(layer(x), F.conv2d(x, centre, layer.bias, padding=1, groups=4))


@pytest.mark.parametrize('variant,groups,stride,dilation', [('local', 2, 1, 1), ('local', 4, 2, 1),
                                                            ('local', 1, 1, 2), ('global', 2, 1, 1)])
def test_matches_direct_loop_values_and_gradients(variant, groups, stride, dilation):
    layer = DeformKernelConv2d(4, 4, kernel_size=3, kernel_space=4, groups=groups, variant=variant, stride=stride,
                               dilation=dilation).double()
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.7)  # offsets of about ±1 tap, many falling between and outside taps
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    offset = layer.conv_offset(x)
    out = deform_kernel_conv2d(x, offset, layer.weight, layer.bias, 3, stride, layer.padding, dilation)
    ref = _loop_reference(x, offset, layer.weight, layer.bias, 3, stride, layer.padding, dilation)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(layer(x), out)

    grad_out = torch.randn_like(out)
    inputs = [x, layer.weight, layer.bias, *layer.conv_offset.parameters()]
    grads = torch.autograd.grad(out, inputs, grad_out, retain_graph=True)
    grads_ref = torch.autograd.grad(ref, inputs, grad_out)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-8)


def test_channel_c_uses_offset_group_c_mod_g():
    c, groups, k = 6, 3, 3
    weight = torch.randn(c, 1, 4, 4, dtype=torch.float64)
    x = torch.randn(1, c, 5, 5, dtype=torch.float64)
    offset = torch.zeros(1, groups * 2 * k * k, 5, 5, dtype=torch.float64)
    offset[:, 1 * 2 * k * k:2 * 2 * k * k] = 0.5  # move only group 1
    out = deform_kernel_conv2d(x, offset, weight, kernel_size=k, padding=1)
    moved = deform_kernel_conv2d(x, torch.full_like(offset, 0.5), weight, kernel_size=k, padding=1)
    still = deform_kernel_conv2d(x, torch.zeros_like(offset), weight, kernel_size=k, padding=1)
    for ch in range(c):
        expected = moved if ch % groups == 1 else still
        torch.testing.assert_close(out[:, ch], expected[:, ch])
        assert not torch.allclose(moved[:, ch], still[:, ch])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='depthwise'):
        DeformKernelConv2d(4, 8)
    with pytest.raises(ValueError, match='groups'):
        DeformKernelConv2d(6, 6, groups=4)
    with pytest.raises(ValueError, match='variant'):
        DeformKernelConv2d(4, 4, variant='pooled')
    with pytest.raises(ValueError, match='kernel_space'):
        DeformKernelConv2d(4, 4, kernel_size=5, kernel_space=4)
    with pytest.raises(ValueError, match=r'offset must have shape'):
        deform_kernel_conv2d(torch.randn(1, 4, 5, 5), torch.zeros(1, 17, 5, 5), torch.randn(4, 1, 4, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu():
    layer = DeformKernelConv2d(4, 4, groups=2)
    torch.nn.init.normal_(layer.conv_offset.weight, std=0.3)
    x = torch.randn(2, 4, 7, 7)
    torch.testing.assert_close(layer.cuda()(x.cuda()).cpu(), layer.cpu()(x), rtol=1e-4, atol=1e-4)
