"""Tests of exact tiled SDAN inference and of the ``sdan-zoom`` command on small DNG files written here."""
import os
import os.path as osp
import re

import cv2
import numpy as np
import pytest
import rawpy
import tifffile
import torch
from basicsr.archs import build_network as build_arch

from sdan_basicsr.archs.sdan_arch import SDAN
from sdan_basicsr.data import raw_utils
from sdan_basicsr.tools import zoom
from sdan_basicsr.utils import tiled_sdan
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
    _assert_same_outputs(full, tiled_forward(net, x, ref, tile=16))


def _assert_same_outputs(full, tiled) -> None:
    """Every output of ``tiled_forward`` has the untiled one's shape and values to float rounding (1e-4 of the
    largest)."""
    for name, a, b in zip(full._fields, full, tiled):
        assert a.shape == b.shape, name
        err = ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()
        assert err <= 1e-4, f'{name}: relative error {err:.2e}'


def test_tiled_on_disk_by_thin_tail_strips(tmp_path):
    """CPA2's input kept in a temporary file, the tail by strips of 3 rows and only Θ assembled: the same result,
    and no file left."""
    net = _random_offsets_net(image_skip=True)
    x, ref = torch.rand(1, 1, 54, 77), torch.rand(1, 3, 54, 77)
    full = tiled_forward(net, x, ref, tile=16)
    lean = tiled_forward(net, x, ref, tile=16, keep=('offset', ), spill_dir=str(tmp_path), tail_rows=3)
    assert lean.aligned is None and lean.mask is None
    torch.testing.assert_close(lean.sr, full.sr, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lean.offset, full.offset, rtol=1e-5, atol=1e-5)
    assert os.listdir(tmp_path) == []


def test_tiled_windows_have_one_shape():
    """Every tile's window of a kind has one shape, at the image's edges and for the ragged last tiles too (the kept
    heap then reuses one tile's blocks for the next): the body's (pass 3), offset_conv3's (Θ, pass 3) and
    offset_conv1's (one per pass 1 and 2, and pass 3 reads CPA2's kept input instead)."""
    net = _random_offsets_net()
    shapes = {'body': set(), 'offset_conv3': set(), 'offset_conv1': set()}
    for name in shapes:
        module = net.get_submodule('align.' + name if name != 'body' else name)
        module.register_forward_pre_hook(lambda m, args, name=name: shapes[name].add(tuple(args[0].shape[2:])))
    tiled_forward(net, torch.rand(1, 1, 54, 77), torch.rand(1, 3, 54, 77), tile=16)
    assert {name: len(s) for name, s in shapes.items()} == {'body': 1, 'offset_conv3': 1, 'offset_conv1': 2}, shapes


def test_tile_shape_is_what_tiled_forward_cuts(monkeypatch):
    """:func:`tile_shape` (which the memory model and the printed plan use) names the tiles ``tiled_forward`` cuts: as
    many as tiles of at most ``tile`` need, as equal as CPA's 8×8 blocks allow."""
    assert tiled_sdan.tile_shape((4000, 6000), 1024) == (1000, 1000)
    assert tiled_sdan.tile_shape((4000, 6000), 768) == (672, 752)
    cut = []
    real_tiles = tiled_sdan._tiles
    monkeypatch.setattr(tiled_sdan, '_tiles', lambda size, shape: cut.append(shape) or real_tiles(size, shape))
    tiled_forward(_random_offsets_net(), torch.rand(1, 1, 54, 77), torch.rand(1, 3, 54, 77), tile=20)
    assert cut == [tiled_sdan.tile_shape((54, 77), 20)] == [(24, 24)]  # 56 × 80 padded: 3 × 4 tiles of ≤ 24


def test_tiled_trim_above(monkeypatch):
    """``trim_above`` gives the heap's free pages back after a module of the network only past its resident memory,
    so that a tile's blocks cannot pile up past it; the hooks go with the run, and the result is the same."""
    net = _random_offsets_net()
    x, ref = torch.rand(1, 1, 40, 40), torch.rand(1, 3, 40, 40)
    calls = []
    monkeypatch.setattr(tiled_sdan, 'release_free_memory', lambda: calls.append(1))
    plain = tiled_forward(net, x, ref, tile=16)
    between_passes = len(calls)
    assert between_passes == 2
    modules = []
    hook = net.body.register_forward_hook(lambda *_: modules.append(1))
    trimmed = tiled_forward(net, x, ref, tile=16, trim_above=0)
    assert len(modules) == 9  # the body runs once a tile of pass 3 (3 × 3 tiles)
    assert len(calls) - 2 * between_passes > 9 * len(list(net.body.modules()))  # after every module of every tile
    torch.testing.assert_close(trimmed.sr, plain.sr, rtol=0, atol=0)
    hook.remove()
    assert all(not m._forward_hooks for m in net.modules())
    before = len(calls)
    tiled_forward(net, x, ref, tile=16, trim_above=2**50)
    assert len(calls) - before == between_passes


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
    torch.save({'params': SDAN(**TINY).state_dict(), 'network_g': dict(type='SDAN', **TINY)}, weights)  # as trained
    weights_x2 = str(root / 'net_g_x2.pth')
    torch.save({'params': SDAN(upscale=2, **TINY).state_dict()}, weights_x2)
    opt = root / 'test.yml'
    opt.write_text('network_g:\n  type: SDAN\n  num_feat: 8\n  num_block: 1\n  upscale: 4\n')
    return dict(root=root, raw=raw, jpg=jpg, weights=weights, weights_x2=weights_x2, opt=str(opt))


@pytest.mark.parametrize('bits,ext', [(8, '.png'), (16, '.tif')])
def test_zoom_end_to_end(files, bits, ext, capsys):
    out = str(files['root'] / f'out{bits}{ext}')
    zoom.main([files['raw'], '--weights', files['weights'], '-o', out, '--tile', '16', '--bits', str(bits),
               '--save-offsets', '--overwrite'])
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
    net = zoom.build_network(files['weights'], files['opt'])
    for tile, out in zip((0, 16), outs):
        zoom.zoom(files['raw'], net, out, ref=files['jpg'], tile=tile, bits=16, progress=False)
    a, b = (cv2.imread(o, cv2.IMREAD_UNCHANGED).astype(np.int64) for o in outs)
    assert np.abs(a - b).max() <= 2  # ≤ 1e-4 of the range, after rounding to 16 bit


def test_reference_is_the_mosaic_grid(files):
    x, ref, wb, flip, exif, noise = zoom.read_inputs(files['raw'], 'bayer')
    assert noise is None
    assert x.shape == (1, 1, *MOSAIC) and ref.shape == (1, 3, *MOSAIC)
    assert wb.shape == (4, ) and np.all(wb > 0) and flip == 0
    assert exif[271] == 'sdan-basicsr'  # write_dng's Make
    x, ref, *_ = zoom.read_inputs(files['raw'], 'packed', files['jpg'])
    assert x.shape == (1, 4, MOSAIC[0] // 2, MOSAIC[1] // 2) and ref.shape == (1, 3, MOSAIC[0] // 2, MOSAIC[1] // 2)


def test_infer_options_from_weights():
    net = SDAN(num_feat=16, num_block=3, upscale=8, in_format='packed', num_in_ch=4, flip_ref=False,
               attention='ca', modulation=True)
    inferred = zoom.infer_sdan_options(net.state_dict(), 'w.pth')
    assert inferred == dict(num_in_ch=4, num_out_ch=3, num_feat=16, num_block=3, upscale=8, in_format='packed',
                            offsets='squared', attention='ca', flip_ref=False, modulation=True, cfa_head=False,
                            in_gamma=1., noise_input=False)
    inferred = zoom.infer_sdan_options(SDAN(num_feat=8, num_block=1, cfa_head=True, in_gamma=2.2).state_dict(), 'w.pth')
    assert inferred['in_format'] == 'bayer' and inferred['num_in_ch'] == 1 and inferred['cfa_head']
    assert inferred['in_gamma'] == pytest.approx(2.2) and not inferred['noise_input']
    assert zoom.infer_sdan_options(SDAN(num_feat=8, num_block=1, noise_input=True).state_dict(), 'w')['noise_input']


def test_a_training_checkpoint_rebuilds_its_network_from_the_file_alone(tmp_path, capsys):
    """``net_g_*.pth`` as training writes it (``checkpoint.save_network``) carries ``network_g``: ``image_skip``,
    which leaves no weight, comes back without ``--opt``; a plain checkpoint's options are read off its shapes,
    with a notice that ``image_skip`` is not among them; weights stored as another network are refused."""
    import types

    from sdan_basicsr.utils import checkpoint
    network_g = {'type': 'SDAN', 'num_feat': 8, 'num_block': 1, 'cfa_head': True, 'image_skip': True, 'in_gamma': 2.2}
    net = build_arch(network_g)
    model = types.SimpleNamespace(opt={'network_g': network_g, 'path': {'models': str(tmp_path)}},
                                  get_bare_model=lambda n: n)
    checkpoint.save_network(model, [net, net], 'net_g', 7, param_key=['params', 'params_ema'])
    saved = str(tmp_path / 'net_g_7.pth')
    built = zoom.build_network(saved)
    assert built.image_skip and built.in_gamma == pytest.approx(2.2)
    x, ref = torch.rand(1, 1, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(built(x, ref).sr, net.eval()(x, ref).sr)
    assert 'carry no network options' not in capsys.readouterr().err

    plain = str(tmp_path / 'plain.pth')
    torch.save({'params': net.state_dict()}, plain)
    assert not zoom.build_network(plain).image_skip
    assert f'weights {plain} carry no network options' in capsys.readouterr().err

    other = str(tmp_path / 'edvr.pth')
    torch.save({'params': net.state_dict(), 'network_g': {'type': 'EDVR', 'num_feat': 8}}, other)
    with pytest.raises(zoom.ZoomError, match=f"weights {other} hold a network of type EDVR"):
        zoom.build_network(other)


def _noise_net() -> SDAN:
    """A tiny SDAN that reads the noise level, its ``conv_noise`` not zero (as after training)."""
    torch.manual_seed(1)
    net = _random_offsets_net(cfa_head=True, in_gamma=2.2, image_skip=True, noise_input=True)
    with torch.no_grad():
        torch.nn.init.normal_(net.conv_noise.weight, std=0.5)
    return net


def test_noise_input_tiled_equals_untiled_and_changes_the_output():
    net = _noise_net()
    h, w = 54, 78
    x, ref = torch.rand(1, 1, h, w), torch.rand(1, 3, h, w)
    quiet, loud = (torch.from_numpy(raw_utils.site_noise_profile(np.array([[s, s / 50]] * 3)))[None]
                   for s in (1e-4, 1e-2))
    with torch.no_grad():
        full = net(x, ref, loud)
        assert (full.sr - net(x, ref, quiet).sr).abs().max() > 1e-3
    tiled = tiled_forward(net, x, ref, tile=16, noise=loud)
    err = ((full.sr - tiled.sr).abs().max() / full.sr.abs().max()).item()
    assert err <= 1e-4
    with pytest.raises(ValueError, match='noise_input'):
        net(x, ref)


def test_zoom_reads_the_noise_profile_or_estimates_it(tmp_path, capsys):
    """A noise-reading network gets the DNG's NoiseProfile; a file without one gets the estimate from its mosaic,
    and says so."""
    rng = np.random.default_rng(3)
    h, w = 192, 256
    flat = np.tile(np.linspace(0.1, 0.6, w, dtype=np.float32), (h, 1))
    shot, read = 4e-3, 5e-5
    noisy = flat + rng.normal(size=flat.shape).astype(np.float32) * np.sqrt(shot * flat + read)
    counts = np.round(512 + np.clip(noisy, 0, 1) * (16383 - 512)).astype(np.uint16)
    with_profile, without = str(tmp_path / 'with.ARW'), str(tmp_path / 'without.ARW')
    raw_utils.write_dng(with_profile, counts, noise_profile=(shot, read))
    raw_utils.write_dng(without, counts)
    inputs = zoom.read_inputs(with_profile, 'bayer', noise_profile=True)
    np.testing.assert_allclose(inputs.noise[0, :, 0, 0].numpy(), [shot, read], rtol=1e-6)
    assert 'its NoiseProfile' in capsys.readouterr().out
    estimated = zoom.read_inputs(without, 'bayer', noise_profile=True).noise[0].numpy()
    assert 'estimated from the mosaic' in capsys.readouterr().out
    for x in (0.2, 0.5):  # σ of every site within 15 % on a smooth ramp
        assert np.sqrt(estimated[0] * x + estimated[1]) == pytest.approx(np.full((2, 2), np.sqrt(shot * x + read)),
                                                                         rel=0.15)
    weights = str(tmp_path / 'noise.pth')
    torch.save({'params': _noise_net().state_dict()}, weights)
    out = str(tmp_path / 'out.png')
    zoom.main([with_profile, '--weights', weights, '-o', out, '--tile', '32'])
    assert cv2.imread(out).shape == (4 * h, 4 * w, 3)


# ---------------------------------------------------------------- bad input


def _fails(files, capsys, argv, message, out='bad.png', code=1):
    """The command exits with ``code`` (1: the file failed, 2: bad arguments or weights), says ``message`` on stderr and
    leaves no output and no temporary file."""
    out = str(files['root'] / out)
    with pytest.raises(SystemExit) as exc:
        zoom.main(argv + ['-o', out])
    assert exc.value.code == code
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
                 f'weights {files["weights_x2"]} do not fit network_g', code=2)
    assert 'upscale: options 4, weights 2' in err


def test_weights_of_another_arch(files, capsys):
    from basicsr.archs.srresnet_arch import MSRResNet
    other = str(files['root'] / 'msrresnet.pth')
    torch.save({'params': MSRResNet(num_feat=8, num_block=1).state_dict()}, other)
    _fails(files, capsys, [files['raw'], '--weights', other], f'weights {other} are not SDAN weights', code=2)


def test_unwritable_output(files, capsys):
    blocker = files['root'] / 'a_file'
    blocker.write_text('')
    _fails(files, capsys, [files['raw'], '--weights', files['weights']], 'cannot write output', out='a_file/out.png')
    _fails(files, capsys, [files['raw'], '--weights', files['weights']], 'must end in one of', out='out.jpg', code=2)


def test_nothing_half_written_on_failure(files, capsys, monkeypatch):
    """A failure after the checks (here in the network) leaves neither the output nor a temporary file."""
    def boom(*args, **kwargs):
        raise OSError('disk full')
    monkeypatch.setattr(zoom, 'tiled_forward', boom)
    _fails(files, capsys, [files['raw'], '--weights', files['weights']], 'disk full')


def test_tiled_keeps_a_channels_last_network_channels_last():
    """sdan-zoom puts the network channels-last on a CPU: tiled, the body then reads F^X' in that format too (the
    warp's grid_sample writes NCHW, and a residual sum of NCHW and channels-last maps is several times slower),
    with the same result as untiled."""
    net = _random_offsets_net(image_skip=True).to(memory_format=torch.channels_last)
    formats = []
    channels_last = lambda t: t.is_contiguous(memory_format=torch.channels_last)  # noqa: E731
    net.body.register_forward_pre_hook(lambda m, i: formats.append(channels_last(i[0])))
    x, ref = torch.rand(1, 1, 54, 77), torch.rand(1, 3, 54, 77)
    with torch.no_grad():
        full = net(x, ref)
        tiled = tiled_forward(net, x, ref, tile=16)
    _assert_same_outputs(full, tiled)
    assert len(formats) > 1 and all(formats)


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_tiled_equals_untiled_in_low_precision(precision):
    """Under autocast, tiled == untiled within the precision's rounding, and both stay close to float32.

    A tile's window has another shape than the whole image, so its convolutions sum in another order: a sum that
    rounds the other way in a 16-bit stage moves a few outputs by up to one unit in the last place of the largest
    output (``eps`` × the largest; measured: 0.6 of it in bf16), while the mean difference stays far below."""
    from sdan_basicsr.utils.precision import PRECISIONS, autocast

    net = _random_offsets_net(image_skip=True).to(memory_format=torch.channels_last)
    x, ref = torch.rand(1, 1, 54, 77), torch.rand(1, 3, 54, 77)
    with torch.no_grad():
        exact = net(x, ref)
        with autocast('cpu', precision):
            full = net(x, ref)
    with autocast('cpu', precision):
        tiled = tiled_forward(net, x, ref, tile=16)
    eps = torch.finfo(PRECISIONS[precision]).eps
    for name, a, b, c in zip(full._fields, full, tiled, exact):
        assert a.dtype == b.dtype, name
        scale = c.abs().max().clamp_min(1e-12)
        tiled_err = (a.float() - b.float()).abs() / scale
        fp32_err = ((a.float() - c).abs().max() / scale).item()
        assert tiled_err.max() <= eps and tiled_err.mean() <= 1e-4 and fp32_err <= 2e-2, \
            f'{name}: tiled {tiled_err.max():.1e} (mean {tiled_err.mean():.1e}), vs fp32 {fp32_err:.1e}'
    assert full.offset.dtype == full.mask.dtype == full.aligned.dtype == torch.float32  # SDAN's float32 stages


def test_zoom_precision_is_printed_and_checked(files, capsys):
    outs = {p: str(files['root'] / f'prec_{p}.png') for p in ('fp32', 'bf16')}
    for precision, out in outs.items():
        zoom.main([files['raw'], '--weights', files['weights'], '-o', out, '--tile', '16', '--precision', precision,
                   '--overwrite'])
        assert f'precision: {precision}\n' in capsys.readouterr().out
    a, b = (cv2.imread(o).astype(np.int64) for o in outs.values())
    assert np.abs(a - b).mean() <= 1.0 and np.abs(a - b).max() <= 12
    zoom.main([files['raw'], '--weights', files['weights'], '-o', outs['bf16'], '--tile', '16', '--overwrite'])
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


@pytest.mark.parametrize('ref, flag, expected', [(False, None, True), (True, None, True), (True, False, False),
                                                 (False, False, False)])
def test_match_color_is_on_by_default(files, fit_spy, ref, flag, expected):
    argv = [files['raw'], '--weights', files['weights'], '-o', str(files['root'] / 'm.png'), '--tile', '0',
            '--overwrite']
    argv += ['--ref', files['jpg']] if ref else []
    argv += [] if flag is None else ['--match-color' if flag else '--no-match-color']
    zoom.main(argv)
    assert len(fit_spy) == int(expected)


def test_match_color_fits_the_averaged_output_and_applies_before_white_balance(files, fit_spy):
    """Tiled: the fit sees the output averaged to the reference's grid, and the result is WB(T(X~))."""
    out = str(files['root'] / 'matched.tif')
    net = zoom.build_network(files['weights'])
    info = zoom.zoom(files['raw'], net, out, ref=files['jpg'], tile=16, bits=16, progress=False)
    np.testing.assert_allclose(info['color_transform'], KNOWN_TRANSFORM)
    x, ref, wb, *_ = zoom.read_inputs(files['raw'], net.in_format, files['jpg'])
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


# ---------------------------------------------------------------- a photographer's files


def _demosaic_net() -> SDAN:
    """An SDAN that zooms by bilinear demosaicking and nearest-neighbour ×4, in the camera's linear colours.

    The BayerHead's first three features are R, G, B interpolated from their CFA sites, Θ = 0, the deformable conv and
    conv_aligned pass them on, the body adds nothing and each upsampling conv copies a channel to its four sub-pixels.
    Its colours are the camera's own, as a network trained on another camera would get them wrong.
    """
    net = SDAN(num_feat=8, num_block=1, cfa_head=True).eval()
    with torch.no_grad():
        for param in net.parameters():
            param.zero_()
        k_rb = torch.tensor([[.25, .5, .25], [.5, 1, .5], [.25, .5, .25]])
        k_g = torch.tensor([[0, .25, 0], [.25, 1, .25], [0, .25, 0]])
        head = net.conv_first.weight  # planes R, Gr, Gb, B
        head[0, 0], head[1, 1], head[1, 2], head[2, 3] = k_rb, k_g, k_g, k_rb
        for c in range(3):
            net.align.dcn.weight[c, c, 1, 1] = 1
            net.conv_aligned.weight[c, c, 1, 1] = 1
            net.conv_last.weight[c, c, 1, 1] = 1
            for up in (net.upsample[0], net.upsample[3]):
                up.weight[4 * c:4 * c + 4, c, 1, 1] = 1
    return net


def _photo_dng(path: str, xyz_to_cam, size=(128, 192), **kwargs) -> None:
    """A DNG of scikit-image's astronaut seen by a camera with ``xyz_to_cam`` (Brooks et al.'s unprocessing), light
    noise, white balance gains (2, 1, 1.7)."""
    from skimage import data

    from sdan_basicsr.data import camera as cam
    rgb = cv2.resize(data.astronaut(), size[::-1], interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    wb = [2., 1., 1., 1.7]
    camera = dict(xyz_to_cam=xyz_to_cam, exposure=0.8, shot=1e-5, read=1e-7, black=512, white=16383)
    sensor = cam.unprocess(rgb**2.2, camera, wb)
    counts = cam.noisy_counts(raw_utils.mosaic_rgb(sensor), camera, np.random.default_rng(0))
    raw_utils.write_dng(path, counts, 'RGGB', 512, 16383, (1 / wb[0], 1., 1 / wb[3]), color_matrix=xyz_to_cam,
                        **kwargs)


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    """The astronaut through two cameras of different colour matrices, the second at four orientations; the
    demosaicking SDAN."""
    from sdan_basicsr.data import camera as cam
    root = tmp_path_factory.mktemp('photos')
    _photo_dng(str(root / 'canon.dng'), cam.HELD_OUT_XYZ_TO_CAM['Canon EOS 5D Mark III'], make='Canon',
               model='EOS 5D Mark III', focal_length=50.)
    for orientation in (1, 3, 6, 8):
        _photo_dng(str(root / f'train_o{orientation}.dng'), cam.TRAIN_XYZ_TO_CAM[1], orientation=orientation)
    weights = str(root / 'demosaic.pth')
    torch.save({'params': _demosaic_net().state_dict()}, weights)
    return dict(root=root, weights=weights)


def test_colours_agree_across_camera_matrices(photos):
    """Two cameras' DNGs of one scene (different colour matrices, so different mosaics): with the colours matched to
    each file's own rendering (the default) the outputs' mean colours agree within 2 % per channel; the network's
    own colours do not."""
    root, raws = photos['root'], [str(photos['root'] / f) for f in ('canon.dng', 'train_o1.dng')]
    means = {}
    for flag in ('--match-color', '--no-match-color'):
        out = str(root / flag.strip('-'))
        zoom.main(raws + ['--weights', photos['weights'], '-o', out, flag, '--no-progress'])
        means[flag] = [cv2.imread(osp.join(out, n))[..., ::-1].reshape(-1, 3).mean(0) for n in
                       ('canon_x4.png', 'train_o1_x4.png')]
    canon, train = means['--match-color']
    assert np.abs(canon / train - 1).max() <= 0.02, canon / train
    canon, train = means['--no-match-color']
    assert np.abs(canon / train - 1).max() > 0.02, canon / train


def test_output_is_upright(photos, capsys):
    """Orientations 3, 6 and 8: the output is the upright one (orientation 1) rotated, exactly; so is the mask, and
    the offset image's magnitudes (its hues turn with the vectors)."""
    root = photos['root']
    out = str(root / 'upright')
    zoom.main([str(root / f'train_o{o}.dng') for o in (1, 3, 6, 8)] + ['--weights', photos['weights'], '-o', out,
                                                                          '--save-offsets', '--no-progress'])
    read = lambda o, kind='': cv2.imread(osp.join(out, f'train_o{o}_x4{kind}.png'), cv2.IMREAD_UNCHANGED)  # noqa: E731
    turn = {3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1), 8: lambda a: np.rot90(a, 1)}
    for orientation, rotate in turn.items():
        np.testing.assert_array_equal(read(orientation), rotate(read(1)))
        np.testing.assert_array_equal(read(orientation, '_mask'), rotate(read(1, '_mask')))
        value = lambda o: cv2.cvtColor(read(o, '_offsets'), cv2.COLOR_BGR2HSV)[..., 2]  # noqa: E731
        np.testing.assert_array_equal(value(orientation), rotate(value(1)))
    assert read(6).shape[:2] == (4 * 192, 4 * 128)


@pytest.mark.parametrize('flip, stored, upright', [(6, (0, 1), (1, 0)), (6, (1, 0), (0, -1)), (5, (0, 1), (-1, 0)),
                                                   (3, (1, 2), (-1, -2)), (1, (1, 2), (1, -2)), (4, (1, 2), (2, 1))])
def test_offsets_turn_with_the_image(flip, stored, upright):
    """A displacement (dy, dx) in the stored image, moved with the pixel it starts from, lands at (dy', dx')."""
    theta = np.broadcast_to(np.array(stored, np.float32)[:, None, None], (2, 4, 6))
    np.testing.assert_array_equal(raw_utils.orient_offsets(theta, flip)[:, 0, 0], upright)
    # the same, from where orient() takes two pixels one displacement apart
    grid = np.arange(40 * 60).reshape(40, 60)
    turned = raw_utils.orient(grid, flip)
    a = np.argwhere(turned == grid[10, 20])[0]
    b = np.argwhere(turned == grid[10 + stored[0], 20 + stored[1]])[0]
    np.testing.assert_array_equal(b - a, upright)


def test_exif_and_icc_profile_are_kept(photos):
    """The RAW file's make, model and focal length, the updated size and orientation 1, and an sRGB ICC profile, in a
    PNG and in a 16-bit TIFF."""
    from PIL import Image

    from sdan_basicsr.utils.image_writer import srgb_profile
    root, raw = photos['root'], str(photos['root'] / 'canon.dng')
    png, tif = str(root / 'meta.png'), str(root / 'meta.tif')
    zoom.main([raw, '--weights', photos['weights'], '-o', png, '--no-progress'])
    zoom.main([raw, '--weights', photos['weights'], '-o', tif, '--bits', '16', '--no-progress'])
    with Image.open(png) as img:
        exif, profile = img.getexif(), img.info['icc_profile']
    assert (exif[271], exif[272], exif[274]) == ('Canon', 'EOS 5D Mark III', 1)
    sub = exif.get_ifd(raw_utils.EXIF_IFD_TAG)
    assert (sub[40962], sub[40963], float(sub[raw_utils.FOCAL_LENGTH_TAG])) == (768, 512, 50.)
    assert profile == srgb_profile()
    with tifffile.TiffFile(tif) as t:
        page = t.pages[0]
        assert page.dtype == np.uint16 and page.shape == (512, 768, 3)
        assert (page.tags['Make'].value, page.tags['Model'].value) == ('Canon', 'EOS 5D Mark III')
        assert page.tags['ExifTag'].value['PixelXDimension'] == 768
        assert page.tags['InterColorProfile'].value == srgb_profile()


def _patch_tag(path: str, tag: int, value: int) -> None:
    """Overwrite a SHORT tag of a little-endian TIFF in place."""
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].tags[tag].valueoffset
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(int(value).to_bytes(2, 'little'))


def test_unsupported_files_are_named_and_skipped(tmp_path, files, capsys):
    """Linear and monochrome DNGs, a JPEG and a HEIC given as RAW files, a RAW too small: each gets one line naming
    the file and what it is, nothing is written, and a good file beside them is zoomed."""
    dng = [(50706, 'B', 4, (1, 4, 0, 0), True), (50708, 's', 0, 'test', True), (50717, 'H', 1, 4095, True)]
    tifffile.imwrite(tmp_path / 'linear.dng', np.full((48, 72, 3), 2000, np.uint16), photometric=34892,
                     metadata=None, extratags=dng)
    tifffile.imwrite(tmp_path / 'mono.dng', np.full((48, 72), 2000, np.uint16), photometric='minisblack',
                     metadata=None, extratags=dng)
    _patch_tag(str(tmp_path / 'mono.dng'), 262, 34892)  # LinearRaw with one sample: a monochrome camera
    cv2.imwrite(str(tmp_path / 'photo.jpg'), np.zeros((48, 72, 3), np.uint8))
    os.rename(tmp_path / 'photo.jpg', tmp_path / 'jpeg.NEF')
    (tmp_path / 'phone.dng').write_bytes(b'\x00\x00\x00\x18ftypheic' + bytes(64))
    raw_utils.write_dng(str(tmp_path / 'tiny.dng'), np.full((22, 22), 2000, np.uint16))
    expected = {'linear.dng': 'already demosaiced', 'mono.dng': 'monochrome', 'jpeg.NEF': 'a JPEG image',
                'phone.dng': 'a HEIC image', 'tiny.dng': 'smaller than the 32x32'}
    good = str(tmp_path / 'good.ARW')
    with open(files['raw'], 'rb') as src, open(good, 'wb') as dst:
        dst.write(src.read())
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as exc:
        zoom.main([str(tmp_path), '--weights', files['weights'], '-o', str(out), '--no-progress'])
    assert exc.value.code == 1
    printed = capsys.readouterr()
    lines = printed.err.strip().splitlines()
    assert len(lines) == len(expected) and 'Traceback' not in printed.err
    for name, what in expected.items():
        assert any(str(tmp_path / name) in line and what in line for line in lines), (name, lines)
    assert sorted(os.listdir(out)) == ['good_x4.png']
    assert f'1 zoomed, 0 skipped (output exists), {len(expected)} failed' in printed.out


def test_batch_resumes_after_a_kill(tmp_path, files, capsys):
    """Ten files, two bad, in a folder: killed once the first outputs appear, then run again, the batch ends with
    the eight outputs, each written once, the two failures named and exit status 1; nothing partial is left."""
    import signal
    import subprocess
    import sys
    import time

    folder, out = tmp_path / 'shots', tmp_path / 'zoomed'
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        counts = (600 + rng.random((96, 128)) * 3000).astype(np.uint16)
        raw_utils.write_dng(str(folder / f'shot{i}.ARW'), counts)
    with open(files['raw'], 'rb') as f:
        (folder / 'cut.NEF').write_bytes(f.read()[:2000])
    cv2.imwrite(str(folder / 'jpeg.jpg'), np.zeros((96, 128, 3), np.uint8))
    os.rename(folder / 'jpeg.jpg', folder / 'jpeg.DNG')
    argv = [str(folder), '--weights', files['weights'], '-o', str(out), '--no-progress']
    child = subprocess.Popen([sys.executable, '-m', 'sdan_basicsr.tools.zoom', *argv], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while child.poll() is None and time.time() < deadline and not (out.is_dir() and any(
            f.endswith('_x4.png') and not f.startswith('.') for f in os.listdir(out))):
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    before = {f: os.stat(out / f) for f in os.listdir(out) if not f.startswith('.')}
    assert 1 <= len(before) < 8, sorted(before)
    for f in before:  # what a killed run leaves is complete
        assert cv2.imread(str(out / f)).shape == (4 * 96, 4 * 128, 3)

    with pytest.raises(SystemExit) as exc:
        zoom.main(argv)
    assert exc.value.code == 1
    printed = capsys.readouterr()
    names = sorted(f for f in os.listdir(out))
    assert names == [f'shot{i}_x4.png' for i in range(8)]  # and no temporary file
    for f, stat in before.items():
        assert (os.stat(out / f).st_ino, os.stat(out / f).st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert f'{8 - len(before)} zoomed, {len(before)} skipped (output exists), 2 failed' in printed.out
    assert str(folder / 'cut.NEF') in printed.err and str(folder / 'jpeg.DNG') in printed.err


def test_opt_accepts_float32_options(tmp_path, capsys):
    """``in_gamma: 2.2`` in the options fits weights that store it as float32 (2.200000047683716); 2.3 does not."""
    weights = str(tmp_path / 'gamma.pth')
    torch.save({'params': SDAN(num_feat=8, num_block=1, cfa_head=True, in_gamma=2.2).state_dict()}, weights)
    opt = tmp_path / 'gamma.yml'
    yaml = 'network_g:\n  type: SDAN\n  num_feat: 8\n  num_block: 1\n  cfa_head: true\n  in_gamma: {}\n'
    opt.write_text(yaml.format(2.2))
    assert zoom.build_network(weights, str(opt)).in_gamma == pytest.approx(2.2)
    opt.write_text(yaml.format(2.3))
    with pytest.raises(zoom.ZoomError, match=r'in_gamma: options 2.3, weights 2.2000000476'):
        zoom.build_network(weights, str(opt))


# ---------------------------------------------------------------- memory


def test_memory_plan_takes_the_largest_tile_that_fits():
    """The expected peak grows with the tile and with CPA2's input in memory; the plan takes the largest tile within
    the budget, CPA2's input in memory unless a larger tile fits with it on disk or it is over SPILL_BYTES, and
    none below the smallest tile's peak."""
    from sdan_basicsr.utils import zoom_memory as zm
    net, base = SDAN(), 2**30
    peak = lambda size, tile, spill: zm.expected_peak(net, size, tile, 'bf16', spill, base=base)  # noqa: E731
    mp24, mp2 = (4000, 6000), (1000, 1500)  # CPA2's input: 64 bf16 channels, 2.9 GiB and 0.18 GiB
    tiles = range(zm.TILE_STEP, zm.MAX_TILE + 1, zm.TILE_STEP)
    shape = lambda tile: tiled_sdan.tile_shape(mp24, tile)  # noqa: E731  (896 and 960: both 800 x 864)
    assert all(peak(mp24, a, False) < peak(mp24, b, False) if shape(a) != shape(b) else
               peak(mp24, a, False) == peak(mp24, b, False) for a, b in zip(tiles, tiles[1:]))
    assert peak(mp24, 512, True) + 64 * 2 * 4000 * 6000 == peak(mp24, 512, False)
    assert zm.plan(net, mp24, 'bf16', 2**40, base=base) == (zm.MAX_TILE, True, peak(mp24, zm.MAX_TILE, True))
    cuts = lambda size, plan: (tiled_sdan.tile_shape(size, plan.tile), plan.spill, plan.peak)  # noqa: E731
    # (any tile that cuts the image as 512 does is as good: the largest is taken)
    assert cuts(mp24, zm.plan(net, mp24, 'bf16', peak(mp24, 512, True), base=base)) == (shape(512), True,
                                                                                         peak(mp24, 512, True))
    assert zm.plan(net, mp2, 'bf16', 2**40, base=base) == (zm.MAX_TILE, False, peak(mp2, zm.MAX_TILE, False))
    assert cuts(mp2, zm.plan(net, mp2, 'bf16', peak(mp2, 512, True), base=base)) == (
        tiled_sdan.tile_shape(mp2, 512), True, peak(mp2, 512, True))
    assert zm.plan(net, (300, 200), 'bf16', 2**40, base=base).tile == 320  # one tile covers the image
    assert zm.plan(net, mp24, 'bf16', base, base=base).tile == 0


@pytest.mark.parametrize('text, size', [('6G', 6 * 2**30), ('800M', 800 * 2**20), ('1.5gib', int(1.5 * 2**30)),
                                        ('4096', 4096), ('2 TB', 2 * 2**40)])
def test_parse_size(text, size):
    from sdan_basicsr.utils.zoom_memory import parse_size
    assert parse_size(text) == size


def test_parse_size_refuses_junk(capsys):
    with pytest.raises(SystemExit):
        zoom.main(['x.ARW', '--weights', 'w.pth', '--max-memory', 'lots'])
    assert "argument --max-memory: not a size: 'lots'" in capsys.readouterr().err


#: The zoom child of test_max_memory_bounds_the_peak: its budget is its own resident memory before the zoom plus
#: argv[1] bytes; it runs sdan-zoom with argv[2:] and that --max-memory.
_BOUNDED_ZOOM = '''
import sys
from sdan_basicsr.tools import zoom
from sdan_basicsr.utils import zoom_memory
budget = zoom_memory.process_base() + int(sys.argv[1])
print('budget', budget, flush=True)
zoom.main(sys.argv[2:] + ['--max-memory', str(budget)])
'''
#: Runs its arguments as a child and prints the child's peak resident memory in bytes (RUSAGE_CHILDREN of a process
#: with that one child).
_PEAK_OF_CHILD = '''
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:])
print('peak', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, done.returncode)
'''


def test_max_memory_bounds_the_peak(tmp_path):
    """A 512x768 mosaic (a 6-MP output) with a --max-memory that the whole-image tile would exceed: the tile chosen is
    smaller, and the zoom's peak resident memory, measured in a subprocess, stays inside it."""
    import subprocess
    import sys

    from sdan_basicsr.utils import zoom_memory
    size = (512, 768)
    net = SDAN(num_feat=16, num_block=2)
    weights = str(tmp_path / 'sdan16.pth')
    torch.save({'params': net.state_dict()}, weights)
    counts = (600 + np.random.default_rng(0).random(size) * 3000).astype(np.uint16)
    raw = str(tmp_path / 'mid.dng')
    raw_utils.write_dng(raw, counts)
    extra = zoom_memory.expected_peak(net, size, 192, 'fp32', base=0)
    assert zoom_memory.expected_peak(net, size, 768, 'fp32', base=0) > extra  # the whole image would not fit
    zoom_cmd = [sys.executable, '-c', _BOUNDED_ZOOM, str(extra), raw, '--weights', weights, '-o',
                str(tmp_path / 'mid.png'), '--precision', 'fp32', '--no-progress']
    done = subprocess.run([sys.executable, '-c', _PEAK_OF_CHILD, *zoom_cmd], capture_output=True, text=True,
                          timeout=600)
    lines = done.stdout.split('\n')
    budget = int(next(line for line in lines if line.startswith('budget')).split()[1])
    peak, returncode = (int(v) for v in next(line for line in lines if line.startswith('peak')).split()[1:])
    assert returncode == 0, done.stderr
    tile = int(re.search(r'tile (\d+) \(\d+x\d+ tiles\), expected peak', done.stdout).group(1))
    assert 192 <= tile < 768
    assert peak <= budget, f'peak {peak / 2**30:.3f} GiB > --max-memory {budget / 2**30:.3f} GiB'
    assert cv2.imread(str(tmp_path / 'mid.png')).shape == (4 * size[0], 4 * size[1], 3)
