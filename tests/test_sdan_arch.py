"""SDAN: mask, Cross Packing Attention, Table 2 configurations, parameter count, padding, bad input."""
import pytest
import torch
import torch.nn.functional as F

from sdan_basicsr.archs.sdan_arch import (
    SDAN,
    BayerHead,
    CrossPackingAttention,
    SDANOutput,
    SquaredDeformableAlignment,
    gram,
    validity_mask,
)

TINY = dict(num_feat=8, num_block=1)
# Table 2 of the paper: (offsets, attention, flip_ref)
TABLE2 = {
    'DCN': dict(offsets='per_tap', attention='none', flip_ref=False),
    'SDCN': dict(offsets='squared', attention='none', flip_ref=False),
    '+ CL-Attention': dict(offsets='squared', attention='ca', flip_ref=False),
    '+ CP-Attention': dict(offsets='squared', attention='cpa', flip_ref=False),
    '++ Flip Augment': dict(offsets='squared', attention='cpa', flip_ref=True),
}


def test_mask_for_known_offsets():
    h, w = 4, 5
    offset = torch.zeros(1, 2, h, w)
    offset[0, 0, 0, 0] = -0.5  # row 0 − 0.5: outside
    offset[0, 1, 1, 4] = 1.0  # column 5 = w: outside
    offset[0, 1, 1, 3] = 0.9  # column 3.9 < w: inside
    offset[0, 0, 3, 1] = -3.0  # row 0: inside (boundary included)
    offset[0, 0, 3, 2] = 1e-3  # row 3.001 ≥ h − 1 but < h: inside
    expected = torch.ones(1, 1, h, w)
    expected[0, 0, 0, 0] = expected[0, 0, 1, 4] = 0
    assert torch.equal(validity_mask(offset), expected)


def test_mask_of_per_tap_offsets_uses_the_centre_tap():
    offset = torch.zeros(1, 18, 3, 3)
    offset[:, :8] = 100.0  # taps before the centre: ignored
    offset[0, 9, 1, 1] = -5.0  # centre tap dx: outside at (1, 1)
    expected = torch.ones(1, 1, 3, 3)
    expected[0, 0, 1, 1] = 0
    assert torch.equal(validity_mask(offset), expected)


def test_network_mask_is_validity_of_its_offset():
    net = SDAN(**TINY)
    out = net(torch.rand(1, 1, 16, 16), torch.rand(1, 3, 16, 16))
    assert torch.equal(out.mask, validity_mask(out.offset))
    assert not out.mask.requires_grad


def test_cpa_with_zero_gamma_is_identity():
    cpa = CrossPackingAttention()
    assert cpa.gamma.item() == 0
    x = torch.randn(2, 3, 16, 24)
    assert torch.equal(cpa(x), x)


def test_cpa_matches_definition():
    cpa = CrossPackingAttention(packing=4)
    cpa.gamma.data.fill_(0.7)
    x = torch.randn(2, 2, 8, 12, dtype=torch.float64)
    packed = F.pixel_unshuffle(x, 4).flatten(2)
    energy = packed @ packed.transpose(1, 2)
    attention = torch.softmax(energy.max(-1, keepdim=True)[0] - energy, -1)
    expected = F.pixel_shuffle((0.7 * attention @ packed + packed).view(2, 32, 2, 3), 4)
    torch.testing.assert_close(cpa.to(torch.float64)(x), expected)


@pytest.mark.parametrize('c, length', [(1100, 300), (1100, 40), (512, 256)])
def test_gram_equals_the_full_product(c, length):
    """E from the blocks on and right of the diagonal, mirrored (L >= 256), or whole (shorter L), is X Xᵀ."""
    x = torch.randn(c, length, dtype=torch.float64)
    torch.testing.assert_close(gram(x, alpha=-1.), -(x @ x.t()))
    out = torch.full((c, c), float('nan'), dtype=torch.float64)
    assert gram(x, out=out) is out and not out.isnan().any()  # every element written
    torch.testing.assert_close(out, x @ x.t())


def test_cpa_matches_definition_when_its_energy_uses_symmetry():
    """C' = 9·8² = 576 channels (two blocks of rows) and L = 16·16 = 256: :func:`gram`'s mirrored blocks."""
    cpa = CrossPackingAttention().to(torch.float64)
    cpa.gamma.data.fill_(0.7)
    x = torch.randn(1, 9, 128, 128, dtype=torch.float64) * 0.05
    packed = F.pixel_unshuffle(x, 8).flatten(2)
    energy = packed @ packed.transpose(1, 2)
    attention = torch.softmax(energy.max(-1, keepdim=True)[0] - energy, -1)
    expected = F.pixel_shuffle((0.7 * attention @ packed + packed).view(1, 576, 16, 16), 8)
    torch.testing.assert_close(cpa(x), expected)


def test_cpa_is_equivariant_to_packing_channel_order():
    cpa = CrossPackingAttention(packing=4).to(torch.float64)
    cpa.gamma.data.fill_(0.5)
    packed = torch.randn(1, 48, 3, 2, dtype=torch.float64)
    perm = torch.randperm(48)
    torch.testing.assert_close(cpa.attend(packed[:, perm]), cpa.attend(packed)[:, perm])


def test_cpa_rejects_sizes_it_cannot_pack():
    with pytest.raises(ValueError, match=r'divisible by 8, got \(1, 2, 12, 16\)'):
        CrossPackingAttention()(torch.zeros(1, 2, 12, 16))


@pytest.mark.parametrize('row', list(TABLE2))
def test_table2_configurations_build_and_run(row):
    net = SDAN(num_feat=16, num_block=1, **TABLE2[row])  # 16 channels: RCAN's attention squeezes by 16
    out = net(torch.rand(2, 1, 16, 16), torch.rand(2, 3, 16, 16))
    assert out.sr.shape == (2, 3, 64, 64)
    assert out.offset.shape == (2, 18 if row == 'DCN' else 2, 16, 16)
    (out.sr.mean() + out.aligned.mean()).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_parameter_count_at_defaults():
    count = sum(p.numel() for p in SDAN().parameters())
    assert abs(count - 1.67e6) / 1.67e6 < 0.02, count


@pytest.mark.parametrize('in_format, channels, upscale', [('bayer', 1, 4), ('packed', 4, 8), ('rgb', 3, 4)])
def test_input_formats(in_format, channels, upscale):
    net = SDAN(num_in_ch=channels, upscale=upscale, in_format=in_format, **TINY)
    out = net(torch.rand(1, channels, 8, 16), torch.rand(1, 3, 8, 16))
    assert isinstance(out, SDANOutput)
    assert out.sr.shape == (1, 3, 8 * upscale, 16 * upscale)
    assert out.aligned.shape == (1, 3, 8, 16) and out.mask.shape == (1, 1, 8, 16)


def test_sizes_not_multiple_of_8_are_padded_and_cropped_back():
    net = SDAN(**TINY).eval()
    x, ref = torch.rand(1, 1, 19, 13), torch.rand(1, 3, 19, 13)
    out = net(x, ref)
    assert out.sr.shape == (1, 3, 76, 52)
    assert out.aligned.shape == out.mask.shape[:1] + (3, 19, 13) and out.offset.shape == (1, 2, 19, 13)
    # the padding is reflect padding: an input that is already padded gives the same result inside
    padded = net(F.pad(x, (0, 3, 0, 5), mode='reflect'), F.pad(ref, (0, 3, 0, 5), mode='reflect'))
    torch.testing.assert_close(padded.sr[..., :76, :52], out.sr)


@pytest.mark.parametrize('backend', ['torchvision', 'fast'])
def test_dcn_backends_give_the_same_network_output(backend):
    torch.manual_seed(1)
    ref_net = SDAN(**TINY, dcn_backend='torchvision').double()
    net = SDAN(**TINY, dcn_backend=backend).double()
    net.load_state_dict(ref_net.state_dict())
    x, ref = torch.rand(1, 1, 16, 16, dtype=torch.float64), torch.rand(1, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(net(x, ref).sr, ref_net(x, ref).sr, rtol=0, atol=1e-10)


@pytest.mark.parametrize('backend', ['torchvision', 'fast'])
def test_channels_last_network_trains_like_the_contiguous_one(backend):
    """``net.to(memory_format=torch.channels_last)``: same outputs and gradients (the ReLU after the DCN is
    in-place, so the DCN's output must not be a view)."""
    torch.manual_seed(1)
    net = SDAN(**TINY, dcn_backend=backend).double()
    net_cl = SDAN(**TINY, dcn_backend=backend).double().to(memory_format=torch.channels_last)
    net_cl.load_state_dict(net.state_dict())
    x, ref = torch.rand(2, 1, 16, 16, dtype=torch.float64), torch.rand(2, 3, 16, 16, dtype=torch.float64)
    out, out_cl = net(x, ref), net_cl(x, ref)
    assert out_cl.sr.is_contiguous(memory_format=torch.channels_last)
    (out.sr.square().mean() + out.aligned.mean()).backward()
    (out_cl.sr.square().mean() + out_cl.aligned.mean()).backward()
    torch.testing.assert_close(out_cl.sr, out.sr, rtol=0, atol=1e-10)
    for (name, p), p_cl in zip(net.named_parameters(), net_cl.parameters()):
        torch.testing.assert_close(p_cl.grad, p.grad, rtol=1e-8, atol=1e-10, msg=name)


def test_zero_offset_init_starts_as_plain_convolution():
    align = SquaredDeformableAlignment(num_feat=8, num_ref_ch=3, offset_init='zero')
    feat, ref = torch.rand(1, 8, 16, 16), torch.rand(1, 3, 16, 16)
    aligned, offset = align(feat, ref)
    assert torch.equal(offset, torch.zeros_like(offset))
    torch.testing.assert_close(aligned, F.relu(F.conv2d(feat, align.dcn.weight, align.dcn.bias, padding=1)))


def test_image_skip_adds_the_upsampled_aligned_image():
    torch.manual_seed(0)
    plain = SDAN(**TINY).eval()
    skip = SDAN(**TINY, image_skip=True).eval()
    skip.load_state_dict(plain.state_dict())
    x, ref = torch.rand(1, 1, 16, 24), torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        out, out_skip = plain(x, ref), skip(x, ref)
    base = F.interpolate(out.aligned, scale_factor=4, mode='bilinear', align_corners=False)
    assert torch.allclose(out_skip.aligned, out.aligned)
    assert torch.allclose(out_skip.sr, out.sr + base, atol=1e-6)


def test_in_gamma_feeds_the_head_the_gamma_encoded_mosaic():
    torch.manual_seed(0)
    linear = SDAN(**TINY, cfa_head=True).eval()
    encoded = SDAN(**TINY, cfa_head=True, in_gamma=2.2).eval()
    assert float(encoded.state_dict()['input_gamma']) == pytest.approx(2.2)
    encoded.load_state_dict({**linear.state_dict(), 'input_gamma': torch.tensor(2.2)})
    x, ref = torch.rand(1, 1, 16, 24) - 0.01, torch.rand(1, 3, 16, 24)  # a few values below black
    with torch.no_grad():
        out, expected = encoded(x, ref), linear(x.clamp(min=0)**(1 / 2.2), ref)
    for name, a, b in zip(out._fields, out, expected):
        torch.testing.assert_close(a, b, msg=name)
    # weights of an encoded input do not load into a linear-input network, nor the other way round
    with pytest.raises(RuntimeError, match='input_gamma'):
        linear.load_state_dict(encoded.state_dict())
    with pytest.raises(RuntimeError, match='input_gamma'):
        encoded.load_state_dict(linear.state_dict())
    with pytest.raises(ValueError, match='in_gamma'):
        SDAN(**TINY, in_format='rgb', num_in_ch=3, in_gamma=2.2)
    with pytest.raises(ValueError, match='in_gamma'):
        SDAN(**TINY, in_gamma=0)


@pytest.mark.parametrize('upscale', [1, 2, 4, 8])
@pytest.mark.parametrize('rows', [1, 3, 7])
def test_tail_by_strips_equals_the_whole_tail(upscale, rows):
    torch.manual_seed(0)
    net = SDAN(**TINY, upscale=upscale, tail_chunk=rows).double().eval()
    feat = torch.randn(2, 8, 13, 6, dtype=torch.float64)
    with torch.no_grad():
        strips = net.tail(feat)
    whole = net.conv_last(net.upsample(feat))
    assert strips.shape == whole.shape == (2, 3, 13 * upscale, 6 * upscale)
    torch.testing.assert_close(strips, whole.detach(), rtol=1e-12, atol=1e-12)


def test_tail_runs_whole_when_recording_gradients():
    torch.manual_seed(0)
    net = SDAN(**TINY, tail_chunk=2)
    x, ref = torch.rand(1, 1, 16, 16), torch.rand(1, 3, 16, 16)
    out = net(x, ref)
    out.sr.mean().backward()
    assert net.conv_last.weight.grad is not None
    with torch.no_grad():
        torch.testing.assert_close(net(x, ref).sr, out.sr.detach())


def test_modulation_option_learns_a_per_pixel_scalar():
    net = SDAN(**TINY, modulation=True)
    assert net.align.offset_conv3.out_channels == 3
    net(torch.rand(1, 1, 8, 8), torch.rand(1, 3, 8, 8)).sr.mean().backward()


def test_bayer_head_is_one_kernel_per_cfa_site():
    torch.manual_seed(0)
    head = BayerHead(5)
    x = torch.rand(2, 1, 10, 12)
    out = head(x)
    # the kernel at a site of plane φ (R 0, Gr 1, Gb 2, B 3) takes tap (dy, dx) from the plane of site φ + (dy, dx)
    site = torch.tensor([[0, 1], [2, 3]])
    for py in range(2):
        for px in range(2):
            kernel = torch.empty(5, 1, 3, 3)
            for dy in range(3):
                for dx in range(3):
                    kernel[:, 0, dy, dx] = head.weight[:, site[(py + dy - 1) % 2, (px + dx - 1) % 2], dy, dx]
            expected = F.conv2d(x, kernel, head.bias, padding=1)
            assert torch.allclose(out[..., py::2, px::2], expected[..., py::2, px::2], atol=1e-6)


def test_bayer_head_tells_red_from_blue_where_the_shared_head_cannot():
    """A red scene's mosaic is a blue scene's moved by one site diagonally: a shared kernel sees the same pattern."""
    torch.manual_seed(0)
    red, blue = torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    red[..., 0::2, 0::2] = 1
    blue[..., 1::2, 1::2] = 1
    inner = (Ellipsis, slice(2, -2), slice(2, -2))
    shared = torch.nn.Conv2d(1, 8, 3, 1, 1)
    assert torch.allclose(shared(red)[inner][..., 1:, 1:], shared(blue)[inner][..., :-1, :-1])
    head = BayerHead(8)
    assert not torch.allclose(head(red)[inner][..., 1:, 1:], head(blue)[inner][..., :-1, :-1], atol=1e-3)


def test_bayer_head_network_and_bad_mosaic():
    net = SDAN(cfa_head=True, **TINY)
    assert 'conv_first.pattern' in net.state_dict()
    out = net(torch.rand(1, 1, 21, 19), torch.rand(1, 3, 21, 19))  # padded to whole CFA cells inside
    assert out.sr.shape == (1, 3, 84, 76)
    with pytest.raises(ValueError, match=r'even height and width, got \(1, 1, 5, 6\)'):
        BayerHead(4)(torch.rand(1, 1, 5, 6))


@pytest.mark.parametrize('kwargs, message', [
    (dict(in_format='packed'), r"num_in_ch=1 does not match in_format='packed', which has 4 channels"),
    (dict(upscale=3), 'upscale must be a power of 2, got 3'),
    (dict(tail_chunk=-1), r'tail_chunk must be >= 0 \(0: whole image\), got -1'),
    (dict(attention='se'), "attention must be 'cpa', 'ca' or 'none', got 'se'"),
    (dict(offsets='per_tap', dcn_backend='fast'), "per_tap offsets need dcn_backend 'auto' or 'torchvision'"),
    (dict(in_format='rgb', num_in_ch=3, cfa_head=True), "cfa_head is for in_format='bayer', got in_format='rgb'"),
])
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SDAN(**kwargs)


@pytest.mark.parametrize('x_shape, ref_shape, message', [
    ((1, 3, 16, 16), (1, 3, 16, 16), r"x must have shape \(N, 1, h, w\) for in_format='bayer', got \(1, 3, 16, 16\)"),
    ((1, 1, 16, 16), (1, 3, 8, 8),
     r'ref must have shape \(1, 3, 16, 16\) to match x \(1, 1, 16, 16\), got \(1, 3, 8, 8\)'),
])
def test_bad_input_names_tensor_and_shapes(x_shape, ref_shape, message):
    with pytest.raises(ValueError, match=message):
        SDAN(**TINY)(torch.zeros(x_shape), torch.zeros(ref_shape))
