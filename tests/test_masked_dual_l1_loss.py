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
    with pytest.raises(ValueError, match='color_weight must be >= 0'):
        build_loss({'type': 'MaskedDualL1Loss', 'color_weight': -1})
    with pytest.raises(ValueError, match=r'color_block 32 is larger than the HR image \(16, 16\)'):
        build_loss({'type': 'MaskedDualL1Loss', 'color_weight': 1, 'color_block': 32})(*_inputs())


def test_color_term_is_the_l1_of_block_means_over_mostly_valid_blocks():
    sr, gt, aligned, aligned_gt, mask = _inputs()
    plain = build_loss({'type': 'MaskedDualL1Loss'})(sr, gt, aligned, aligned_gt, mask)
    loss = build_loss({'type': 'MaskedDualL1Loss', 'color_weight': 0.5, 'color_block': 8})
    hr_mask = mask.repeat_interleave(4, 2).repeat_interleave(4, 3)
    terms = []
    for n in range(2):
        for by in range(2):
            for bx in range(2):
                m = hr_mask[n, 0, by * 8:(by + 1) * 8, bx * 8:(bx + 1) * 8]
                if m.mean() < 0.5:
                    continue
                d = (sr - gt)[n, :, by * 8:(by + 1) * 8, bx * 8:(bx + 1) * 8]
                terms.append(((d * m).sum((1, 2)) / m.sum()).abs())
    assert 0 < len(terms) < 8, 'the mask should leave some blocks out and keep others'
    expected = plain + 0.5 * torch.cat(terms).mean()
    torch.testing.assert_close(loss(sr, gt, aligned, aligned_gt, mask), expected)


def test_color_term_without_mask_after_the_border_crop():
    sr, gt, *_ = _inputs()
    loss = build_loss({'type': 'MaskedDualL1Loss', 'color_weight': 1.0, 'color_block': 4, 'crop_border_hr': 2})
    d = (sr - gt)[..., 2:-2, 2:-2]
    blocks = d.reshape(2, 3, 3, 4, 3, 4).mean((3, 5))
    torch.testing.assert_close(loss(sr, gt), d.abs().mean() + blocks.abs().mean())


def test_color_term_fits_the_mean_of_a_skewed_target_where_l1_fits_its_median():
    """Small bright details that misalignment puts anywhere: per-pixel L1 settles on the ground's level (the median),
    low against the mean; the colour term brings the output's mean to the target's."""
    torch.manual_seed(0)
    gt = 0.2 + 0.4 * (torch.rand(4, 1, 32, 32) < 0.15).float() + 0.01 * torch.randn(4, 1, 32, 32)
    fits = {}
    for weight in (0.0, 1.0):
        level = torch.full((4, 1, 1, 1), 0.1, requires_grad=True)
        loss = build_loss({'type': 'MaskedDualL1Loss', 'color_weight': weight, 'color_block': 32})
        opt = torch.optim.Adam([level], lr=2e-3)
        for _ in range(600):
            opt.zero_grad()
            loss(level.expand_as(gt), gt).backward()
            opt.step()
        fits[weight] = level.detach().flatten()
    mean, median = gt.mean((1, 2, 3)), gt.flatten(1).median(1).values
    assert (mean - median).min() > 0.04, 'the target should be skewed'
    torch.testing.assert_close(fits[0.0], median, atol=2e-3, rtol=0)
    torch.testing.assert_close(fits[1.0], mean, atol=2e-3, rtol=0)
