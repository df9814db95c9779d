"""MaskedDualL1Loss against eq. (6) written out by hand."""
import pytest
import torch
from basicsr.losses import build_loss


def _inputs():
    torch.manual_seed(0)
    sr, gt = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    aligned, aligned_gt = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    mask = (torch.rand(2, 1, 4, 4) > 0.3).float()
    return sr, gt, aligned, aligned_gt, mask


def test_eq6_mean_over_all_elements():
    sr, gt, aligned, aligned_gt, mask = _inputs()
    loss = build_loss({'type': 'MaskedDualL1Loss', 'loss_weight': 2.0, 'aligned_weight': 0.5})
    hr_mask = mask.repeat_interleave(4, 2).repeat_interleave(4, 3)
    expected = 2.0 * (0.5 * ((aligned - aligned_gt).abs() * mask).mean() + ((sr - gt).abs() * hr_mask).mean())
    torch.testing.assert_close(loss(sr, gt, aligned, aligned_gt, mask), expected)


def test_masked_mean_divides_by_valid_elements():
    sr, gt, aligned, aligned_gt, mask = _inputs()
    loss = build_loss({'type': 'MaskedDualL1Loss', 'reduction': 'masked_mean'})
    hr_mask = mask.repeat_interleave(4, 2).repeat_interleave(4, 3)
    lr = ((aligned - aligned_gt).abs() * mask).sum() / (3 * mask.sum())
    hr = ((sr - gt).abs() * hr_mask).sum() / (3 * hr_mask.sum())
    torch.testing.assert_close(loss(sr, gt, aligned, aligned_gt, mask), lr + hr)


def test_charbonnier_and_crop_border():
    sr, gt, aligned, aligned_gt, mask = _inputs()
    loss = build_loss({'type': 'MaskedDualL1Loss', 'charbonnier_eps': 1e-3, 'crop_border_hr': 4, 'crop_border_lr': 1})
    hr_mask = mask.repeat_interleave(4, 2).repeat_interleave(4, 3)[..., 4:-4, 4:-4]
    rho = lambda d: torch.sqrt(d * d + 1e-3)  # noqa: E731
    expected = (rho(aligned - aligned_gt)[..., 1:-1, 1:-1] * mask[..., 1:-1, 1:-1]).mean() + \
        (rho(sr - gt)[..., 4:-4, 4:-4] * hr_mask).mean()
    torch.testing.assert_close(loss(sr, gt, aligned, aligned_gt, mask), expected)


def test_plain_network_gets_the_hr_term_only():
    sr, gt, *_ = _inputs()
    loss = build_loss({'type': 'MaskedDualL1Loss'})
    torch.testing.assert_close(loss(sr, gt), (sr - gt).abs().mean())


def test_masked_out_pixels_get_no_gradient():
    sr, gt, aligned, aligned_gt, mask = _inputs()
    sr.requires_grad_()
    build_loss({'type': 'MaskedDualL1Loss'})(sr, gt, aligned, aligned_gt, mask).backward()
    hr_mask = mask.repeat_interleave(4, 2).repeat_interleave(4, 3).expand_as(sr)
    assert (sr.grad[hr_mask == 0] == 0).all() and (sr.grad[hr_mask == 1] != 0).all()


def test_bad_options_and_shapes():
    with pytest.raises(ValueError, match="reduction must be one of"):
        build_loss({'type': 'MaskedDualL1Loss', 'reduction': 'sum'})
    with pytest.raises(ValueError, match=r'prediction \(1, 3, 8, 8\) and target \(1, 3, 4, 4\)'):
        build_loss({'type': 'MaskedDualL1Loss'})(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 4, 4))
