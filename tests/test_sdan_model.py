"""SDANModel's training reference: Y' by default, Y' blurred with ``train.ref_blur``, eq. (6) on the sharp Y'."""
import numpy as np
import pytest
import torch
import yaml
from basicsr.models import build_model
from test_sdan_amp import _batch, _opt

from sdan_basicsr.models.sdan_model import blur_reference, downsample_to
from sdan_basicsr.utils.options_check import OptionError, check_option_file


def _spied_step(tmp_path, batch=None, **train):
    """One training step; returns (reference the network saw, Y' the loss saw, the batch)."""
    torch.manual_seed(0)
    model = build_model(_opt(tmp_path, **train))
    seen = {}
    forward, loss = model.net_g.forward, model.cri_pix.forward

    def net_spy(lq, ref):
        seen['net_ref'] = ref.clone()
        return forward(lq, ref)

    def loss_spy(sr, gt, aligned, aligned_gt, mask):
        seen['loss_ref'] = aligned_gt.clone()
        return loss(sr, gt, aligned, aligned_gt, mask)

    model.net_g.forward, model.cri_pix.forward = net_spy, loss_spy
    batch = batch or _batch(side=24)
    model.feed_data(batch)
    model.optimize_parameters(1)
    return seen['net_ref'], seen['loss_ref'], batch


def test_default_reference_is_the_downsampled_target(tmp_path):
    net_ref, loss_ref, batch = _spied_step(tmp_path)
    target = downsample_to(batch['gt'], (24, 24))
    assert torch.equal(net_ref, target) and torch.equal(loss_ref, target)


def test_ref_blur_feeds_the_network_a_blurred_reference_and_the_loss_the_sharp_one(tmp_path):
    net_ref, loss_ref, batch = _spied_step(tmp_path, ref_blur=0.8)
    target = downsample_to(batch['gt'], (24, 24))
    assert torch.equal(loss_ref, target)
    torch.testing.assert_close(net_ref, blur_reference(target, 0.8))
    assert (net_ref - target).abs().mean() > 0.02  # the blur is really there (0.034 on this noise)


def test_ref_noise_feeds_the_network_a_noisy_reference_and_the_loss_the_clean_one(tmp_path):
    noise = torch.tensor([[[4e-3, 4e-3], [4e-3, 4e-3]], [[5e-5, 5e-5], [5e-5, 5e-5]]]).repeat(2, 1, 1, 1)
    net_ref, loss_ref, batch = _spied_step(tmp_path, dict(_batch(side=24), noise=noise), ref_blur=0.8, ref_noise=True)
    target = downsample_to(batch['gt'], (24, 24))
    assert torch.equal(loss_ref, target)
    assert 0.01 < (net_ref - blur_reference(target, 0.8)).abs().mean() < 0.1


def test_blur_reference_keeps_flat_fields_and_damps_the_finest_pattern():
    flat = torch.full((1, 3, 16, 16), 0.3)
    torch.testing.assert_close(blur_reference(flat, 1.5), flat)
    checker = ((torch.arange(16).view(-1, 1) + torch.arange(16)) % 2).float().expand(1, 3, 16, 16)
    assert torch.equal(blur_reference(checker, 0), checker)
    amplitude = blur_reference(checker, 0.8)[..., 4:-4, 4:-4]
    assert float(amplitude.max() - amplitude.min()) < 0.1  # exp(-2 π² σ² / 4) ≈ 0.04 at the Nyquist frequency


@pytest.mark.parametrize('value', [-0.5, 'wide', True, float('nan')])
def test_bad_ref_blur_names_the_key(tmp_path, value):
    with pytest.raises(ValueError, match=r'train\.ref_blur: .* sigma >= 0'):
        build_model(_opt(tmp_path, ref_blur=value))
    opt = _opt(tmp_path, ref_blur=value)
    opt['datasets'] = {'train': {'type': 'SRRAWPairedDataset'}}
    path = tmp_path / 'bad.yml'
    path.write_text(yaml.safe_dump(opt))
    with pytest.raises(OptionError, match=r'train\.ref_blur'):
        check_option_file(str(path), is_train=True)


def test_a_noise_reading_network_gets_the_batch_noise_and_learns_its_head(tmp_path):
    """SDAN with ``noise_input``: the model passes the batch's ``noise`` in training and test; ``conv_noise``,
    zero at the start, is trained."""
    opt = _opt(tmp_path)
    opt['network_g'].update(noise_input=True)
    torch.manual_seed(0)
    model = build_model(opt)
    batch = dict(_batch(side=24), noise=torch.tensor([[[[4e-3, 4e-3], [4e-3, 4e-3]],
                                                       [[5e-5, 5e-5], [5e-5, 5e-5]]]]).repeat(2, 1, 1, 1))
    model.feed_data(batch)
    model.optimize_parameters(1)
    assert model.net_g.conv_noise.weight.abs().max() > 0
    model.test()
    assert model.output.shape == (2, 3, 96, 96)
    model.feed_data({k: v for k, v in batch.items() if k != 'noise'})
    with pytest.raises(ValueError, match='noise_profile: true'):
        model.test()


def test_noisy_reference_adds_the_sensor_noise_of_the_profile():
    """``train.ref_noise``'s reference: at each channel's own sites the linear-light variance is S·x + O of the
    profile (R and B each their own), demosaicked in between; a zero profile leaves the reference as it was."""
    from sdan_basicsr.data.raw_utils import JPEG_GAMMA, site_noise_profile
    from sdan_basicsr.models.sdan_model import noisy_reference

    ref = torch.full((1, 3, 256, 256), 0.5)
    x = 0.5**JPEG_GAMMA
    profile = np.array([[0.01, 1e-4], [0.004, 5e-5], [0.002, 2e-5]])  # R, G, B
    noise = torch.from_numpy(site_noise_profile(profile))[None]
    linear = noisy_reference(ref, noise, torch.Generator().manual_seed(0)).pow(JPEG_GAMMA)[0]
    for c, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 1))):
        own = linear[c, dy::2, dx::2]
        assert own.mean().item() == pytest.approx(x, rel=0.01)
        assert own.var().item() == pytest.approx(profile[c] @ [x, 1], rel=0.05)
        assert linear[c].var().item() < 0.9 * own.var().item()  # smoother where interpolated
    zero = torch.zeros(1, 2, 2, 2)
    torch.testing.assert_close(noisy_reference(ref, zero), ref, rtol=1e-5, atol=1e-5)


def test_ref_noise_needs_the_noise_profiles(tmp_path):
    opt = _opt(tmp_path, ref_noise=True)
    torch.manual_seed(0)
    model = build_model(opt)
    model.feed_data(_batch(side=24))
    with pytest.raises(KeyError, match='noise_profile: true'):
        model.optimize_parameters(1)
