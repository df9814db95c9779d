"""Zoom camera RAW photos ×4 with a trained SDAN at full resolution, with exact tiling, in bounded memory.

Usage: ``sdan-zoom RAW|FOLDER [RAW|FOLDER ...] [--weights net_g.pth] [-o OUT.png|OUT_FOLDER] [--opt test.yml]
[--ref SHOT.JPG] [--bits 8|16] [--format png|tif] [--overwrite] [--max-memory 8G] [--tile N] [--device cpu|cuda]
[--precision auto|fp32|bf16|fp16] [--no-match-color] [--save-offsets]`` (or ``python -m sdan_basicsr.tools.zoom``).

For each RAW file: the Bayer mosaic as the sensor stored it and LibRaw's rendering of it (the file's own colour matrix
and white balance, sRGB) go through the network; the result's colours are matched to that rendering (or to the camera
JPEG given with ``--ref``); it is turned upright by the file's orientation and written by strips, with the file's EXIF
and an sRGB ICC profile, to a temporary file that is renamed once complete.
"""
import argparse
import inspect
import os
import os.path as osp
import re
import resource
import sys
import textwrap
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from tqdm import tqdm

from sdan_basicsr.archs.sdan_arch import CPA_PACKING, IN_FORMAT_CHANNELS, SDAN
from sdan_basicsr.data import raw_utils
from sdan_basicsr.data.color import apply_color_transform, fit_color_transform
from sdan_basicsr.data.raw_utils import apply_white_balance
from sdan_basicsr.utils import zoom_memory
from sdan_basicsr.utils.cpu_memory import mapped_empty, outside_heap, retain_freed_memory
from sdan_basicsr.utils.disk_array import DiskArray
from sdan_basicsr.utils.image_writer import srgb_profile, write_image
from sdan_basicsr.utils.precision import PRECISIONS, auto_precision, autocast
from sdan_basicsr.utils.tiled_sdan import tile_shape, tiled_forward
from sdan_basicsr.weights import NETWORK_KEY, SHIPPED_WEIGHTS

#: Output formats by extension.
OUTPUT_EXTENSIONS = ('.png', '.tif', '.tiff')
#: ``--format`` → extension, and the default format of each bit depth.
FORMATS = {'png': '.png', 'tif': '.tif'}
DEFAULT_FORMAT = {8: 'png', 16: 'tif'}
#: Extensions of the RAW files taken from a folder given as input (a file given by name is tried whatever its name).
RAW_EXTENSIONS = frozenset(('.3fr', '.ari', '.arw', '.bay', '.cr2', '.cr3', '.crw', '.dcr', '.dng', '.erf', '.fff',
                            '.iiq', '.k25', '.kdc', '.mef', '.mos', '.mrw', '.nef', '.nrw', '.orf', '.pef', '.raf',
                            '.raw', '.rw2', '.rwl', '.sr2', '.srf', '.srw', '.x3f'))
#: Smallest mosaic side zoomed: four of CPA's 8×8 blocks (a smaller image is mostly the network's padding).
MIN_SIDE = 4 * CPA_PACKING
#: Rows of the output read back, colour-matched and encoded at a time (a TIFF's RowsPerStrip).
STRIP_ROWS = 64
#: Software tag of the outputs.
SOFTWARE = 'sdan-zoom (sdan-basicsr)'
#: EXIF ColorSpace value of sRGB.
EXIF_SRGB = 1
#: Checkpoint keys of BasicSR's ``save_network``, in order of preference.
PARAM_KEYS = ('params_ema', 'params')
#: Keys every SDAN state dict has; weights without them are of another architecture.
SDAN_KEYS = ('conv_first.weight', 'align.conv_ref.weight', 'align.offset_conv1.weight', 'align.offset_conv3.weight',
             'align.dcn.weight', 'conv_last.weight')
#: What the outputs are (``--help``'s epilog), paragraph by paragraph.
EPILOG = '\n\n'.join(textwrap.fill(p, 78) for p in (
    "Colours: by default the network's result is given the colours of a reference by one global 3x3 + offset colour "
    "transform (a robust fit): LibRaw's rendering of the RAW file with the file's own colour matrix and the camera's "
    'white balance, in sRGB (gamma 2.2), or the camera JPEG given with --ref. Any camera comes out in sRGB as its '
    "file says it renders, whatever camera the network was trained on. --no-match-color keeps the network's own "
    "colours (those it learned from its training camera), with the camera's white balance.",
    'Orientation: the network sees the mosaic as the sensor stored it; the result, and the offset and mask images, '
    "are turned upright by the file's orientation (EXIF Orientation, LibRaw's flip).",
    "Metadata: the output keeps the RAW file's EXIF (camera, lens, exposure, date, author, GPS) with its size updated "
    'and the orientation 1, and carries an sRGB ICC profile.',
    'Memory: on a CPU the tile is the largest whose expected peak fits --max-memory; the zoomed image is never held '
    'in memory (an unnamed temporary file beside the output, then encoded by strips).',
    'Many files: outputs are named <stem>_x<scale>.png|tif; an existing output is skipped unless --overwrite, so an '
    'interrupted run resumes; each is written to .<stem>.part<ext> and renamed once complete; a file that cannot be '
    'zoomed is reported and skipped. Exit status: 1 when any file failed, 2 for bad arguments, weights or options.'))


class ZoomError(ValueError):
    """Bad input of ``sdan-zoom`` (weights, options, images, output path); the message names the file."""


# ---------------------------------------------------------------- network


def load_weights(path: str, param_key: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], Optional[dict]]:
    """The network weights of a checkpoint saved by ``sdan_basicsr/train.py`` (BasicSR's ``save_network``), and the
    ``network_g`` options stored with them (shipped weights carry theirs: :mod:`sdan_basicsr.weights`).

    Args:
        path (str): ``net_g_*.pth`` holding ``{'params': ..., 'params_ema': ...}`` or a bare state dict.
        param_key (str | None): Key to read. Default: None (``params_ema`` when present, else ``params``).

    Returns:
        tuple: The state dict, without a ``module.`` prefix, and the stored ``network_g`` (None if there is none).
    """
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise ZoomError(f'cannot load weights {path}: {err}') from err
    if not isinstance(ckpt, dict):
        raise ZoomError(f'weights {path} hold a {type(ckpt).__name__}, not a state dict')
    network = ckpt.get(NETWORK_KEY)
    if param_key is not None:
        if param_key not in ckpt:
            raise ZoomError(f'weights {path} have no key {param_key!r} (keys: {sorted(ckpt)[:8]})')
        ckpt = ckpt[param_key]
    else:
        ckpt = next((ckpt[k] for k in PARAM_KEYS if k in ckpt), ckpt)
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ZoomError(f'weights {path} are not a state dict of tensors')
    return OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v) for k, v in ckpt.items()), network


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
    ``in_gamma`` from the buffer ``input_gamma`` (1 without it); ``noise_input`` when ``conv_noise.weight`` exists.
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
        in_gamma=float(state_dict['input_gamma']) if 'input_gamma' in state_dict else 1.,
        noise_input='conv_noise.weight' in state_dict)


def _same_option(a: Any, b: Any) -> bool:
    """Whether an option of the YAML and one read off the weights agree; numbers to float32 precision, as the weights
    store them (``in_gamma`` 2.2 is the buffer 2.200000047683716)."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return bool(np.float32(a) == np.float32(b)) if numbers else a == b


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
        weights (str): Checkpoint (see :func:`load_weights`).
        opt (str | None): Options YAML whose ``network_g`` describes the network. Default: None (inferred by
            :func:`infer_sdan_options`).
        param_key (str | None): Checkpoint key. Default: None (``params_ema``, else ``params``).

    Returns:
        SDAN: In eval mode, on the CPU.
    """
    state_dict, stored = load_weights(weights, param_key)
    if stored is not None:  # stored options say what the weights cannot (image_skip leaves no weight)
        if stored.get('type', 'SDAN') != 'SDAN':
            raise ZoomError(f"weights {weights} hold a network of type {stored['type']} (their network_g); "
                            'sdan-zoom runs SDAN')
        from_weights = {k: v for k, v in stored.items() if k != 'type'}
    else:
        from_weights = infer_sdan_options(state_dict, weights)
        if opt is None:
            print(f'sdan-zoom: weights {weights} carry no network options (a plain BasicSR checkpoint): they are '
                  "read off the weights, image_skip off; give the training's option file with --opt if it set "
                  'image_skip', file=sys.stderr, flush=True)
    net_opt = from_weights
    if opt is not None:
        net_opt = _network_options(opt)
        defaults = {k: p.default for k, p in inspect.signature(SDAN).parameters.items()}
        diff = [f'{k}: options {net_opt.get(k, defaults[k])!r}, weights {v!r}' for k, v in from_weights.items()
                if not _same_option(net_opt.get(k, defaults[k]), v)]
        if diff:
            raise ZoomError(f'weights {weights} do not fit network_g of {opt}: {"; ".join(diff)}')
    try:
        net = SDAN(**net_opt)
        net.load_state_dict(state_dict, strict=True)
    except (RuntimeError, ValueError) as err:
        raise ZoomError(f'cannot load weights {weights} into SDAN({net_opt}): {err}') from err
    return net.eval()


def load_network(args: argparse.Namespace) -> SDAN:
    """The network of the command line: ``--weights`` (with ``--opt``, ``--param-key``), built by
    :func:`build_network`; without ``--weights`` the shipped SDAN (:data:`~sdan_basicsr.weights.SHIPPED_WEIGHTS`).
    Prints the path of the weights it uses."""
    weights = args.weights or SHIPPED_WEIGHTS
    if not osp.isfile(weights):
        raise ZoomError(f'weights not found: {weights}')
    print(f'weights: {weights}', flush=True)
    return build_network(weights, args.opt, args.param_key)


# ---------------------------------------------------------------- inputs


class ZoomInputs(NamedTuple):
    """What :func:`read_inputs` gives: the network's inputs, on the mosaic's grid as stored, and the file's metadata.

    Attributes:
        x (Tensor): (1, C, h', w') network input.
        ref (Tensor): (1, 3, h', w') reference without white balance, the colour target too.
        wb (ndarray): (4,) white-balance gains [R, G, G, B].
        flip (int): LibRaw's orientation (``sizes.flip``), see :func:`~sdan_basicsr.data.raw_utils.orient`.
        exif (Image.Exif): The photograph's EXIF (:func:`~sdan_basicsr.data.raw_utils.read_photo_exif`).
        noise (Tensor | None): (1, 2, 2, 2) noise profile of ``x`` for a network with ``noise_input``, else None.
    """
    x: torch.Tensor
    ref: torch.Tensor
    wb: np.ndarray
    flip: int
    exif: Image.Exif
    noise: Optional[torch.Tensor] = None


def _rendered_reference(rendering: np.ndarray, wb: np.ndarray) -> np.ndarray:
    """LibRaw's 16-bit rendering divided by its white balance (:func:`~sdan_basicsr.data.raw_utils.display_gains`),
    in [0, 1], float32: the convention of the dataset's ``lq_rgb``, made in one pass."""
    scale = (1 / (65535 * raw_utils.display_gains(np.asarray(wb, np.float32)))).astype(np.float32)
    ref = np.multiply(rendering, scale, dtype=np.float32)
    return np.clip(ref, 0, 1, out=ref)


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


def read_inputs(raw_path: str, in_format: str, ref_path: Optional[str] = None, noise_profile: bool = False,
                log: Callable[[str], Any] = print) -> ZoomInputs:
    """X, X_rgb and the white balance of a RAW file, as :class:`SRRAWPairedDataset` gives ``lq``, ``lq_rgb``, ``wb``,
    with the file's orientation and EXIF.

    Args:
        raw_path (str): RAW file of any 2×2 Bayer pattern (brought to RGGB; black and white level from the file),
            at least :data:`MIN_SIDE` pixels a side.
        in_format (str): ``bayer`` (1, h, w), ``packed`` (4, h/2, w/2) or ``rgb`` (3, h, w, = X_rgb).
        ref_path (str | None): The camera JPEG of the same shot. Default: None (LibRaw's rendering of the RAW
            with its own colour matrix and white balance, sRGB, gamma 1/2.2:
            :func:`~sdan_basicsr.data.raw_utils.render_srgb`).
        noise_profile (bool): Also give the mosaic's noise profile (``bayer``), as the dataset's ``noise_profile``
            does: the file's DNG NoiseProfile, else the estimate from the mosaic. Default: False.
        log (callable): Receives the line that says where the noise profile came from. Default: ``print``.

    Returns:
        ZoomInputs: ``x`` and ``ref`` on the same grid, ``wb``, ``flip``, ``exif``, ``noise``.
    """
    with raw_utils.open_raw(raw_path) as raw:
        mosaic = raw_utils.read_mosaic(raw, raw_path)
        if min(mosaic.shape) < MIN_SIDE:
            raise raw_utils.RawReadError(f'unsupported RAW file {raw_path}: its mosaic is {mosaic.shape[1]}x'
                                         f'{mosaic.shape[0]}, smaller than the {MIN_SIDE}x{MIN_SIDE} the network takes')
        wb = raw_utils.raw_white_balance(raw, raw_path)
        flip, exif = int(raw.sizes.flip), raw_utils.read_photo_exif(raw, raw_path)
        rendering = raw_utils.render_srgb(raw, raw_path) if ref_path is None else None
    noise = None
    if noise_profile:
        profile, source = raw_utils.noise_profile(raw_path, mosaic)
        log(f'{raw_path}: noise sigma at mid-grey (0.18) {np.sqrt(profile @ [0.18, 1]).round(4).tolist()} (R, G, B), '
            f'{source}')
        noise = torch.from_numpy(raw_utils.site_noise_profile(profile))[None]
    size = mosaic.shape
    ref = _jpeg_reference(ref_path, size, wb) if rendering is None else _rendered_reference(rendering, wb)
    del rendering
    x = raw_utils.network_input(mosaic, ref, in_format)
    if in_format == 'packed':
        ref = cv2.resize(ref, (size[1] // 2, size[0] // 2), interpolation=cv2.INTER_AREA)
    to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]  # noqa: E731
    return ZoomInputs(to_tensor(x), to_tensor(ref.transpose(2, 0, 1)), wb, flip, exif, noise)


# ---------------------------------------------------------------- outputs


def _temp_path(path: str) -> str:
    """``.<stem>.part<ext>`` next to ``path``, created empty (which proves the folder writable): a killed run leaves
    at most this, which the next one replaces."""
    stem, ext = osp.splitext(osp.basename(path))
    tmp = osp.join(osp.dirname(osp.abspath(path)), f'.{stem}.part{ext}')
    try:
        open(tmp, 'wb').close()
    except OSError as err:
        raise ZoomError(f'cannot write output {path}: {err}') from err
    return tmp


def _write(tmp: str, path: str, img: np.ndarray) -> None:
    """Write an RGB (or grey) image to ``tmp`` then rename it to ``path``, so nothing half-written is left there."""
    if img.ndim == 3:
        img = np.ascontiguousarray(img[..., ::-1])
    if not cv2.imwrite(tmp, np.ascontiguousarray(img)):
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


def _serialisable(tag: int, value: Any, ifd: Optional[int] = None) -> bool:
    """Whether Pillow writes ``value`` as ``tag`` (of IFD0, or of the sub-IFD ``ifd``): a RAW file's odd value is left
    out rather than failing the write after the zoom."""
    probe = Image.Exif()
    if ifd is None:
        probe[tag] = value
    else:
        probe.get_ifd(ifd)[tag] = value
    try:
        probe.tobytes()
    except Exception:  # Pillow raises many types for a value it cannot pack
        return False
    return True


def output_exif(exif: Image.Exif, size: Tuple[int, int]) -> Image.Exif:
    """The EXIF of a zoomed image of ``size`` (h, w): the RAW file's (what Pillow can write of it), upright
    (Orientation 1), in sRGB, its pixel dimensions updated, ``sdan-zoom`` as the software."""
    out = Image.Exif()
    out.update({tag: v for tag, v in exif.items() if _serialisable(tag, v)})
    out[raw_utils.ORIENTATION_TAG] = 1
    out[305] = SOFTWARE
    for ifd in (raw_utils.EXIF_IFD_TAG, raw_utils.GPS_IFD_TAG):
        tags = {tag: v for tag, v in exif.get_ifd(ifd).items() if _serialisable(tag, v, ifd)}
        if tags:
            out.get_ifd(ifd).update(tags)
    out.get_ifd(raw_utils.EXIF_IFD_TAG).update({40961: EXIF_SRGB, 40962: size[1], 40963: size[0]})
    return out


def _strips(image: DiskArray, finish: Callable[[np.ndarray], np.ndarray]) -> Iterator[np.ndarray]:
    """The rows of ``image``, :data:`STRIP_ROWS` at a time, through ``finish``."""
    for row in range(0, image.shape[0], STRIP_ROWS):
        yield finish(image.read(row, min(row + STRIP_ROWS, image.shape[0]), 0, image.shape[1]))


# ---------------------------------------------------------------- one file


def zoom(raw: str,
         net: SDAN,
         output: str,
         ref: Optional[str] = None,
         tile: Optional[int] = None,
         bits: int = 8,
         device: str = 'cpu',
         precision: str = 'fp32',
         match_color: bool = True,
         save_offsets: bool = False,
         offset_scale: Optional[float] = None,
         max_memory: Optional[int] = None,
         spill: Optional[bool] = None,
         progress: bool = True,
         log: Callable[[str], Any] = print) -> dict:
    """Zoom a RAW file with SDAN and write the upright, white-balanced result with the file's EXIF and an sRGB profile.

    The output goes through a temporary file next to it (``.<stem>.part<ext>``), renamed only once complete; the
    zoomed image is never held in memory: tiles go to an unnamed temporary file in the output's folder, upright,
    then are read back, colour-matched and encoded by strips.

    Args:
        raw (str): RAW file (see :func:`read_inputs`).
        net (SDAN): The network (:func:`build_network`).
        output (str): ``.png``, ``.tif`` or ``.tiff`` file.
        ref (str | None): Camera JPEG of the shot, the colour reference. Default: None (LibRaw's rendering of the
            RAW with its own colour matrix and white balance).
        tile (int | None): Tile side in input pixels, 0 = untiled. Default: None (on a CPU the largest tile within
            ``max_memory``, :func:`~sdan_basicsr.utils.zoom_memory.plan`; 512 on a GPU).
        bits (int): 8 or 16 bits per channel. Default: 8.
        device (str): ``cpu`` or ``cuda``. Default: ``cpu``.
        precision (str): ``fp32``, ``bf16``, ``fp16`` (autocast, with SDAN's float32 stages) or ``auto``
            (:func:`~sdan_basicsr.utils.precision.auto_precision` of ``device``). On CPU the network runs in
            channels-last memory format and freed memory is kept for reuse
            (:func:`~sdan_basicsr.utils.cpu_memory.retain_freed_memory`). Default: ``fp32``.
        match_color (bool): Give the result the colours of the reference: one global colour transform (3×3 + offset,
            :func:`~sdan_basicsr.data.color.fit_color_transform`) fitted between the output averaged to the
            reference's grid and the reference, applied before the white balance. Default: True.
        save_offsets (bool): Also write ``<output stem>_offsets.png`` (Θ, see :func:`flow_to_color`) and
            ``<output stem>_mask.png`` (M'), upright. Default: False.
        offset_scale (float | None): |Θ| shown at full brightness. Default: None (the largest |Θ|).
        max_memory (int | None): Bytes the zoom may take, for the tile's choice. Default: None
            (:func:`~sdan_basicsr.utils.zoom_memory.default_budget`).
        spill (bool | None): Keep CPA2's input in a temporary file rather than in memory (``tiled_forward``'s
            ``spill_dir``). Default: None (as the memory plan decides; in memory with a given tile).
        progress (bool): tqdm bar over the tiles. Default: True.
        log (callable): Receives the line that states the tile and the expected peak. Default: ``print``.

    Returns:
        dict: ``seconds``, ``peak_rss_gib`` (the process's so far), ``size`` (upright output h, w), ``tile``,
        ``spill``, ``expected_peak_gib`` (on a CPU; else None), ``flip``, ``offset_scale``
        (or None), ``precision`` (the one that ran), ``color_transform`` ((3, 4) list, or None) and ``outputs``.
    """
    start = time.time()
    if bits not in (8, 16):
        raise ZoomError(f'bits must be 8 or 16, got {bits}')
    if osp.splitext(output)[1].lower() not in OUTPUT_EXTENSIONS:
        raise ZoomError(f'output {output} must end in one of {OUTPUT_EXTENSIONS}')
    if tile is not None and tile < 0:
        raise ZoomError(f'tile must be 0 (untiled) or positive, got {tile}')
    if precision == 'auto':
        precision = auto_precision(device)
    if precision not in PRECISIONS:
        raise ZoomError(f'precision must be auto or one of {sorted(PRECISIONS)}, got {precision!r}')
    on_cpu = torch.device(device).type == 'cpu'
    if on_cpu:
        retain_freed_memory()
        zoom_memory.process_base()  # measured before this zoom allocates anything
    if tile and net.align.offsets != 'squared':
        raise ZoomError('the network has per-tap offsets, which tiling does not support: use --tile 0')
    outputs = [output] + (list(_side_paths(output)) if save_offsets else [])
    temps = [_temp_path(p) for p in outputs]
    folder = osp.dirname(osp.abspath(output))
    try:
        with outside_heap():  # the whole image's arrays, and LibRaw's, are no part of the tiles' kept heap
            x, x_rgb, wb, flip, exif, noise = read_inputs(raw, net.in_format, ref, net.noise_input, log)
        h, w = x.shape[2:]
        tiles = lambda t: f'tile {t} ({"x".join(map(str, tile_shape((h, w), t)))} tiles)' if t else 'untiled'  # noqa
        expected = None
        if tile is None and on_cpu:
            budget = zoom_memory.default_budget() if max_memory is None else max_memory
            tile, planned_spill, expected = zoom_memory.plan(net, (h, w), precision, budget, save_offsets)
            if not tile:
                raise ZoomError(f'zooming {raw} ({w}x{h}) needs about {expected / 2**30:.1f} GiB even in the '
                                f'smallest tile, more than the {budget / 2**30:.1f} GiB of --max-memory')
            spill = planned_spill if spill is None else spill
            log(f'{raw}: {tiles(tile)}, expected peak {expected / 2**30:.2f} GiB of {budget / 2**30:.2f} GiB'
                + (" (CPA2's input on disk)" if spill else ''))
        elif on_cpu:
            expected = zoom_memory.expected_peak(net, (h, w), tile, precision, bool(spill), save_offsets)
            log(f'{raw}: {tiles(tile)}, expected peak {expected / 2**30:.2f} GiB')
        elif tile is None:
            tile = 512
        spill = bool(spill) and bool(tile)
        s = net.upscale
        stored = (s * h, s * w)
        upright = stored[::-1] if flip & 4 else stored
        top, dtype = 2**bits - 1, np.dtype(np.uint8 if bits == 8 else np.uint16)
        reference = x_rgb[0].permute(1, 2, 0).numpy()  # the colour target, on the network's input grid
        averaged = mapped_empty(x_rgb, *reference.shape).numpy() if match_color else None
        net = net.to(device, memory_format=torch.channels_last if on_cpu else torch.preserve_format)
        x, x_rgb, wb_t = x.to(device), x_rgb.to(device), torch.from_numpy(wb).to(device).view(1, 4)
        noise = None if noise is None else noise.to(device)
        # float16 keeps 11 bits: enough for an 8-bit result whose colours are matched later
        spill_dtype = (np.float16 if bits == 8 else np.float32) if match_color else dtype
        with DiskArray((*upright, 3), spill_dtype, folder) as image:

            def paste(row: int, col: int, sr: torch.Tensor) -> None:
                sr = sr.float()
                if match_color:
                    low = F.avg_pool2d(sr, s)[0].permute(1, 2, 0).cpu().numpy()
                    averaged[row // s:row // s + low.shape[0], col // s:col // s + low.shape[1]] = low
                else:
                    sr = apply_white_balance(sr, wb_t).mul_(top).round_()
                tile_img = sr[0].permute(1, 2, 0).cpu().numpy()
                box = (row, row + tile_img.shape[0], col, col + tile_img.shape[1])
                y0, _, x0, _ = raw_utils.orient_box(box, stored, flip)
                image.write(y0, x0, raw_utils.orient(tile_img, flip))

            with autocast(device, precision):
                if tile:
                    result = tiled_forward(net, x, x_rgb, tile, progress=progress, sr_sink=paste,
                                           keep=('mask', 'offset') if save_offsets else (),
                                           spill_dir=folder if spill else None, tail_rows=zoom_memory.TAIL_ROWS,
                                           trim_above=expected, noise=noise)  # trim: on a CPU, past the peak
                else:
                    with torch.no_grad():
                        result = net(x, x_rgb, noise)
                    paste(0, 0, result.sr)
                    result = result._replace(sr=None)
            del x, x_rgb
            transform = finish = None
            if match_color:
                with outside_heap():  # the fit's copies of the whole image
                    transform = fit_color_transform(averaged, reference)
                del averaged, reference
                gains = raw_utils.display_gains(wb)

                def finish(block: np.ndarray) -> np.ndarray:
                    strip = apply_color_transform(block.astype(np.float32), transform)
                    return np.round(np.clip(strip * gains, 0, 1) * top).astype(dtype)

            write_image(temps[0], _strips(image, finish or (lambda block: block)), *upright, bits, STRIP_ROWS,
                        output_exif(exif, upright), srgb_profile())
        os.replace(temps[0], output)
        scale = None
        if save_offsets:
            flow, scale = flow_to_color(raw_utils.orient_offsets(result.offset[0, :2].cpu().numpy(), flip),
                                        offset_scale)
            _write(temps[1], outputs[1], flow)
            _write(temps[2], outputs[2], raw_utils.orient((result.mask[0, 0].cpu().numpy() * 255).astype(np.uint8),
                                                          flip))
    finally:
        for tmp in temps:
            if osp.exists(tmp):
                os.remove(tmp)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return dict(seconds=time.time() - start, peak_rss_gib=peak, size=upright, tile=tile, spill=spill,
                expected_peak_gib=None if expected is None else expected / 2**30, flip=flip, offset_scale=scale,
                precision=precision, color_transform=None if transform is None else transform.tolist(),
                outputs=outputs)


# ---------------------------------------------------------------- many files


class Job(NamedTuple):
    """One RAW file of the command line and the output it gets."""
    raw: str
    output: str


def _is_file_path(output: str) -> bool:
    """``-o`` names a file (it has an extension and is no folder), not a folder."""
    return not osp.isdir(output) and not output.endswith(os.sep) and bool(osp.splitext(output)[1])


def list_jobs(inputs: List[str], output: Optional[str], ext: str, scale: int
              ) -> Tuple[List[Job], List[Tuple[str, str]]]:
    """The RAW files of the command line and their outputs, and the inputs that give none with the reason.

    A folder contributes its files with a RAW extension (:data:`RAW_EXTENSIONS`, any case, not hidden, sorted); a file
    is taken whatever its name. Outputs: ``-o`` itself for one RAW file and an ``-o`` with an image extension;
    otherwise ``<stem>_x<scale><ext>`` in the ``-o`` folder, or next to each RAW file without ``-o``.

    Args:
        inputs (list[str]): Files and folders.
        output (str | None): ``-o``.
        ext (str): Extension of the outputs named here.
        scale (int): The network's scale.

    Returns:
        tuple: The jobs, and (input, reason) of the inputs without one.
    """
    raws, problems = [], []
    for path in inputs:
        if osp.isdir(path):
            found = sorted(osp.join(path, f) for f in os.listdir(path) if not f.startswith('.')
                           and osp.splitext(f)[1].lower() in RAW_EXTENSIONS and osp.isfile(osp.join(path, f)))
            raws += found
            if not found:
                problems.append((path, f'no RAW file in folder {path}'))
        elif osp.isfile(path):
            raws.append(path)
        else:
            problems.append((path, f'no such file or folder: {path}'))
    if output is not None and _is_file_path(output):
        if len(inputs) != 1 or not osp.isfile(inputs[0]):
            raise ZoomError(f'-o {output} is a file: it takes one RAW file (give a folder for several)')
        if osp.splitext(output)[1].lower() not in OUTPUT_EXTENSIONS:
            raise ZoomError(f'output {output} must end in one of {OUTPUT_EXTENSIONS}')
        return [Job(raws[0], output)], problems
    jobs, seen = [], {}
    for path in raws:
        name = f'{osp.splitext(osp.basename(path))[0]}_x{scale}{ext}'
        job = Job(path, osp.join(output if output is not None else osp.dirname(path), name))
        if job.output in seen:
            problems.append((path, f'{path} would be written to {job.output}, as {seen[job.output]}'))
        else:
            seen[job.output] = path
            jobs.append(job)
    return jobs, problems


def _reason(err: BaseException, raw: str) -> str:
    """One line saying why ``raw`` failed, naming it."""
    message = str(err) if isinstance(err, (ZoomError, OSError)) else f'{type(err).__name__}: {err}'
    message = ' '.join(message.split())
    return message if raw in message else f'{raw}: {message}'


def _size(text: str) -> int:
    """``--max-memory``'s bytes (:func:`~sdan_basicsr.utils.zoom_memory.parse_size`)."""
    try:
        return zoom_memory.parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='sdan-zoom', description=__doc__.split('\n')[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('inputs', nargs='+', metavar='RAW',
                        help='RAW files (ARW, NEF, CR2, CR3, DNG, RAF, RW2, ORF, ...: any 2x2 Bayer mosaic LibRaw '
                        'reads) or folders of them')
    parser.add_argument('--weights', default=None,
                        help='net_g_*.pth saved by sdan_basicsr/train.py (default: the shipped SDAN, '
                        'sdan_basicsr/weights/sdan_x4_bayer.pth)')
    parser.add_argument('--opt', help='options YAML whose network_g describes the network (default: inferred '
                        'from the weights)')
    parser.add_argument('--param-key', help='checkpoint key (default: params_ema if present, else params)')
    parser.add_argument('-o', '--output', help='output file (one RAW file) or folder; default: next to each RAW '
                        'file. Files made here are named <stem>_x4.png (or .tif)')
    parser.add_argument('--bits', type=int, choices=(8, 16), default=8, help='bits per channel (default: 8)')
    parser.add_argument('--format', choices=sorted(FORMATS), help='format of the outputs named here (default: png '
                        'at 8 bits, tif at 16)')
    parser.add_argument('--overwrite', action='store_true', help='zoom again where the output exists (default: '
                        'skip it, so that an interrupted batch resumes)')
    parser.add_argument('--ref', help='camera JPEG of the same shot as the colour reference, with one RAW file '
                        "(default: LibRaw's rendering of the RAW with its own colour matrix and white balance)")
    parser.add_argument('--match-color', action=argparse.BooleanOptionalAction, default=True,
                        help="give the result the reference's colours by one global 3x3 + offset transform "
                        "(default: on); --no-match-color keeps the network's own colours")
    parser.add_argument('--max-memory', type=_size, metavar='SIZE',
                        help='memory the zoom may take on a CPU, e.g. 6G: the tile is the largest whose expected '
                        f'peak fits (default: {zoom_memory.DEFAULT_SHARE * 100:.0f}%% of the memory available at '
                        'start)')
    parser.add_argument('--tile', type=int, help='largest tile side in input pixels (the tiles are made as equal as '
                        "CPA's 8x8 blocks allow), 0 = untiled (default: chosen by --max-memory on a CPU, 512 on a GPU)")
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--precision', default='auto', choices=('auto', *PRECISIONS),
                        help='auto: bf16 on a CPU with native bf16 or a CUDA GPU that has it, fp16 on other GPUs, '
                        'else fp32 (default: auto)')
    parser.add_argument('--save-offsets', action='store_true',
                        help='also write <output>_offsets.png (hue = direction, value = |offset|) and '
                        '<output>_mask.png')
    parser.add_argument('--offset-scale', type=float, help='|offset| in input pixels shown at full value '
                        '(default: the largest)')
    parser.add_argument('--no-progress', dest='progress', action='store_false', help='no progress bars')
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.tile is not None and args.tile < 0:
        parser.error(f'--tile must be 0 (untiled) or positive, got {args.tile}')
    ext = FORMATS[args.format or DEFAULT_FORMAT[args.bits]]
    try:
        net = load_network(args)
        jobs, failed = list_jobs(args.inputs, args.output, ext, net.upscale)
        if args.ref is not None and len(jobs) + len(failed) > 1:
            raise ZoomError('--ref is the camera JPEG of one shot: give one RAW file with it')
        if args.output is not None and not _is_file_path(args.output):
            os.makedirs(args.output, exist_ok=True)
    except (ZoomError, OSError) as err:
        parser.exit(2, f'sdan-zoom: error: {err}\n')
    if args.device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    precision = auto_precision(args.device) if args.precision == 'auto' else args.precision
    print(f'precision: {precision}' + (' (auto)' if args.precision == 'auto' else ''), flush=True)
    budget = args.max_memory
    if args.device == 'cpu' and args.tile is None:
        budget = budget or zoom_memory.default_budget()
        print(f'memory: at most {budget / 2**30:.2f} GiB' + ('' if args.max_memory else
              f' ({zoom_memory.DEFAULT_SHARE:.0%} of the {zoom_memory.available_memory() / 2**30:.2f} GiB available)'),
              flush=True)
    for path, reason in failed:
        print(f'sdan-zoom: {reason}', file=sys.stderr, flush=True)
    done = skipped = 0
    bar = tqdm(jobs, unit='file', disable=len(jobs) < 2 or not args.progress)
    for job in bar:
        if osp.exists(job.output) and not args.overwrite:
            tqdm.write(f'{job.raw}: skipped, {job.output} exists (--overwrite zooms it again)')
            skipped += 1
            continue
        try:
            info = zoom(job.raw, net, job.output, ref=args.ref, tile=args.tile, bits=args.bits, device=args.device,
                        precision=precision, match_color=args.match_color, save_offsets=args.save_offsets,
                        offset_scale=args.offset_scale, max_memory=budget, progress=args.progress, log=tqdm.write)
        except Exception as err:  # one file that cannot be zoomed must not stop the others: it is named and skipped
            failed.append((job.raw, _reason(err, job.raw)))
            tqdm.write(f'sdan-zoom: {failed[-1][1]}', file=sys.stderr)
            continue
        done += 1
        h, w = info['size']
        line = (f'{job.raw} -> {job.output} ({w}x{h}, {args.bits} bit) in {info["seconds"]:.1f} s, '
                f'peak memory {info["peak_rss_gib"]:.2f} GiB (ru_maxrss)')
        if args.device == 'cuda':
            line += f', {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB on the GPU'
        tqdm.write(line)
        if info['color_transform'] is not None:
            rows = '; '.join(' '.join(f'{v:+.3f}' for v in r) for r in info['color_transform'])
            tqdm.write(f'colours matched to {args.ref or "LibRaw" + chr(39) + "s rendering"}: [M | b] = {rows}')
        if args.save_offsets:
            tqdm.write(f'offsets: {info["outputs"][1]} (hue = direction, full value = {info["offset_scale"]:.3g} '
                       f'input px), mask: {info["outputs"][2]}')
    summary = f'sdan-zoom: {done} zoomed, {skipped} skipped (output exists), {len(failed)} failed'
    print(summary + (': ' + ', '.join(path for path, _ in failed) if failed else ''), flush=True)
    if failed:
        sys.exit(1)


if __name__ == '__main__':
    main()
