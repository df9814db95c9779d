"""Reading and writing SR-RAW files: RAW mosaics through rawpy, EXIF, ``tform.txt`` and ``wb.txt``.

Every mosaic leaves this module black/white-level normalised and in RGGB phase; packing order is
(0,0), (0,1), (1,1), (1,0) → R, Gr, B, Gb, as in the public SR-RAW loaders. Images stay as the sensor stored
them; :func:`orient` turns them upright with the file's orientation (LibRaw's ``flip``).
"""
import datetime
import functools
import os
import os.path as osp
from fractions import Fraction
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import rawpy
import tifffile
import torch
from PIL import ExifTags, Image, TiffImagePlugin

#: Black and white level of the Sony ARW files of SR-RAW (what the public loaders hard-code).
SONY_BLACK_LEVEL = 512
SONY_WHITE_LEVEL = 16383
#: Gamma of the camera JPEGs: white-balance gains act on linear values, a JPEG holds ``linear ** (1 / JPEG_GAMMA)``.
JPEG_GAMMA = 2.2

#: Positions inside a 2×2 RGGB block, in packing order: R, Gr, B, Gb; and the colour (0 R, 1 G, 2 B) of each.
PACK_ORDER = ((0, 0), (0, 1), (1, 1), (1, 0))
PACK_COLORS = (0, 1, 2, 1)

#: (row, column) to crop from the top-left so that a mosaic of this pattern starts with R.
CFA_OFFSETS = {'RGGB': (0, 0), 'GRBG': (0, 1), 'GBRG': (1, 0), 'BGGR': (1, 1)}

#: EXIF tags.
FOCAL_LENGTH_TAG = 37386
ORIENTATION_TAG = 274
EXIF_IFD_TAG = 0x8769
#: DNG NoiseProfile: [S, O] per colour plane (or one pair for all), variance = S · x + O of the normalised signal x.
NOISE_PROFILE_TAG = 51041
GPS_IFD_TAG = 0x8825
#: EXIF tags of a RAW file that describe the photograph (camera, lens, exposure, date, author), kept by
#: :func:`read_photo_exif`: IFD0's and the Exif IFD's. Maker notes, thumbnails and the RAW's own image
#: structure are left out.
PHOTO_IFD0_TAGS = (270, 271, 272, 306, 315, 33432)  # description, make, model, date, artist, copyright
PHOTO_EXIF_TAGS = (33434, 33437, 34850, 34855, 34864, 34866, 36864, 36867, 36868, 36880, 36881, 36882, 37377, 37378,
                   37379, 37380, 37381, 37382, 37383, 37384, 37385, 37386, 37520, 37521, 37522, 41986, 41987, 41989,
                   41990, 42032, 42033, 42034, 42035, 42036, 42037)
#: Headers of TIFF-structured RAW formats whose magic number is not TIFF's: Olympus ORF, Panasonic RW2.
TIFF_LIKE_HEADERS = {b'IIRO': b'II*\x00', b'IIRS': b'II*\x00', b'MMOR': b'MM\x00*', b'IIU\x00': b'II*\x00'}
#: (offset, leading bytes, what the file is) of files that LibRaw refuses, for the message.
FILE_SIGNATURES = ((0, b'\xff\xd8\xff', 'a JPEG image, not a camera RAW'),
                   (0, b'\x89PNG', 'a PNG image, not a camera RAW'),
                   (0, b'GIF8', 'a GIF image, not a camera RAW'),
                   (4, b'ftypheic', 'a HEIC image, not a camera RAW'),
                   (4, b'ftypheix', 'a HEIC image, not a camera RAW'),
                   (4, b'ftypmif1', 'a HEIF image, not a camera RAW'),
                   (4, b'ftypavif', 'an AVIF image, not a camera RAW'),
                   (8, b'WEBP', 'a WebP image, not a camera RAW'),
                   (0, b'FOVb', 'a Sigma Foveon X3F file, which LibRaw does not read'))
#: LibRaw's ``flip`` (``RawPy.sizes.flip``) of each TIFF/EXIF Orientation (dcraw's ``"50132467"[orientation]``).
FLIP_OF_ORIENTATION = {1: 0, 2: 1, 3: 3, 4: 2, 5: 4, 6: 6, 7: 7, 8: 5}

Array = Union[np.ndarray, torch.Tensor]


class RawReadError(OSError):
    """A file that rawpy (LibRaw) cannot read, or that is not a Bayer RAW; the message names the file."""


def cfa_pattern(raw: 'rawpy.RawPy') -> str:
    """Name the 2×2 colour filter pattern of an opened RAW file, e.g. ``'RGGB'``.

    Args:
        raw (rawpy.RawPy): An opened file.

    Returns:
        str: Four letters, row-major over the top-left 2×2 block of the visible image.

    Raises:
        ValueError: The file is not an RGB Bayer mosaic; the message says what it is (demosaiced already,
            monochrome, X-Trans, another filter).
    """
    if raw.raw_type != rawpy.RawType.Flat:
        raise ValueError(f'already demosaiced ({raw.num_colors} colours per pixel: a linear DNG, an sRAW or a '
                         'Foveon file), not a Bayer mosaic')
    pattern = raw.raw_pattern
    if raw.num_colors < 3 or pattern is None or pattern.size == 1:
        raise ValueError('monochrome (no colour filter array), not a Bayer mosaic')
    if pattern.shape == (6, 6):
        raise ValueError('X-Trans colour filter (6x6), not a 2x2 Bayer mosaic')
    if pattern.shape != (2, 2):
        raise ValueError(f'{pattern.shape[0]}x{pattern.shape[1]} colour filter, not a 2x2 Bayer mosaic')
    desc = raw.color_desc.decode()
    letters = ''.join(desc[int(c)] for c in pattern.flatten())
    if letters not in CFA_OFFSETS:
        raise ValueError(f'{letters} colour filter, not an RGB Bayer mosaic ({", ".join(CFA_OFFSETS)})')
    return letters


def open_raw(path: str) -> 'rawpy.RawPy':
    """Open and unpack a RAW file with rawpy; a file LibRaw refuses or cannot read (truncated, say) raises
    :class:`RawReadError` saying what it is.

    Args:
        path (str): The file.

    Returns:
        rawpy.RawPy: The opened file (a context manager).
    """
    raw = None
    try:
        raw = rawpy.imread(path)
        raw.unpack()
        return raw
    except (rawpy.LibRawError, OSError) as err:
        if raw is not None:
            raw.close()
        reason = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else str(err)
        try:
            with open(path, 'rb') as f:
                head = f.read(16)
        except OSError:
            head = b''
        what = next((name for at, magic, name in FILE_SIGNATURES if head[at:at + len(magic)] == magic), reason)
        raise RawReadError(f'cannot read RAW file {path}: {what}') from err


def to_rggb(mosaic: np.ndarray, pattern: str) -> np.ndarray:
    """Bring a Bayer mosaic of any of the four patterns to RGGB phase with even sides.

    One leading row and/or column is cropped (see :data:`CFA_OFFSETS`), then the sides are cut to even.

    Args:
        mosaic (ndarray): (H, W) mosaic.
        pattern (str): Its pattern, one of ``CFA_OFFSETS``; ``'RGBG'``-style letters (two greens named G).

    Returns:
        ndarray: (H', W') RGGB mosaic, H' and W' even.
    """
    if pattern not in CFA_OFFSETS:
        raise ValueError(f'unsupported CFA pattern {pattern!r}, expected one of {sorted(CFA_OFFSETS)}')
    dy, dx = CFA_OFFSETS[pattern]
    h, w = mosaic.shape[0] - dy, mosaic.shape[1] - dx
    return mosaic[dy:dy + h - h % 2, dx:dx + w - w % 2]


def read_raw(path: str,
             black_level: Optional[float] = None,
             white_level: Optional[float] = None,
             clip: bool = True) -> np.ndarray:
    """Read a RAW file as a normalised RGGB mosaic.

    ``(x - black) / (white - black)`` with the file's per-channel black levels (indexed by colour
    index, as rawpy gives them) and white level, unless fixed values are given.

    Args:
        path (str): RAW file (any format LibRaw reads; the extension is not trusted).
        black_level (float | None): Fixed black level. Default: None (from the file).
        white_level (float | None): Fixed white level. Default: None (from the file).
        clip (bool): Clip the result to [0, 1]. Default: True.

    Returns:
        ndarray: (H, W) float32 mosaic in RGGB phase, H and W even.

    Raises:
        RawReadError: The file cannot be read or is not a Bayer RAW.
    """
    with open_raw(path) as raw:
        return read_mosaic(raw, path, black_level, white_level, clip)


def read_mosaic(raw: 'rawpy.RawPy',
                path: str,
                black_level: Optional[float] = None,
                white_level: Optional[float] = None,
                clip: bool = True) -> np.ndarray:
    """:func:`read_raw` of an opened file (``path`` names it in messages)."""
    try:
        pattern = cfa_pattern(raw)
    except ValueError as err:
        raise RawReadError(f'unsupported RAW file {path}: {err}') from err
    try:
        mosaic = raw.raw_image_visible.astype(np.float32)
        if black_level is None:
            black = np.asarray(raw.black_level_per_channel, dtype=np.float32)[raw.raw_colors_visible]
        else:
            black = np.float32(black_level)
        white = np.float32(raw.white_level if white_level is None else white_level)
    except (rawpy.LibRawError, OSError) as err:
        raise RawReadError(f'cannot read RAW file {path}: {err}') from err
    mosaic -= black
    mosaic /= white - black
    if clip:
        np.clip(mosaic, 0, 1, out=mosaic)
    return to_rggb(mosaic, pattern)


def raw_size(path: str) -> Tuple[int, int]:
    """(height, width) of the RGGB mosaic :func:`read_raw` returns, read from the header only.

    Args:
        path (str): RAW file.

    Returns:
        tuple[int, int]: Height and width, both even.
    """
    with open_raw(path) as raw:
        try:
            dy, dx = CFA_OFFSETS[cfa_pattern(raw)]
        except ValueError as err:
            raise RawReadError(f'unsupported RAW file {path}: {err}') from err
        h, w = raw.sizes.height - dy, raw.sizes.width - dx
    return h - h % 2, w - w % 2


def pack_bayer(mosaic: Array) -> Array:
    """Pack an RGGB mosaic into 4 half-resolution planes R, Gr, B, Gb.

    Args:
        mosaic (ndarray | Tensor): (..., H, W) mosaic, H and W even.

    Returns:
        ndarray | Tensor: (..., 4, H/2, W/2).
    """
    planes = [mosaic[..., dy::2, dx::2] for dy, dx in PACK_ORDER]
    if isinstance(mosaic, torch.Tensor):
        return torch.stack(planes, dim=-3)
    return np.stack(planes, axis=-3)


def unpack_bayer(packed: Array) -> Array:
    """Inverse of :func:`pack_bayer`.

    Args:
        packed (ndarray | Tensor): (..., 4, h, w) planes R, Gr, B, Gb.

    Returns:
        ndarray | Tensor: (..., 2h, 2w) RGGB mosaic.
    """
    *lead, _, h, w = packed.shape
    if isinstance(packed, torch.Tensor):
        mosaic = packed.new_zeros((*lead, 2 * h, 2 * w))
    else:
        mosaic = np.zeros((*lead, 2 * h, 2 * w), dtype=packed.dtype)
    for i, (dy, dx) in enumerate(PACK_ORDER):
        mosaic[..., dy::2, dx::2] = packed[..., i, :, :]
    return mosaic


def _exif(path: str) -> Image.Exif:
    try:
        with Image.open(path) as img:
            return img.getexif()
    except OSError as err:
        raise OSError(f'cannot read EXIF of {path}: {err}') from err


def read_focal_length(path: str) -> float:
    """Focal length in mm from a JPG's EXIF FocalLength (tag 37386).

    Args:
        path (str): JPG file (a RAW path is mapped to its ``.JPG`` twin).

    Returns:
        float: Focal length.
    """
    stem, ext = osp.splitext(path)
    if ext.lower() != '.jpg':
        path = stem + '.JPG'
    exif = _exif(path)
    focal = exif.get_ifd(EXIF_IFD_TAG).get(FOCAL_LENGTH_TAG, exif.get(FOCAL_LENGTH_TAG))
    if focal is None:
        raise ValueError(f'no EXIF FocalLength in {path}')
    return float(focal)


def read_orientation(path: str) -> int:
    """EXIF Orientation (tag 274) of a JPG, 1 when absent.

    Args:
        path (str): JPG file.

    Returns:
        int: Orientation (3 means rotated by 180°).
    """
    return int(_exif(path).get(ORIENTATION_TAG, 1))


def read_tform(path: str) -> Tuple[Dict[str, np.ndarray], Optional[Tuple[int, int, int, int]]]:
    """Read a ``tform.txt``: blocks ``00001-0000k:`` + 2×3 affine, then ``corner:`` + min_h max_h min_w max_w.

    Each affine maps pixel coordinates of ``00001`` to those of shot ``k`` (both in ``00001``'s
    field of view and size), as ``cv2.findTransformECC`` returns them.

    Args:
        path (str): The file.

    Returns:
        tuple: ``{'0000k': (2, 3) float64 ndarray}`` and the corner (min_h, max_h, min_w, max_w) or None.
    """
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    tforms, corner, i = {}, None, 0
    try:
        while i < len(lines):
            key = lines[i].rstrip(':')
            if key == 'corner':
                corner = tuple(int(float(v)) for v in lines[i + 1].split())
                i += 2
            else:
                rows = [[float(v) for v in lines[i + r].split()] for r in (1, 2)]
                tforms[key.split('-')[-1]] = np.array(rows, dtype=np.float64).reshape(2, 3)
                i += 3
    except (IndexError, ValueError) as err:
        raise ValueError(f'malformed tform file {path}: {err}') from err
    return tforms, corner


def write_tform(path: str, tforms: Dict[str, np.ndarray], corner: Sequence[int]) -> None:
    """Write a ``tform.txt`` in the public format (see :func:`read_tform`).

    Args:
        path (str): Output file.
        tforms (dict[str, ndarray]): ``{'0000k': (2, 3) affine}``.
        corner (Sequence[int]): min_h, max_h, min_w, max_w.
    """
    with open(path, 'w') as f:
        for key in sorted(tforms):
            f.write(f'00001-{key}:\n')
            np.savetxt(f, np.asarray(tforms[key]).reshape(2, 3), fmt='%.6f')
        f.write('corner:\n')
        f.write('%05d %05d %05d %05d\n' % tuple(int(c) for c in corner))


def read_wb(path: str) -> Dict[str, np.ndarray]:
    """Read a ``wb.txt``: line ``WB``, then ``<path without extension>:`` + 4 gains [R, G, G, B].

    Args:
        path (str): The file.

    Returns:
        dict[str, ndarray]: ``{'0000k': (4,) float32 gains}``, keyed by the file's stem.
    """
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    if not lines or lines[0] != 'WB':
        raise ValueError(f'malformed wb file {path}: first line must be "WB"')
    gains = {}
    try:
        for i in range(1, len(lines), 2):
            key = osp.basename(lines[i].rstrip(':'))
            gains[key] = np.array([float(v) for v in lines[i + 1].split()], dtype=np.float32).reshape(4)
    except (IndexError, ValueError) as err:
        raise ValueError(f'malformed wb file {path}: {err}') from err
    return gains


def write_wb(path: str, gains: Dict[str, Sequence[float]]) -> None:
    """Write a ``wb.txt`` in the public format (see :func:`read_wb`).

    Args:
        path (str): Output file.
        gains (dict[str, Sequence[float]]): ``{'<path without extension>': [R, G, G, B]}``.
    """
    with open(path, 'w') as f:
        f.write('WB\n')
        for key in sorted(gains):
            f.write(f'{key}:\n')
            f.write(' '.join('%.6f' % g for g in gains[key]) + '\n')


def camera_wb(path: str) -> np.ndarray:
    """White-balance gains of a RAW file as the public ``wb.txt`` holds them.

    Channel means of the LibRaw render with the camera's white balance divided by those of the
    render without white balance (both linear, in camera colour space).

    Args:
        path (str): RAW file.

    Returns:
        ndarray: (4,) float32 gains [R, G, G, B].
    """
    with open_raw(path) as raw:
        return raw_white_balance(raw, path)


def raw_white_balance(raw: 'rawpy.RawPy', path: str) -> np.ndarray:
    """:func:`camera_wb` of an opened file (``path`` names it in messages)."""
    kwargs = dict(half_size=True, output_color=rawpy.ColorSpace.raw, gamma=(1, 1), no_auto_bright=True,
                  output_bps=16)
    try:
        with_wb = raw.postprocess(use_camera_wb=True, **kwargs).reshape(-1, 3).astype(np.float64).mean(0)
        without = raw.postprocess(user_wb=[1, 1, 1, 1], **kwargs).reshape(-1, 3).astype(np.float64).mean(0)
    except (rawpy.LibRawError, OSError) as err:
        raise RawReadError(f'cannot read RAW file {path}: {err}') from err
    r, g, b = with_wb / np.maximum(without, 1e-8)
    return np.array([r, g, g, b], dtype=np.float32)


def render_srgb(raw: 'rawpy.RawPy', path: str) -> np.ndarray:
    """LibRaw's rendering of an opened Bayer file with its own colour matrix and white balance, as stored.

    Camera white balance, the file's camera → sRGB matrix (from its colour matrix), gamma :data:`JPEG_GAMMA`
    (``x ** (1 / 2.2)``, the convention of the camera JPEGs), no automatic brightening, the orientation not
    applied (``user_flip=0``), cropped to the grid of :func:`read_mosaic` (RGGB phase, even sides).

    Args:
        raw (rawpy.RawPy): The opened file.
        path (str): Its path, for messages.

    Returns:
        ndarray: (H, W, 3) uint16 sRGB.
    """
    try:
        rgb = raw.postprocess(use_camera_wb=True, output_color=rawpy.ColorSpace.sRGB, gamma=(JPEG_GAMMA, 0),
                              no_auto_bright=True, adjust_maximum_thr=0.0, output_bps=16, user_flip=0)
    except (rawpy.LibRawError, OSError) as err:
        raise RawReadError(f'cannot render RAW file {path}: {err}') from err
    try:  # after the full-size rendering: a half-size one (raw_white_balance's) leaves LibRaw without its pattern
        dy, dx = CFA_OFFSETS[cfa_pattern(raw)]
    except ValueError as err:
        raise RawReadError(f'unsupported RAW file {path}: {err}') from err
    h, w = raw.sizes.height - dy, raw.sizes.width - dx
    h, w = h - h % 2, w - w % 2
    if rgb.shape[:2] != (raw.sizes.height, raw.sizes.width):
        raise RawReadError(f'LibRaw renders {path} at {rgb.shape[1]}x{rgb.shape[0]}, not at its mosaic\'s '
                           f'{raw.sizes.width}x{raw.sizes.height}')
    return rgb[dy:dy + h, dx:dx + w]


# ---------------------------------------------------------------- orientation


def orient(img: Array, flip: int) -> Array:
    """``img`` (H, W, ...) turned upright by LibRaw's ``flip`` (``RawPy.sizes.flip``), as LibRaw's own output is.

    dcraw's convention: bit 2 reverses the rows, bit 1 the columns, then bit 4 transposes. EXIF Orientation
    1-8 is flip :data:`FLIP_OF_ORIENTATION`: 3 (180°), 6 (90° clockwise), 5 (90° counter-clockwise), ...

    Args:
        img (ndarray | Tensor): Image as stored, rows and columns first.
        flip (int): 0-7.

    Returns:
        ndarray | Tensor: A view of ``img`` (a copy for a tensor), (W, H, ...) when ``flip & 4``.
    """
    if isinstance(img, torch.Tensor):
        dims = [d for bit, d in ((2, 0), (1, 1)) if flip & bit]
        img = img.flip(dims) if dims else img
        return img.transpose(0, 1) if flip & 4 else img
    if flip & 2:
        img = img[::-1]
    if flip & 1:
        img = img[:, ::-1]
    return img.swapaxes(0, 1) if flip & 4 else img


def orient_box(box: Tuple[int, int, int, int], size: Tuple[int, int], flip: int) -> Tuple[int, int, int, int]:
    """Where the box (y0, y1, x0, x1) of an image of ``size`` (H, W) lands in :func:`orient` of it."""
    y0, y1, x0, x1 = box
    h, w = size
    if flip & 2:
        y0, y1 = h - y1, h - y0
    if flip & 1:
        x0, x1 = w - x1, w - x0
    return (x0, x1, y0, y1) if flip & 4 else (y0, y1, x0, x1)


def orient_offsets(offset: np.ndarray, flip: int) -> np.ndarray:
    """An offset field (2, H, W) [dy, dx] turned upright: its grid by :func:`orient`, its vectors alike.

    Returns:
        ndarray: (2, H', W') [dy, dx] in the upright image's axes.
    """
    dy, dx = (orient(c, flip) for c in offset)
    if flip & 2:
        dy = -dy
    if flip & 1:
        dx = -dx
    return np.stack([dx, dy] if flip & 4 else [dy, dx])


# ---------------------------------------------------------------- photograph metadata


def _read_ifd(fp, head: bytes, offset: int, group: Optional[int] = None) -> Dict[int, Any]:
    """The tags of the IFD at ``offset`` of a TIFF-structured file (Pillow's reader), {} where it cannot be read."""
    ifd = TiffImagePlugin.ImageFileDirectory_v2(head, group=group)
    try:
        fp.seek(offset)
        ifd.load(fp)
        return dict(ifd)
    except Exception:  # metadata is kept where it can be read: an odd IFD must not fail the zoom
        return {}


def _tiff_ifd0(fp) -> Tuple[Optional[bytes], Dict[int, Any]]:
    """(TIFF header, IFD0 tags) of a TIFF-structured file open at its start; (None, {}) for other formats."""
    head = fp.read(16)
    head = TIFF_LIKE_HEADERS.get(head[:4], head[:4]) + head[4:]
    if head[:4] not in TiffImagePlugin.PREFIXES:
        return None, {}
    order = 'little' if head[:2] == b'II' else 'big'
    bigtiff = 43 in head[2:4]
    head = head[:16] if bigtiff else head[:8]
    return head, _read_ifd(fp, head, int.from_bytes(head[8:16] if bigtiff else head[4:8], order))


def read_noise_profile(path: str) -> Optional[np.ndarray]:
    """The DNG NoiseProfile of a RAW file: (3, 2) [S, O] of its R, G, B planes, variance = S · x + O of the black-
    and white-level normalised signal x (what :func:`read_raw` gives); None where the file records none (most
    cameras' own formats) or an unusable one."""
    with open(path, 'rb') as fp:
        _, ifd0 = _tiff_ifd0(fp)
    try:
        profile = np.asarray(ifd0.get(NOISE_PROFILE_TAG, ()), dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        return None
    if len(profile) not in (1, 3) or not np.isfinite(profile).all() or (profile < 0).any() or not profile.any():
        return None
    return np.repeat(profile, 3, axis=0) if len(profile) == 1 else profile


#: Flat-block noise estimation (:func:`estimate_noise_profile`): block side in CFA-plane pixels, brightness bins, and
#: the quantile of the blocks' variances taken as a bin's noise (the flattest blocks: texture only adds variance).
NOISE_BLOCK, NOISE_BINS, NOISE_QUANTILE = 8, 12, 0.1


def _flat_block_variances(plane: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(means, noise variances) of the ``NOISE_BLOCK``² blocks of one CFA plane: Immerkær's (1996) Laplacian
    difference, which cancels every linear trend, gives 36 σ² per pixel of white noise."""
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
    residual = cv2.filter2D(plane, -1, kernel, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1] ** 2 / 36
    b = NOISE_BLOCK
    h, w = (residual.shape[0] // b) * b, (residual.shape[1] // b) * b
    blocks = lambda a: a[:h, :w].reshape(h // b, b, w // b, b).mean(axis=(1, 3)).ravel()  # noqa: E731
    return blocks(plane[1:-1, 1:-1]), blocks(residual)


@functools.lru_cache(maxsize=1)
def _quantile_bias() -> float:
    """The ``NOISE_QUANTILE`` of white noise's block variances relative to its mean (fixed seed: deterministic)."""
    noise = np.random.default_rng(0).normal(size=(512, 512)).astype(np.float32)
    return float(np.quantile(_flat_block_variances(noise)[1], NOISE_QUANTILE))


def estimate_noise_profile(mosaic: np.ndarray) -> np.ndarray:
    """A (3, 2) [S, O] noise profile of a normalised RGGB mosaic whose file records none, as
    :func:`read_noise_profile` gives it: per colour, the flattest blocks' noise variance in bins of brightness, and
    the least-squares line variance = S · x + O through them (S, O ≥ 0). It reads texture as noise where a bin has
    no flat block, so it errs high on busy scenes."""
    bias = _quantile_bias()
    profile = np.zeros((3, 2))
    for c, sites in enumerate((((0, 0), ), ((0, 1), (1, 0)), ((1, 1), ))):  # R, G (both sites), B
        stats = [_flat_block_variances(np.ascontiguousarray(mosaic[dy::2, dx::2], dtype=np.float32))
                 for dy, dx in sites]
        means, variances = (np.concatenate(v) for v in zip(*stats))
        keep = (means > 0.002) & (means < 0.9)  # clipped at black or white, a block shows less than its noise
        means, variances = means[keep], variances[keep]
        if len(means) < NOISE_BINS:
            raise ValueError(f'a mosaic of {mosaic.shape[1]}x{mosaic.shape[0]} has too few unclipped blocks to '
                             'estimate its noise')
        edges = np.quantile(means, np.linspace(0, 1, NOISE_BINS + 1))
        index = np.clip(np.searchsorted(edges, means, side='right') - 1, 0, NOISE_BINS - 1)
        x = np.array([means[index == i].mean() for i in range(NOISE_BINS) if (index == i).any()])
        v = np.array([np.quantile(variances[index == i], NOISE_QUANTILE) for i in range(NOISE_BINS)
                      if (index == i).any()]) / bias
        shot, read = np.polyfit(x, v, 1)
        if read < 0:
            shot, read = max(float(x @ v / (x @ x)), 0.), 0.
        elif shot < 0:
            shot, read = 0., float(v.mean())
        profile[c] = shot, read
    return profile


def noise_profile(path: str, mosaic: np.ndarray) -> Tuple[np.ndarray, str]:
    """(the (3, 2) noise profile of a RAW file, where it comes from): its DNG NoiseProfile
    (:func:`read_noise_profile`), else :func:`estimate_noise_profile` of its normalised ``mosaic``."""
    profile = read_noise_profile(path)
    if profile is not None:
        return profile, 'its NoiseProfile'
    return estimate_noise_profile(mosaic), 'estimated from the mosaic'


def site_noise_profile(profile: np.ndarray, gains: Optional[Sequence[float]] = None) -> np.ndarray:
    """(2, 2, 2) [S, O] over the 2×2 RGGB cell (SDAN's ``noise`` input) of a (3, 2) R, G, B profile; with sensor
    ``gains`` [R, G, B] (:func:`apply_sensor_gains`) the profile of the mosaic they multiply: S · g, O · g²."""
    profile = np.asarray(profile, dtype=np.float64)
    g = np.ones(3) if gains is None else np.asarray(gains, dtype=np.float64)
    scaled = np.stack([profile[:, 0] * g, profile[:, 1] * g**2])  # (2, 3): [S, O] × R, G, B
    cell = np.array([[0, 1], [1, 2]])  # RGGB
    return scaled[:, cell].astype(np.float32)


def read_photo_exif(raw: 'rawpy.RawPy', path: str) -> Image.Exif:
    """The photograph's EXIF from a RAW file: camera, lens, exposure, date, author, GPS.

    TIFF-structured RAWs (DNG, ARW, NEF, CR2, PEF, SRW, ORF, RW2, ...) give their IFD0 and Exif IFD tags
    (:data:`PHOTO_IFD0_TAGS`, :data:`PHOTO_EXIF_TAGS`; TIFF/EP files keep the Exif ones in IFD0) and their GPS
    IFD, read with Pillow; other formats (CR3, RAF, ...) get what LibRaw reads of every format: exposure time,
    f-number, ISO, focal length, date taken, lens, artist. The orientation is left out: it is applied to the
    zoomed image.

    Args:
        raw (rawpy.RawPy): The opened file.
        path (str): Its path.

    Returns:
        Image.Exif: IFD0 tags; ``get_ifd(EXIF_IFD_TAG)`` and ``get_ifd(GPS_IFD_TAG)`` hold the Exif and GPS IFDs.
    """
    exif = Image.Exif()
    photo = _libraw_photo_tags(raw)
    gps: Dict[int, Any] = {}
    with open(path, 'rb') as fp:
        head, ifd0 = _tiff_ifd0(fp)
        if head is not None:
            exif.update({tag: v for tag, v in ifd0.items() if tag in PHOTO_IFD0_TAGS})
            photo.update({tag: v for tag, v in ifd0.items() if tag in PHOTO_EXIF_TAGS})
            if isinstance(ifd0.get(EXIF_IFD_TAG), int):
                sub = _read_ifd(fp, head, ifd0[EXIF_IFD_TAG], EXIF_IFD_TAG)
                photo.update({tag: v for tag, v in sub.items() if tag in PHOTO_EXIF_TAGS})
            if isinstance(ifd0.get(GPS_IFD_TAG), int):
                gps = _read_ifd(fp, head, ifd0[GPS_IFD_TAG], GPS_IFD_TAG)
    exif.get_ifd(EXIF_IFD_TAG).update(photo)
    exif.get_ifd(GPS_IFD_TAG).update(gps)
    return exif


def _libraw_photo_tags(raw: 'rawpy.RawPy') -> Dict[int, Any]:
    """Exif IFD tags of what LibRaw reads of any RAW format (its zeros, which stand for unknown, left out)."""
    Base = ExifTags.Base
    other, lens = raw.other, raw.lens
    tags: Dict[int, Any] = {}
    if other.shutter_speed > 0:
        tags[Base.ExposureTime] = TiffImagePlugin.IFDRational(*Fraction(other.shutter_speed).limit_denominator(10**6)
                                                              .as_integer_ratio())
    if other.aperture > 0:
        tags[Base.FNumber] = TiffImagePlugin.IFDRational(round(other.aperture * 10), 10)
    if other.iso_speed > 0:
        tags[Base.ISOSpeedRatings] = int(round(other.iso_speed))
    if other.focal_length > 0:
        tags[Base.FocalLength] = TiffImagePlugin.IFDRational(round(other.focal_length * 10), 10)
    if other.timestamp > datetime.datetime(1970, 1, 2):
        tags[Base.DateTimeOriginal] = other.timestamp.strftime('%Y:%m:%d %H:%M:%S')
    if lens.model:
        tags[Base.LensModel] = lens.model
    if lens.make:
        tags[Base.LensMake] = lens.make
    return tags


def write_dng(path: str,
              mosaic: np.ndarray,
              pattern: str = 'RGGB',
              black_level: Union[int, Sequence[int]] = SONY_BLACK_LEVEL,
              white_level: int = SONY_WHITE_LEVEL,
              as_shot_neutral: Sequence[float] = (1.0, 1.0, 1.0),
              focal_length: Optional[float] = None,
              color_matrix: Optional[Sequence[Sequence[float]]] = None,
              orientation: int = 1,
              noise_profile: Optional[Sequence[float]] = None,
              make: str = 'sdan-basicsr',
              model: str = 'synthetic') -> None:
    """Write a Bayer mosaic as a minimal DNG that LibRaw (rawpy) reads back exactly.

    The name may end in ``.ARW``: LibRaw recognises the content, not the extension.

    Args:
        path (str): Output file.
        mosaic (ndarray): (H, W) uint16 raw counts, H and W at least 22.
        pattern (str): CFA pattern, one of ``CFA_OFFSETS``. Default: 'RGGB'.
        black_level (int | Sequence[int]): One level, or four levels for the 2×2 positions in
            row-major order. Default: 512.
        white_level (int): White level. Default: 16383.
        as_shot_neutral (Sequence[float]): Camera neutral (R, G, B) = 1 / white-balance gains.
            Default: (1, 1, 1).
        focal_length (float | None): EXIF FocalLength in mm. Default: None.
        color_matrix (Sequence[Sequence[float]] | None): ColorMatrix1, the camera's XYZ → camera RGB matrix under
            D65 (3×3), from which LibRaw derives its camera → sRGB matrix. Default: None (identity).
        orientation (int): TIFF/EXIF Orientation (1 upright, 3, 6, 8, …). Default: 1.
        noise_profile (Sequence[float] | None): NoiseProfile [S, O] (one pair for all planes, or three), the
            sensor's noise variance S · x + O of the normalised signal x. Default: None (not recorded).
        make (str): Make. Default: 'sdan-basicsr'.
        model (str): Model (UniqueCameraModel is ``make model``). Default: 'synthetic'.
    """
    mosaic = np.ascontiguousarray(mosaic, dtype=np.uint16)
    if min(mosaic.shape) < 22:
        raise ValueError(f'LibRaw rejects images smaller than 22x22, got {mosaic.shape}')
    colour = {'R': 0, 'G': 1, 'B': 2}
    blacks = [int(black_level)] * 4 if np.isscalar(black_level) else [int(b) for b in black_level]

    def rational(value: float) -> Tuple[int, int]:
        return int(round(value * 1000000)), 1000000

    def srational(value: float) -> Tuple[int, int]:
        return int(round(value * 10000)), 10000

    matrix = np.eye(3) if color_matrix is None else np.asarray(color_matrix, dtype=np.float64)
    if matrix.shape != (3, 3):
        raise ValueError(f'color_matrix must be 3x3, got shape {matrix.shape}')
    matrix_values = [v for x in matrix.flatten() for v in srational(x)]
    neutral = [v for n in as_shot_neutral for v in rational(n)]
    tags = [
        (50706, 'B', 4, (1, 4, 0, 0), True),  # DNGVersion
        (50708, 's', 0, f'{make} {model}', True),  # UniqueCameraModel
        (271, 's', 0, make, True),  # Make
        (272, 's', 0, model, True),  # Model
        (ORIENTATION_TAG, 'H', 1, int(orientation), True),  # Orientation
        (33421, 'H', 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, 'B', 4, tuple(colour[c] for c in pattern), True),  # CFAPattern
        (50713, 'H', 2, (2, 2), True),  # BlackLevelRepeatDim
        (50714, 'H', 4, tuple(blacks), True),  # BlackLevel
        (50717, 'H', 1, int(white_level), True),  # WhiteLevel
        (50721, '2i', 9, tuple(matrix_values), True),  # ColorMatrix1
        (50778, 'H', 1, 21, True),  # CalibrationIlluminant1 (D65)
        (50728, '2I', 3, tuple(neutral), True),  # AsShotNeutral
    ]
    if focal_length is not None:
        tags.append((FOCAL_LENGTH_TAG, '2I', 1, rational(focal_length), True))
    if noise_profile is not None:
        values = tuple(float(v) for v in noise_profile)
        if len(values) not in (2, 6):
            raise ValueError(f'noise_profile must hold [S, O] once or per plane (2 or 6 values), got {len(values)}')
        tags.append((NOISE_PROFILE_TAG, 'd', len(values), values, True))
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tifffile.imwrite(path, mosaic, photometric=32803, subfiletype=0, metadata=None, extratags=tags)


# ---------------------------------------------------------------- SR-RAW scene layout and geometry

#: Optical-zoom pairs (LR shot, HR shot) of SR-RAW: 4X for training, (6 → 2) for evaluation.
TRAIN_PAIRS = ((5, 1), (6, 2), (7, 3))
TEST_PAIRS = ((6, 2), )


def shot_name(index: int) -> str:
    """``00005`` for shot 5."""
    return '%05d' % index


def is_scene_dir(path: str) -> bool:
    """A folder is a scene when it holds ``00001.JPG`` or ``00001.ARW``."""
    return osp.isfile(osp.join(path, '00001.JPG')) or osp.isfile(osp.join(path, '00001.ARW'))


def find_scenes(root: str) -> list:
    """Scene folders at or below ``root`` (a split folder or any parent of one), sorted.

    Args:
        root (str): Folder to search.

    Returns:
        list[str]: Paths of scene folders.
    """
    if is_scene_dir(root):
        return [root]
    scenes = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames.sort()
        if is_scene_dir(dirpath):
            scenes.append(dirpath)
            dirnames[:] = []
    return scenes


def to3x3(matrix: np.ndarray) -> np.ndarray:
    """A 2×3 affine as a 3×3 homogeneous matrix (float64)."""
    return np.vstack([np.asarray(matrix, dtype=np.float64).reshape(2, 3), [0, 0, 1]])


def fov_matrix(ref_size: Tuple[int, int], size: Tuple[int, int], focal_ratio: float) -> np.ndarray:
    """Affine from pixel coordinates of ``00001`` to those of a wider shot, both centred (the FOV crop).

    A shot of focal length ``f_k`` sees ``f_1 / f_k`` times the field of view of ``00001``, so a pixel
    ``p`` of ``00001`` lies at ``c + (p - c_1) * (f_k / f_1) * size / ref_size`` in the shot.

    Args:
        ref_size (tuple[int, int]): (height, width) of ``00001``.
        size (tuple[int, int]): (height, width) of the shot.
        focal_ratio (float): ``f_k / f_1``.

    Returns:
        ndarray: (2, 3) affine, pixel centres at integer coordinates.
    """
    sy = focal_ratio * size[0] / ref_size[0]
    sx = focal_ratio * size[1] / ref_size[1]
    return np.array([[sx, 0, (size[1] - 1) / 2 - sx * (ref_size[1] - 1) / 2],
                     [0, sy, (size[0] - 1) / 2 - sy * (ref_size[0] - 1) / 2]])


def grid_matrix(x0: float, y0: float, step: float) -> np.ndarray:
    """Affine from an output grid of pitch ``step`` starting at pixel (x0, y0) of a source grid.

    Output pixel X covers source pixels ``x0 + X * step ... x0 + (X + 1) * step``, so its centre is
    at ``x0 + (X + 0.5) * step - 0.5``.

    Returns:
        ndarray: (3, 3) matrix.
    """
    return np.array([[step, 0, x0 + 0.5 * step - 0.5], [0, step, y0 + 0.5 * step - 0.5], [0, 0, 1]])


def display_gains(wb: Array) -> Array:
    """Per-channel gains [R, G, B] = wb[[0, 1, 3]] ** (1 / JPEG_GAMMA) that white-balance a gamma-encoded image.

    ``wb`` holds the [R, G, G, B] gains of ``wb.txt`` on its last axis (numpy or torch). The SR-RAW
    pipeline divides targets by these gains (the network learns a no-white-balance output) and
    multiplies outputs by them for display.
    """
    return wb[..., [0, 1, 3]] ** (1 / JPEG_GAMMA)


def remove_white_balance(rgb: np.ndarray, wb: np.ndarray) -> np.ndarray:
    """A gamma-encoded (H, W, 3) image in [0, 1] divided by :func:`display_gains` of ``wb``, clipped to [0, 1]."""
    return np.clip(rgb / display_gains(np.asarray(wb, dtype=np.float32)), 0, 1)


def apply_white_balance(img: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """Re-apply the camera white balance ``wb`` (N, 4) to a no-white-balance RGB output (N, 3, H, W) in [0, 1]."""
    return (img * display_gains(wb.to(img.dtype)).view(-1, 3, 1, 1)).clamp(0, 1)


def mosaic_rgb(rgb: np.ndarray) -> np.ndarray:
    """Sample an (H, W, 3) RGB image through an RGGB colour filter array: (H, W) mosaic."""
    mosaic = np.empty(rgb.shape[:2], rgb.dtype)
    for (dy, dx), c in zip(PACK_ORDER, PACK_COLORS):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, c]
    return mosaic


def apply_sensor_gains(mosaic: np.ndarray, images: Sequence[np.ndarray], wb: np.ndarray,
                       gains: Sequence[float]) -> Tuple[np.ndarray, List[np.ndarray], np.ndarray]:
    """A pair as the camera would have recorded it with its R, G, B responses multiplied by ``gains``.

    This is another illuminant (the ratios of the gains) and another exposure (their common factor). The RGGB
    mosaic's sites are multiplied by their channel's gain and clipped to [0, 1], where the sensor saturates.
    Every gamma-encoded, no-white-balance image is multiplied by ``gains ** (1 / JPEG_GAMMA)`` and clipped to
    [0, 1]. The white balance becomes ``wb · gains[G] / gains``, the camera's white balance under that light.

    This is exact for a linear sensor whose camera applies the white balance and then gamma :data:`JPEG_GAMMA`
    (the demo's ISP). For a real camera the illuminant part stays exact in the no-white-balance convention, since
    the camera's own white balance absorbs it, but the exposure factor goes through the camera's tone curve, which
    the gamma only approximates. Pixels near saturation are approximate in both cases.

    Args:
        mosaic (ndarray): (H, W) normalised RGGB mosaic, starting on an R site.
        images (Sequence[ndarray]): (h, w, 3) RGB images in [0, 1] without white balance (targets, references).
        wb (ndarray): (4,) white-balance gains [R, G, G, B].
        gains (Sequence[float]): Sensor gains [R, G, B].

    Returns:
        tuple: The mosaic, the list of images and the white balance.
    """
    gains = np.asarray(gains, dtype=np.float32)
    out = np.empty_like(mosaic)
    for (dy, dx), c in zip(PACK_ORDER, PACK_COLORS):
        out[dy::2, dx::2] = mosaic[dy::2, dx::2] * gains[c]
    encoded = gains**(1 / JPEG_GAMMA)
    new_wb = np.asarray(wb, dtype=np.float32) * gains[1] / gains[[0, 1, 1, 2]]
    return np.clip(out, 0, 1), [np.clip(img * encoded, 0, 1) for img in images], new_wb


def network_input(mosaic: np.ndarray, rgb: np.ndarray, in_format: str) -> np.ndarray:
    """The network input X (C, h', w') of ``in_format``: the RGGB mosaic (1, h, w), its packing (4, h/2, w/2),
    or the (h, w, 3) RGB rendition as (3, h, w)."""
    if in_format == 'bayer':
        return mosaic[None]
    if in_format == 'packed':
        return pack_bayer(mosaic)
    return rgb.transpose(2, 0, 1)
