"""The shipped SDAN: it loads through ``sdan-zoom`` without ``--weights`` and beats bicubic on a held-out crop."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from basicsr.archs import build_network as build_arch

from sdan_basicsr.archs.sdan_arch import pad_to_multiple
from sdan_basicsr.data.color import match_color
from sdan_basicsr.data.srraw_dataset import SRRAWPairedDataset
from sdan_basicsr.tools import zoom
from sdan_basicsr.tools.make_demo import TEST_PHOTOS, make_demo
from sdan_basicsr.weights import NETWORK_KEY, SHIPPED_WEIGHTS, network_options


def _psnr(a: torch.Tensor, b: torch.Tensor, border: int) -> float:
    a, b = (t[..., border:-border, border:-border].clamp(0, 1) for t in (a, b))
    return float(10 * torch.log10(1 / F.mse_loss(a, b)))


def test_shipped_weights_carry_their_network_options():
    options = network_options(SHIPPED_WEIGHTS)
    assert options is not None and options['type'] == 'SDAN'
    state = torch.load(SHIPPED_WEIGHTS, map_location='cpu', weights_only=True)
    assert set(state) == {'params', NETWORK_KEY}


def test_sdan_zoom_uses_the_shipped_weights_and_beats_bicubic(tmp_path, capsys):
    """One small held-out scene (a photograph never trained on, through the demo's camera, no misalignment)."""
    make_demo(str(tmp_path), num_scenes=1, num_test=1, size=384, seed=0, residual=0.)
    args = zoom._parser().parse_args([str(tmp_path / 'test' / '00001' / '00006.ARW')])
    assert args.weights is None
    net = zoom.load_network(args)
    assert SHIPPED_WEIGHTS in capsys.readouterr().out  # the path of the weights it used is printed
    item = SRRAWPairedDataset({'name': 't', 'dataroot': str(tmp_path / 'test'), 'phase': 'test',
                               'noise_profile': net.noise_input})[0]
    lq, ref, gt = item['lq'][None], item['lq_rgb'][None], item['gt'][None]
    noise = item['noise'][None] if net.noise_input else None
    h, w = lq.shape[-2:]
    with torch.no_grad():
        sr = net(pad_to_multiple(lq, 8), pad_to_multiple(ref, 8), noise).sr[..., :4 * h, :4 * w]
    bicubic = F.interpolate(ref, scale_factor=4, mode='bicubic', align_corners=False)
    # sdan-zoom's default colours: the output matched to the RAW's own rendering, here the input's RGB
    hwc = sr[0].permute(1, 2, 0).numpy()
    matched = torch.from_numpy(match_color(hwc, ref[0].permute(1, 2, 0).numpy())).permute(2, 0, 1)[None]
    gains = [_psnr(out, gt, 16) - _psnr(bicubic, gt, 16) for out in (sr, matched)]
    print(f'{TEST_PHOTOS[0]}: SDAN {gains[0]:+.2f} dB over bicubic, colour-matched {gains[1]:+.2f} dB')
    # measured with the shipped weights (32x8, 6000 + 2000 iterations): +1.02 plain, +1.17 colour-matched (the 16x8
    # shipped before them: +0.92, +0.97; bench/RESULTS.md, pretrained SDAN)
    assert np.isfinite(gains).all() and min(gains) >= 1.0


def test_pretrained_eval_fits_the_network_to_any_checkpoint(tmp_path):
    """``bench/pretrained_eval.py`` scores a training's own checkpoint of another size: the options the test file's
    ``network_g`` lacks are read off the weights (the shipped file needs none)."""
    import sys
    from os import path as osp

    from basicsr.archs import build_network

    from sdan_basicsr.launch import REPO_ROOT

    sys.path.insert(0, osp.join(REPO_ROOT, 'bench'))
    import pretrained_eval

    assert pretrained_eval.network_force(SHIPPED_WEIGHTS) == []
    shipped = dict(network_options(SHIPPED_WEIGHTS))
    net = build_network(dict(shipped, num_feat=16, num_block=3))
    checkpoint = str(tmp_path / 'net_g_10.pth')
    torch.save({'params': net.state_dict()}, checkpoint)  # a plain BasicSR checkpoint: no options in the file
    assert pretrained_eval.network_force(checkpoint) == ['network_g:num_feat=16', 'network_g:num_block=3']
    # as this project's trainings write it: the options beside the weights
    torch.save({'params': net.state_dict(), NETWORK_KEY: dict(shipped, num_feat=16, num_block=3)}, checkpoint)
    assert pretrained_eval.network_force(checkpoint) == ['network_g:num_feat=16', 'network_g:num_block=3']
    torch.save({'params': build_network(dict(shipped, noise_input=False)).state_dict()}, checkpoint)
    assert pretrained_eval.network_force(checkpoint) == ['network_g:noise_input=false',
                                                         'datasets:test:noise_profile=false']  # and its test data's
    # its side-by-side names the training it comes from
    assert pretrained_eval.checkpoint_name(checkpoint) == 'net_g_10'
    assert pretrained_eval.checkpoint_name('experiments/SDAN_x/models/net_g_4000.pth') == 'SDAN_x 4000'


def test_export_takes_the_options_a_checkpoint_stores(tmp_path):
    """``python -m sdan_basicsr.weights net_g_N.pth -o out.pth``: the training's stored ``network_g`` goes into the
    shippable file; a plain checkpoint needs ``-opt`` and says so."""
    from sdan_basicsr.weights import export_weights, main

    network = dict(network_options(SHIPPED_WEIGHTS), num_feat=8, num_block=1)
    params = build_arch(network).state_dict()
    stored, plain, out = (str(tmp_path / n) for n in ('net_g_5.pth', 'plain.pth', 'out.pth'))
    torch.save({'params': params, NETWORK_KEY: network}, stored)
    main([stored, '-o', out])
    assert network_options(out) == network and zoom.build_network(out).image_skip
    torch.save({'params': params}, plain)
    with pytest.raises(KeyError, match=f'{plain} stores no network_g options'):
        export_weights(plain, out=out)
