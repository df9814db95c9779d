"""Tests of exact tiled SDAN inference and of the ``sdan-zoom`` command on small DNG files written here."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import rawpy
import tifffile
import torch

from sdan_basicsr.archs.sdan_arch import SDAN
from sdan_basicsr.data import raw_utils
from sdan_basicsr.tools import zoom
from sdan_basicsr.utils.tiled_sdan import tiled_forward

MOSAIC = (48, 72)
TINY = dict(num_feat=8, num_block=1)


def _random_offsets_net(**kwargs) -> SDAN:
    """A small SDAN with γ ≠ 0 in both CPAs and offsets of ~11-14 px (more than the conv halos of a tile)."""
    net = SDAN(**{'num_feat': 8, 'num_block': 2, **kwargs}).eval()
    with torch.no_grad():
        if hasattr(net.align.offset_att1, 'gamma'):  # CPA (RCAN's channel attention and none have no γ)
            net.align.offset_att1.gamma.fill_(0.7)
            net.align.offset_att2.gamma.fill_(-0.4)
        net.align.offset_conv3.weight.mul_(3)
        net.align.offset_conv3.bias[:2].copy_(torch.tensor([13., -11.]))
    return net


@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(flip_ref=False),
    dict(in_format='packed', num_in_ch=4, upscale=8),
    dict(image_skip=True),
    dict(cfa_head=True),
    dict(cfa_head=True, in_gamma=2.2),
    dict(tail_chunk=5),
    dict(attention='ca', modulation=True, num_feat=16),  # RCAN's squeeze factor 16 needs >= 16 channels
    dict(attention='none'),
], ids=['bayer-flip', 'bayer-noflip', 'packed-flip', 'image-skip', 'cfa-head', 'in-gamma', 'tail-strips',
        'ca-modulation', 'no-attention'])
def test_tiled_equals_untiled(kwargs):
    net = _random_offsets_net(**kwargs)
    h, w = 54, 77  # not multiples of 8: the padding and the ragged last tiles are exercised
    x, ref = torch.rand(1, net.num_in_ch, h, w), torch.rand(1, 3, h, w)
    with torch.no_grad():
        full = net(x, ref)
    assert full.offset.abs().max() > 8 + 2  # some offsets reach beyond a tile's conv halo
    tiled = tiled_forward(net, x, ref, tile=16)
    for name, a, b in zip(full._fields, full, tiled):
        assert a.shape == b.shape, name
        err = ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()
        assert err <= 1e-4, f'{name}: relative error {err:.2e}'


def test_tiled_rejects_per_tap():
    net = SDAN(offsets='per_tap', attention='none', flip_ref=False, **TINY).eval()
    with pytest.raises(ValueError, match='squared offsets only'):
        tiled_forward(net, torch.rand(1, 1, 16, 16), torch.rand(1, 3, 16, 16), tile=8)


# ---------------------------------------------------------------- the command


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """A small GRBG DNG (its black/white level are not Sony's), its JPEG, tiny SDAN weights and options."""
    root = tmp_path_factory.mktemp('zoom')
    rng = np.random.default_rng(0)
    h, w = MOSAIC
    counts = (256 + rng.random((h + 1, w + 1)) * 3000).astype(np.uint16)
    raw = str(root / 'shot.ARW')
    raw_utils.write_dng(raw, counts, 'GRBG', black_level=256, white_level=4095, as_shot_neutral=(0.5, 1., 0.6))
    jpg = str(root / 'shot.JPG')
    cv2.imwrite(jpg, (rng.random((h, w, 3)) * 255).astype(np.uint8))
    torch.manual_seed(0)
    weights = str(root / 'net_g.pth')
    torch.save({'params': SDAN(**TINY).state_dict()}, weights)
    weights_x2 = str(root / 'net_g_x2.pth')
    torch.save({'params': SDAN(upscale=2, **TINY).state_dict()}, weights_x2)
    opt = root / 'test.yml'
    opt.write_text('network_g:\n  type: SDAN\n  num_feat: 8\n  num_block: 1\n  upscale: 4\n')
    return dict(root=root, raw=raw, jpg=jpg, weights=weights, weights_x2=weights_x2, opt=str(opt))


@pytest.mark.parametrize('bits,ext', [(8, '.png'), (16, '.tif')])
def test_zoom_end_to_end(files, bits, ext, capsys):
    out = str(files['root'] / f'out{bits}{ext}')
    zoom.main([files['raw'], '--weights', files['weights'], '-o', out, '--tile', '16', '--bits', str(bits),
               '--save-offsets'])
    printed = capsys.readouterr().out
    assert 'peak memory' in printed and ' s, ' in printed
    img = cv2.imread(out, cv2.IMREAD_UNCHANGED)
    assert img.shape == (4 * MOSAIC[0], 4 * MOSAIC[1], 3)
    assert img.dtype == (np.uint8 if bits == 8 else np.uint16)
    stem = osp.splitext(out)[0]
    flow, mask = cv2.imread(stem + '_offsets.png'), cv2.imread(stem + '_mask.png', cv2.IMREAD_UNCHANGED)
    assert flow.shape == (*MOSAIC, 3) and mask.shape == MOSAIC
    assert not [f for f in os.listdir(files['root']) if f.startswith('.')]  # no temporary file left


def test_zoom_tiled_equals_untiled_with_jpeg_ref_and_opt(files):
    outs = [str(files['root'] / f'ref{t}.png') for t in (0, 16)]
    for tile, out in zip((0, 16), outs):
        zoom.zoom(files['raw'], files['weights'], out, opt=files['opt'], ref=files['jpg'], tile=tile, bits=16,
                  progress=False)
    a, b = (cv2.imread(o, cv2.IMREAD_UNCHANGED).astype(np.int64) for o in outs)
    assert np.abs(a - b).max() <= 2  # ≤ 1e-4 of the range, after rounding to 16 bit


def test_reference_is_the_mosaic_grid(files):
    x, ref, wb = zoom.read_inputs(files['raw'], 'bayer')
    assert x.shape == (1, 1, *MOSAIC) and ref.shape == (1, 3, *MOSAIC)
    assert wb.shape == (4, ) and np.all(wb > 0)
    x, ref, _ = zoom.read_inputs(files['raw'], 'packed', files['jpg'])
    assert x.shape == (1, 4, MOSAIC[0] // 2, MOSAIC[1] // 2) and ref.shape == (1, 3, MOSAIC[0] // 2, MOSAIC[1] // 2)


def test_infer_options_from_weights():
    net = SDAN(num_feat=16, num_block=3, upscale=8, in_format='packed', num_in_ch=4, flip_ref=False,
               attention='ca', modulation=True)
    inferred = zoom.infer_sdan_options(net.state_dict(), 'w.pth')
    assert inferred == dict(num_in_ch=4, num_out_ch=3, num_feat=16, num_block=3, upscale=8, in_format='packed',
                            offsets='squared', attention='ca', flip_ref=False, modulation=True, cfa_head=False,
                            in_gamma=1.)
    inferred = zoom.infer_sdan_options(SDAN(num_feat=8, num_block=1, cfa_head=True, in_gamma=2.2).state_dict(), 'w.pth')
    assert inferred['in_format'] == 'bayer' and inferred['num_in_ch'] == 1 and inferred['cfa_head']
    assert inferred['in_gamma'] == pytest.approx(2.2)


# ---------------------------------------------------------------- bad input


def _fails(files, capsys, argv, message, out='bad.png'):
    out = str(files['root'] / out)
    with pytest.raises(SystemExit) as exc:
        zoom.main(argv + ['-o', out])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not osp.exists(out)
    assert not [f for f in os.listdir(files['root']) if f.startswith('.')]
    return err


def test_not_a_raw_file(files, capsys):
    err = _fails(files, capsys, [files['jpg'], '--weights', files['weights']], 'cannot read RAW file')
    assert files['jpg'] in err


def test_truncated_raw(files, capsys):
    cut = str(files['root'] / 'cut.ARW')
    with open(files['raw'], 'rb') as f:
        data = f.read()
    with open(cut, 'wb') as f:
        f.write(data[:len(data) // 2])
    _fails(files, capsys, [cut, '--weights', files['weights']], f'cannot read RAW file {cut}')


def test_xtrans_raw(files, capsys):
    """A DNG with a 6×6 CFARepeatPatternDim (X-Trans layout): LibRaw reads it, its pattern is not 2×2 Bayer."""
    xtrans = ['GGRGGB', 'GGBGGR', 'BRGRBG', 'GGBGGR', 'GGRGGB', 'RBGBRG']
    colour = {'R': 0, 'G': 1, 'B': 2}
    tags = [(50706, 'B', 4, (1, 4, 0, 0), True), (50708, 's', 0, 'x-trans', True), (33421, 'H', 2, (6, 6), True),
            (33422, 'B', 36, tuple(colour[c] for row in xtrans for c in row), True), (50717, 'H', 1, 16383, True),
            (50721, '2i', 9, tuple(v for i in range(9) for v in (int(i % 4 == 0), 1)), True)]
    path = str(files['root'] / 'xtrans.DNG')
    tifffile.imwrite(path, np.full((48, 72), 2000, np.uint16), photometric=32803, subfiletype=0, metadata=None,
                     extratags=tags)
    with rawpy.imread(path) as raw:
        assert raw.raw_pattern.shape == (6, 6)
    _fails(files, capsys, [path, '--weights', files['weights']], 'not a 2x2 Bayer')


def test_weights_of_another_scale(files, capsys):
    err = _fails(files, capsys, [files['raw'], '--weights', files['weights_x2'], '--opt', files['opt']],
                 f'weights {files["weights_x2"]} do not fit network_g')
    assert 'upscale: options 4, weights 2' in err


def test_weights_of_another_arch(files, capsys):
    from basicsr.archs.srresnet_arch import MSRResNet
    other = str(files['root'] / 'msrresnet.pth')
    torch.save({'params': MSRResNet(num_feat=8, num_block=1).state_dict()}, other)
    _fails(files, capsys, [files['raw'], '--weights', other], f'weights {other} are not SDAN weights')


def test_unwritable_output(files, capsys):
    blocker = files['root'] / 'a_file'
    blocker.write_text('')
    _fails(files, capsys, [files['raw'], '--weights', files['weights']], 'cannot write output', out='a_file/out.png')
    _fails(files, capsys, [files['raw'], '--weights', files['weights']], 'must end in one of', out='out.jpg')


def test_nothing_half_written_on_failure(files, capsys, monkeypatch):
    """A failure after the checks (here in the network) leaves neither the output nor a temporary file."""
    def boom(*args, **kwargs):
        raise OSError('disk full')
    monkeypatch.setattr(zoom, 'tiled_forward', boom)
    _fails(files, capsys, [files['raw'], '--weights', files['weights']], 'disk full')


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_tiled_equals_untiled_in_low_precision(precision):
    """Under autocast, tiled == untiled within the precision's rounding, and both stay close to float32."""
    from sdan_basicsr.utils.precision import autocast

    net = _random_offsets_net(image_skip=True).to(memory_format=torch.channels_last)
    x, ref = torch.rand(1, 1, 54, 77), torch.rand(1, 3, 54, 77)
    with torch.no_grad():
        exact = net(x, ref)
        with autocast('cpu', precision):
            full = net(x, ref)
    with autocast('cpu', precision):
        tiled = tiled_forward(net, x, ref, tile=16)
    for name, a, b, c in zip(full._fields, full, tiled, exact):
        assert a.dtype == b.dtype, name
        scale = c.abs().max().clamp_min(1e-12)
        tiled_err = ((a.float() - b.float()).abs().max() / scale).item()
        fp32_err = ((a.float() - c).abs().max() / scale).item()
        assert tiled_err <= 2e-3 and fp32_err <= 2e-2, f'{name}: tiled {tiled_err:.1e}, vs fp32 {fp32_err:.1e}'
    assert full.offset.dtype == full.mask.dtype == full.aligned.dtype == torch.float32  # SDAN's float32 stages


def test_zoom_precision_is_printed_and_checked(files, capsys):
    outs = {p: str(files['root'] / f'prec_{p}.png') for p in ('fp32', 'bf16')}
    for precision, out in outs.items():
        zoom.main([files['raw'], '--weights', files['weights'], '-o', out, '--tile', '16', '--precision', precision])
        assert f'precision: {precision}\n' in capsys.readouterr().out
    a, b = (cv2.imread(o).astype(np.int64) for o in outs.values())
    assert np.abs(a - b).mean() <= 1.0 and np.abs(a - b).max() <= 12
    zoom.main([files['raw'], '--weights', files['weights'], '-o', outs['bf16'], '--tile', '16'])
    assert f'precision: {precision_auto()} (auto)' in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        zoom.main([files['raw'], '--weights', files['weights'], '-o', outs['bf16'], '--precision', 'fp8'])
    assert exit_info.value.code == 2 and "invalid choice: 'fp8'" in capsys.readouterr().err


def precision_auto() -> str:
    from sdan_basicsr.utils.precision import auto_precision

    return auto_precision('cpu')


# ---------------------------------------------------------------- colour matching

#: A colour transform [M | b] that the spy below hands back instead of a fitted one.
KNOWN_TRANSFORM = np.array([[0.9, 0.1, 0.0, 0.02], [0.05, 1.1, -0.1, 0.0], [0.0, -0.05, 0.95, 0.03]])


@pytest.fixture
def fit_spy(monkeypatch):
    """Replaces the colour fit by KNOWN_TRANSFORM and records what it was given."""
    calls = []

    def spy(img, ref, **kwargs):
        calls.append((img.copy(), ref.copy()))
        return KNOWN_TRANSFORM

    monkeypatch.setattr(zoom, 'fit_color_transform', spy)
    return calls


@pytest.mark.parametrize('ref, flag, expected', [(False, None, False), (True, None, True), (True, False, False),
                                                 (False, True, True)])
def test_match_color_default_is_on_with_a_reference(files, fit_spy, ref, flag, expected):
    argv = [files['raw'], '--weights', files['weights'], '-o', str(files['root'] / 'm.png'), '--tile', '0']
    argv += ['--ref', files['jpg']] if ref else []
    argv += [] if flag is None else ['--match-color' if flag else '--no-match-color']
    zoom.main(argv)
    assert len(fit_spy) == int(expected)


def test_match_color_fits_the_averaged_output_and_applies_before_white_balance(files, fit_spy):
    """Tiled: the fit sees the output averaged to the reference's grid, and the result is WB(T(X~))."""
    out = str(files['root'] / 'matched.tif')
    info = zoom.zoom(files['raw'], files['weights'], out, ref=files['jpg'], tile=16, bits=16, progress=False)
    np.testing.assert_allclose(info['color_transform'], KNOWN_TRANSFORM)
    net = zoom.build_network(files['weights'])
    x, ref, wb = zoom.read_inputs(files['raw'], net.in_format, files['jpg'])
    with torch.no_grad():
        sr = net(x, ref).sr
    (low, fitted_ref), = fit_spy
    np.testing.assert_array_equal(fitted_ref, ref[0].permute(1, 2, 0).numpy())
    expected_low = torch.nn.functional.avg_pool2d(sr, 4)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(low, expected_low, atol=1e-4)
    mapped = np.einsum('ij,hwj->hwi', KNOWN_TRANSFORM[:, :3], sr[0].permute(1, 2, 0).numpy()) + KNOWN_TRANSFORM[:, 3]
    expected = np.round(np.clip(mapped * raw_utils.display_gains(wb), 0, 1) * 65535)
    got = cv2.cvtColor(cv2.imread(out, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB).astype(np.float64)
    assert np.abs(got - expected).max() <= 8  # tiled vs whole network, ≤ 1e-4 of the range
