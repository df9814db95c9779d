"""Zoom a camera RAW photo ×4 with a trained SDAN at full resolution, with exact tiling.

Usage: ``sdan-zoom INPUT.ARW --weights net_g.pth [--opt test.yml] [--ref INPUT.JPG] -o OUT.png [--tile 512]
[--bits 8|16] [--device cpu|cuda] [--precision auto|fp32|bf16|fp16] [--match-color|--no-match-color]
[--save-offsets]`` (or ``python -m sdan_basicsr.tools.zoom``).
"""
import argparse
import inspect
import os
import os.path as osp
import re
import resource
import sys
import tempfile
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import rawpy
import torch
import torch.nn.functional as F
import yaml

from sdan_basicsr.archs.sdan_arch import IN_FORMAT_CHANNELS, SDAN
from sdan_basicsr.data import raw_utils
from sdan_basicsr.data.color import apply_color_transform, fit_color_transform
from sdan_basicsr.data.raw_utils import apply_white_balance
from sdan_basicsr.utils.cpu_memory import retain_freed_memory
from sdan_basicsr.utils.precision import PRECISIONS, auto_precision, autocast
from sdan_basicsr.utils.tiled_sdan import tiled_forward

#: Output formats by extension (cv2 writes both with 8 or 16 bits per channel).
OUTPUT_EXTENSIONS = ('.png', '.tif', '.tiff')
#: Rows of the output transformed at a time once its colours are matched.
MATCH_STRIP_ROWS = 512
#: Checkpoint keys of BasicSR's ``save_network``, in order of preference.
PARAM_KEYS = ('params_ema', 'params')
#: Keys every SDAN state dict has; weights without them are of another architecture.
SDAN_KEYS = ('conv_first.weight', 'align.conv_ref.weight', 'align.offset_conv1.weight', 'align.offset_conv3.weight',
             'align.dcn.weight', 'conv_last.weight')


class ZoomError(ValueError):
    """Bad input of ``sdan-zoom`` (weights, options, images, output path); the message names the file."""


# ---------------------------------------------------------------- network


def load_state_dict(path: str, param_key: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """The network weights of a checkpoint saved by ``sdan_basicsr/train.py`` (BasicSR's ``save_network``).

    Args:
        path (str): ``net_g_*.pth`` holding ``{'params': ..., 'params_ema': ...}`` or a bare state dict.
        param_key (str | None): Key to read. Default: None (``params_ema`` when present, else ``params``).

    Returns:
        dict[str, Tensor]: The state dict, without a ``module.`` prefix.
    """
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise ZoomError(f'cannot load weights {path}: {err}') from err
    if not isinstance(ckpt, dict):
        raise ZoomError(f'weights {path} hold a {type(ckpt).__name__}, not a state dict')
    if param_key is not None:
        if param_key not in ckpt:
            raise ZoomError(f'weights {path} have no key {param_key!r} (keys: {sorted(ckpt)[:8]})')
        ckpt = ckpt[param_key]
    else:
        ckpt = next((ckpt[k] for k in PARAM_KEYS if k in ckpt), ckpt)
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ZoomError(f'weights {path} are not a state dict of tensors')
    return OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v) for k, v in ckpt.items())


def infer_sdan_options(state_dict: Dict[str, torch.Tensor], path: str) -> dict:
    """SDAN's constructor arguments read off the shapes of its weights.

    Rule: ``num_feat``, ``num_in_ch`` from ``conv_first.weight`` (C, in, 3, 3) and ``in_format`` from
    ``num_in_ch`` (1 bayer, 4 packed, 3 rgb), except that ``conv_first.pattern`` marks a
    :class:`~sdan_basicsr.archs.sdan_arch.BayerHead` (``bayer`` with ``cfa_head``, 4 planes); ``num_out_ch``
    from ``conv_last.weight``; ``num_block`` = number of
    ``body.<i>`` blocks; ``upscale`` = 2 ** number of ``upsample.<i>.weight`` convs; ``flip_ref`` when
    ``align.conv_ref.weight`` takes 12 channels (3 without); ``offsets`` / ``modulation`` from the output
    channels of ``align.offset_conv3`` (2 squared, 18 per-tap, +1 with modulation); ``attention`` ``cpa`` when
    ``align.offset_att1.gamma`` exists, ``ca`` when ``align.offset_att1.attention.1.weight`` does, else ``none``.
    ``in_gamma`` from the buffer ``input_gamma`` (1 without it).
    ``offset_init`` and ``dcn_backend`` do not show in the weights and keep their defaults.

    Args:
        state_dict (dict[str, Tensor]): SDAN weights.
        path (str): Their file, for the messages.

    Returns:
        dict: Keyword arguments of :class:`SDAN`.
    """
    missing = [k for k in SDAN_KEYS if k not in state_dict]
    if missing:
        raise ZoomError(f'weights {path} are not SDAN weights: no {", ".join(missing)} '
                        f'(first keys: {", ".join(list(state_dict)[:4])})')
    num_feat, num_in_ch = state_dict['conv_first.weight'].shape[:2]
    cfa_head = 'conv_first.pattern' in state_dict
    if cfa_head:
        num_in_ch = IN_FORMAT_CHANNELS['bayer']
    formats = {c: f for f, c in IN_FORMAT_CHANNELS.items()}
    if num_in_ch not in formats:
        raise ZoomError(f'weights {path}: conv_first.weight takes {num_in_ch} channels, none of the in_formats '
                        f'{IN_FORMAT_CHANNELS}')
    offset_ch = state_dict['align.offset_conv3.weight'].shape[0]
    if offset_ch not in (2, 3, 18, 19):
        raise ZoomError(f'weights {path}: align.offset_conv3.weight has {offset_ch} output channels, '
                        'expected 2 or 18 (+1 with modulation)')
    if 'align.offset_att1.gamma' in state_dict:
        attention = 'cpa'
    elif 'align.offset_att1.attention.1.weight' in state_dict:
        attention = 'ca'
    else:
        attention = 'none'
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r'body\.(\d+)\.', k))}
    ups = [k for k in state_dict if re.fullmatch(r'upsample\.\d+\.weight', k)]
    return dict(
        num_in_ch=int(num_in_ch),
        num_out_ch=int(state_dict['conv_last.weight'].shape[0]),
        num_feat=int(num_feat),
        num_block=len(blocks),
        upscale=2**len(ups),
        in_format=formats[int(num_in_ch)],
        offsets='squared' if offset_ch < 18 else 'per_tap',
        attention=attention,
        flip_ref=state_dict['align.conv_ref.weight'].shape[1] == 12,
        modulation=offset_ch % 2 == 1,
        cfa_head=cfa_head,
        in_gamma=float(state_dict['input_gamma']) if 'input_gamma' in state_dict else 1.)


def _network_options(opt_path: str) -> dict:
    try:
        with open(opt_path) as f:
            opt = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        raise ZoomError(f'cannot read options {opt_path}: {err}') from err
    net_opt = opt.get('network_g') if isinstance(opt, dict) else None
    if not isinstance(net_opt, dict):
        raise ZoomError(f'options {opt_path} have no network_g section')
    net_opt = dict(net_opt)
    if net_opt.pop('type', None) != 'SDAN':
        raise ZoomError(f"options {opt_path}: network_g type is {opt['network_g'].get('type')!r}; sdan-zoom runs SDAN")
    unknown = set(net_opt) - set(inspect.signature(SDAN).parameters)
    if unknown:
        raise ZoomError(f'options {opt_path}: network_g has keys SDAN does not take: {sorted(unknown)}')
    return net_opt


def build_network(weights: str, opt: Optional[str] = None, param_key: Optional[str] = None) -> SDAN:
    """SDAN with the given weights loaded, built from ``opt``'s ``network_g`` or inferred from the weights.

    Args:
        weights (str): Checkpoint (see :func:`load_state_dict`).
        opt (str | None): Options YAML whose ``network_g`` describes the network. Default: None (inferred by
            :func:`infer_sdan_options`).
        param_key (str | None): Checkpoint key. Default: None (``params_ema``, else ``params``).

    Returns:
        SDAN: In eval mode, on the CPU.
    """
    state_dict = load_state_dict(weights, param_key)
    inferred = infer_sdan_options(state_dict, weights)
    net_opt = inferred
    if opt is not None:
        net_opt = _network_options(opt)
        defaults = {k: p.default for k, p in inspect.signature(SDAN).parameters.items()}
        diff = [f'{k}: options {net_opt.get(k, defaults[k])!r}, weights {v!r}' for k, v in inferred.items()
                if net_opt.get(k, defaults[k]) != v]
        if diff:
            raise ZoomError(f'weights {weights} do not fit network_g of {opt}: {"; ".join(diff)}')
    try:
        net = SDAN(**net_opt)
        net.load_state_dict(state_dict, strict=True)
    except (RuntimeError, ValueError) as err:
        raise ZoomError(f'cannot load weights {weights} into SDAN({net_opt}): {err}') from err
    return net.eval()


# ---------------------------------------------------------------- inputs


def _libraw_reference(path: str, size: Tuple[int, int]) -> np.ndarray:
    """LibRaw's demosaic of ``path`` without white balance, gamma-encoded as the JPEGs, on the RGGB mosaic grid."""
    try:
        with rawpy.imread(path) as raw:
            dy, dx = raw_utils.CFA_OFFSETS[raw_utils.cfa_pattern(raw)]
            rgb = raw.postprocess(user_wb=[1, 1, 1, 1], output_color=rawpy.ColorSpace.raw, gamma=(1, 1),
                                  no_auto_bright=True, adjust_maximum_thr=0.0, output_bps=16, user_flip=0)
    except (rawpy.LibRawError, ValueError, OSError) as err:
        raise raw_utils.RawReadError(f'cannot demosaic RAW file {path}: {err}') from err
    h, w = size
    rgb = rgb[dy:dy + h, dx:dx + w]
    if rgb.shape[:2] != (h, w):
        raise raw_utils.RawReadError(f'LibRaw demosaic of {path} is {rgb.shape[:2]}, smaller than its mosaic {size}')
    return (rgb.astype(np.float32) / 65535)**(1 / raw_utils.JPEG_GAMMA)


def _jpeg_reference(path: str, size: Tuple[int, int], wb: np.ndarray) -> np.ndarray:
    """The camera JPEG resized to the mosaic grid and divided by its white balance, as the dataset's ``lq_rgb``."""
    img = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise ZoomError(f'cannot read reference image {path}')
    h, w = size
    jh, jw = img.shape[:2]
    if abs(jh / jw - h / w) > 0.02 * h / w:
        raise ZoomError(f'reference {path} is {jw}x{jh}, not the aspect ratio of the RAW mosaic {w}x{h}')
    inter = cv2.INTER_AREA if jh > h else cv2.INTER_CUBIC
    img = cv2.cvtColor(cv2.resize(img, (w, h), interpolation=inter), cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    return raw_utils.remove_white_balance(img, wb)


def read_inputs(raw_path: str, in_format: str, ref_path: Optional[str] = None
                ) -> Tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """X, X_rgb and the white balance of a RAW file, as :class:`SRRAWPairedDataset` gives ``lq``, ``lq_rgb``, ``wb``.

    Args:
        raw_path (str): RAW file of any 2×2 Bayer pattern (brought to RGGB; black and white level from the file).
        in_format (str): ``bayer`` (1, h, w), ``packed`` (4, h/2, w/2) or ``rgb`` (3, h, w, = X_rgb).
        ref_path (str | None): The camera JPEG of the same shot. Default: None (LibRaw's demosaic of the RAW,
            no white balance, gamma 1/2.2, in the camera's colour space).

    Returns:
        tuple: ``x`` (1, C, h', w'), ``ref`` (1, 3, h', w') on the same grid, ``wb`` (4,) gains [R, G, G, B].
    """
    mosaic = raw_utils.read_raw(raw_path)
    wb = raw_utils.camera_wb(raw_path)
    size = mosaic.shape
    ref = _libraw_reference(raw_path, size) if ref_path is None else _jpeg_reference(ref_path, size, wb)
    x = raw_utils.network_input(mosaic, ref, in_format)
    if in_format == 'packed':
        ref = cv2.resize(ref, (size[1] // 2, size[0] // 2), interpolation=cv2.INTER_AREA)
    to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]  # noqa: E731
    return to_tensor(x), to_tensor(ref.transpose(2, 0, 1)), wb


# ---------------------------------------------------------------- outputs


def _temp_path(path: str) -> str:
    """Create (empty) a temporary file next to ``path`` with its extension; proves the folder is writable."""
    folder = osp.dirname(osp.abspath(path))
    stem, ext = osp.splitext(osp.basename(path))
    try:
        fd, tmp = tempfile.mkstemp(suffix=ext, prefix=f'.{stem}.', dir=folder)
    except OSError as err:
        raise ZoomError(f'cannot write output {path}: {err}') from err
    os.close(fd)
    return tmp


def _write(tmp: str, path: str, img: np.ndarray) -> None:
    """Write an RGB (or grey) image to ``tmp`` then rename it to ``path``, so nothing half-written is left there."""
    if img.ndim == 3:
        img = np.ascontiguousarray(img[..., ::-1])
    if not cv2.imwrite(tmp, img):
        raise OSError(f'cannot write output {path}')
    os.replace(tmp, path)


def flow_to_color(theta: np.ndarray, scale: Optional[float] = None) -> Tuple[np.ndarray, float]:
    """Colour-code an offset field: hue = direction of (dx, dy), value = |Θ| / scale (clipped), saturation 1.

    Hue follows OpenCV's HSV: 0° red = +x (right), 90° = +y (down), 180° cyan = left, 270° = up.

    Args:
        theta (ndarray): (2, h, w) offsets [dy, dx] in input pixels.
        scale (float | None): Magnitude shown at full value. Default: None (the largest |Θ|).

    Returns:
        tuple: (h, w, 3) uint8 RGB image and the scale used.
    """
    dy, dx = theta[0].astype(np.float32), theta[1].astype(np.float32)
    magnitude = np.hypot(dx, dy)
    if scale is None:
        scale = float(magnitude.max())
    scale = max(scale, 1e-6)
    hsv = np.empty((*magnitude.shape, 3), np.uint8)
    hsv[..., 0] = np.round(np.mod(np.degrees(np.arctan2(dy, dx)), 360) / 2).astype(np.uint8) % 180
    hsv[..., 1] = 255
    hsv[..., 2] = np.round(np.clip(magnitude / scale, 0, 1) * 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), scale


def _side_paths(output: str) -> Tuple[str, str]:
    stem = osp.splitext(output)[0]
    return f'{stem}_offsets.png', f'{stem}_mask.png'


def zoom(raw: str,
         weights: str,
         output: str,
         opt: Optional[str] = None,
         ref: Optional[str] = None,
         tile: int = 512,
         bits: int = 8,
         device: str = 'cpu',
         save_offsets: bool = False,
         offset_scale: Optional[float] = None,
         param_key: Optional[str] = None,
         progress: bool = True,
         precision: str = 'fp32',
         match_color: Optional[bool] = None) -> dict:
    """Zoom a RAW file with SDAN and write the white-balanced result; every input is checked before the network runs.

    Args:
        raw (str): RAW file.
        weights (str): SDAN checkpoint.
        output (str): ``.png``, ``.tif`` or ``.tiff`` file, written through a temporary file in the same folder.
        opt (str | None): Options YAML with ``network_g``. Default: None (inferred from the weights).
        ref (str | None): Camera JPEG of the shot. Default: None (LibRaw's demosaic).
        tile (int): Tile side in input pixels, 0 = untiled. Default: 512.
        bits (int): 8 or 16 bits per channel. Default: 8.
        device (str): ``cpu`` or ``cuda``. Default: ``cpu``.
        save_offsets (bool): Also write ``<output stem>_offsets.png`` (Θ, see :func:`flow_to_color`) and
            ``<output stem>_mask.png`` (M'). Default: False.
        offset_scale (float | None): |Θ| shown at full brightness. Default: None (the largest |Θ|).
        param_key (str | None): Checkpoint key. Default: None (``params_ema``, else ``params``).
        progress (bool): tqdm bar over the tiles. Default: True.
        precision (str): ``fp32``, ``bf16``, ``fp16`` (autocast, with SDAN's float32 stages) or ``auto``
            (:func:`~sdan_basicsr.utils.precision.auto_precision` of ``device``). On CPU the network runs in
            channels-last memory format (faster there, same function) and freed memory is kept for reuse
            (:func:`~sdan_basicsr.utils.cpu_memory.retain_freed_memory`). Default: ``fp32``.
        match_color (bool | None): Give the result the colours of the reference: one global colour transform
            (3×3 + offset, :func:`~sdan_basicsr.data.color.fit_color_transform`), fitted between the output
            averaged to the reference's grid and the reference, and applied before the white balance. Until all
            tiles are in, the output is kept without white balance (float16 for 8 bits, float32 for 16 bits).
            Default: None (on when ``ref``, the camera JPEG, is given; LibRaw's demosaic is in the camera's raw
            colour space, not in the JPEG's colours the network learned).

    Returns:
        dict: ``seconds``, ``peak_rss_gib``, ``size`` (output h, w), ``offset_scale`` (or None), ``precision``
        (the one that ran), ``color_transform`` ((3, 4) list, or None without colour matching) and the paths.
    """
    start = time.time()
    if bits not in (8, 16):
        raise ZoomError(f'bits must be 8 or 16, got {bits}')
    if osp.splitext(output)[1].lower() not in OUTPUT_EXTENSIONS:
        raise ZoomError(f'output {output} must end in one of {OUTPUT_EXTENSIONS}')
    if tile < 0:
        raise ZoomError(f'tile must be 0 (untiled) or positive, got {tile}')
    if precision == 'auto':
        precision = auto_precision(device)
    if precision not in PRECISIONS:
        raise ZoomError(f'precision must be auto or one of {sorted(PRECISIONS)}, got {precision!r}')
    if match_color is None:
        match_color = ref is not None
    if torch.device(device).type == 'cpu':
        retain_freed_memory()
    net = build_network(weights, opt, param_key)
    if tile and net.align.offsets != 'squared':
        raise ZoomError(f'weights {weights} have per-tap offsets, which tiling does not support: use --tile 0')
    outputs = [output] + (list(_side_paths(output)) if save_offsets else [])
    temps = [_temp_path(p) for p in outputs]
    try:
        x, x_rgb, wb = read_inputs(raw, net.in_format, ref)
        reference = x_rgb[0].permute(1, 2, 0).numpy()
        net = net.to(device, memory_format=torch.channels_last if device == 'cpu' else torch.preserve_format)
        x, x_rgb = x.to(device), x_rgb.to(device)
        wb = torch.from_numpy(np.asarray(wb, np.float32)).to(device).view(1, 4)
        s = net.upscale
        out_h, out_w = s * x.shape[2], s * x.shape[3]
        image = np.empty((out_h, out_w, 3), np.uint8 if bits == 8 else np.uint16)
        top = 2**bits - 1

        if match_color:
            unbalanced = np.empty((out_h, out_w, 3), np.float16 if bits == 8 else np.float32)
            averaged = np.empty_like(reference)  # the output on the reference's grid

        def paste(row: int, col: int, sr: torch.Tensor) -> None:
            if match_color:
                sr = sr.float()
                tile_img = sr[0].permute(1, 2, 0).cpu().numpy()
                unbalanced[row:row + tile_img.shape[0], col:col + tile_img.shape[1]] = tile_img
                low = F.avg_pool2d(sr, s)[0].permute(1, 2, 0).cpu().numpy()
                averaged[row // s:row // s + low.shape[0], col // s:col // s + low.shape[1]] = low
                return
            tile_img = apply_white_balance(sr.float(), wb).mul_(top).round_()[0].permute(1, 2, 0).cpu().numpy()
            image[row:row + tile_img.shape[0], col:col + tile_img.shape[1]] = tile_img

        with autocast(device, precision):
            if tile:
                result = tiled_forward(net, x, x_rgb, tile, progress=progress, sr_sink=paste)
            else:
                with torch.no_grad():
                    result = net(x, x_rgb)
                paste(0, 0, result.sr)
        del x, x_rgb
        transform = None
        if match_color:
            transform = fit_color_transform(averaged, reference)
            gains = raw_utils.display_gains(wb[0].cpu().numpy())
            for row in range(0, out_h, MATCH_STRIP_ROWS):
                strip = apply_color_transform(unbalanced[row:row + MATCH_STRIP_ROWS].astype(np.float32), transform)
                image[row:row + MATCH_STRIP_ROWS] = np.round(np.clip(strip * gains, 0, 1) * top)
            del unbalanced
        _write(temps[0], output, image)
        scale = None
        if save_offsets:
            flow, scale = flow_to_color(result.offset[0, :2].cpu().numpy(), offset_scale)
            _write(temps[1], outputs[1], flow)
            _write(temps[2], outputs[2], (result.mask[0, 0].cpu().numpy() * 255).astype(np.uint8))
    finally:
        for tmp in temps:
            if osp.exists(tmp):
                os.remove(tmp)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return dict(seconds=time.time() - start, peak_rss_gib=peak, size=(out_h, out_w), offset_scale=scale,
                precision=precision, color_transform=None if transform is None else transform.tolist(),
                outputs=outputs)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('input', help='RAW file (ARW, DNG, NEF, CR2, ... any 2x2 Bayer pattern)')
    parser.add_argument('--weights', required=True, help='net_g_*.pth saved by sdan_basicsr/train.py')
    parser.add_argument('--opt', help='options YAML whose network_g describes the network (default: inferred '
                        'from the weights)')
    parser.add_argument('--ref', help='camera JPEG of the same shot as the reference (default: LibRaw demosaic)')
    parser.add_argument('-o', '--output', required=True, help='output .png, .tif or .tiff')
    parser.add_argument('--tile', type=int, default=512, help='tile side in input pixels; 0 = untiled')
    parser.add_argument('--bits', type=int, choices=(8, 16), default=8)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--precision', default='auto', choices=('auto', *PRECISIONS),
                        help='auto: bf16 on a CPU with native bf16 or a CUDA GPU that has it, fp16 on other GPUs, '
                        'else fp32 (default: auto)')
    parser.add_argument('--match-color', action=argparse.BooleanOptionalAction, default=None,
                        help="give the result the reference's colours by one global 3x3 + offset transform "
                        '(default: on with --ref, off with the LibRaw demosaic)')
    parser.add_argument('--save-offsets', action='store_true',
                        help='also write <output>_offsets.png (hue = direction, value = |offset|) and '
                        '<output>_mask.png')
    parser.add_argument('--offset-scale', type=float, help='|offset| in input pixels shown at full value '
                        '(default: the largest)')
    parser.add_argument('--param-key', help='checkpoint key (default: params_ema if present, else params)')
    args = parser.parse_args(argv)
    if args.device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    precision = auto_precision(args.device) if args.precision == 'auto' else args.precision
    print(f'precision: {precision}' + (' (auto)' if args.precision == 'auto' else ''), flush=True)
    try:
        info = zoom(args.input, args.weights, args.output, args.opt, args.ref, args.tile, args.bits, args.device,
                    args.save_offsets, args.offset_scale, args.param_key, precision=precision,
                    match_color=args.match_color)
    except (ZoomError, raw_utils.RawReadError, OSError) as err:
        parser.exit(2, f'sdan-zoom: error: {err}\n')
    h, w = info['size']
    line = (f'{args.input} -> {args.output} ({w}x{h}, {args.bits} bit) in {info["seconds"]:.1f} s, '
            f'peak memory {info["peak_rss_gib"]:.2f} GiB (ru_maxrss)')
    if args.device == 'cuda':
        line += f', {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB on the GPU'
    print(line)
    if info['color_transform'] is not None:
        rows = '; '.join(' '.join(f'{v:+.3f}' for v in r) for r in info['color_transform'])
        print(f'colours matched to {args.ref or "the LibRaw demosaic"}: [M | b] = {rows}')
    if args.save_offsets:
        print(f'offsets: {info["outputs"][1]} (hue = direction, full value = {info["offset_scale"]:.3g} input px), '
              f'mask: {info["outputs"][2]}')
    sys.stdout.flush()


if __name__ == '__main__':
    main()
