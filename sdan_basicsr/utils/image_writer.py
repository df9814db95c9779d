"""Images of any size written by strips, with an ICC profile and EXIF: PNG (8/16 bit) and TIFF (8/16 bit).

OpenCV and Pillow encode a whole image held in memory; a ×4 zoom of a 61-MP RAW is a 976-MP image (5.9 GB at
16 bits), so :func:`write_image` takes its rows a strip at a time from an iterator and encodes them as they come:
PNG through one zlib stream (filter *Sub*, the standard's chunks iCCP, eXIf, IDAT), TIFF through tifffile (Deflate
with the horizontal predictor, one TIFF strip per strip, BigTIFF beyond 4 GB). Pillow serialises the EXIF; in a TIFF
its Exif and GPS IFDs are appended after tifffile has written the file, and IFD0 points to them.
"""
import os.path as osp
import struct
import zlib
from functools import lru_cache
from typing import Any, Dict, Iterable, Iterator, Optional

import numpy as np
import tifffile
from PIL import Image, ImageCms, TiffImagePlugin

#: zlib level and strategy of both formats, OpenCV's for PNG: run-length matches only, level 1; on photographs it is
#: 2-6 times faster than zlib's default (level 6, full matching) and ≤ 12 % larger.
ZLIB_LEVEL = 1
ZLIB_STRATEGY = zlib.Z_RLE
#: A PNG's IDAT chunks are emitted once this much compressed data has accumulated.
PNG_CHUNK_BYTES = 1 << 20
#: EXIF IFD0 tags that a TIFF takes from the EXIF (the image-structure tags are tifffile's).
TIFF_IFD0_TAGS = (270, 271, 272, 305, 306, 315, 33432)
#: IFD0 pointers to the Exif and GPS IFDs.
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
#: tifffile writes no Exif or GPS IFD pointer (it filters them out of ``extratags``): IFD0 gets an entry with the tag
#: code one below, which sorts to the same place among IFD0's tags, and :func:`_append_ifds` turns it into the pointer.
PLACEHOLDER = {EXIF_IFD: EXIF_IFD - 1, GPS_IFD: GPS_IFD - 1}
EXTENSIONS = ('.png', '.tif', '.tiff')


@lru_cache(maxsize=1)
def srgb_profile() -> bytes:
    """The ICC profile of sRGB (LittleCMS's, through Pillow)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()


def write_image(path: str,
                strips: Iterable[np.ndarray],
                height: int,
                width: int,
                bits: int = 8,
                rows_per_strip: int = 64,
                exif: Optional[Image.Exif] = None,
                icc_profile: Optional[bytes] = None) -> None:
    """Write an RGB image given by strips of rows, top to bottom, as PNG or TIFF (by the extension of ``path``).

    Args:
        path (str): ``.png``, ``.tif`` or ``.tiff``.
        strips (Iterable[ndarray]): (rows, width, 3) uint8 (``bits`` 8) or uint16 (16) arrays of
            ``rows_per_strip`` rows each, the last one shorter if need be, ``height`` rows in all.
        height (int): Image height.
        width (int): Image width.
        bits (int): 8 or 16. Default: 8.
        rows_per_strip (int): Rows of each strip (a TIFF's RowsPerStrip). Default: 64.
        exif (Image.Exif | None): EXIF to embed (IFD0 tags, Exif and GPS IFDs as dicts). Default: None.
        icc_profile (bytes | None): ICC profile to embed. Default: None.
    """
    ext = osp.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise ValueError(f'cannot write {path}: the extension must be one of {EXTENSIONS}')
    dtype = np.dtype(np.uint8 if bits == 8 else np.uint16)
    strips = _checked(strips, height, width, dtype, rows_per_strip)
    if ext == '.png':
        _write_png(path, strips, height, width, bits, exif, icc_profile)
    else:
        _write_tiff(path, strips, height, width, dtype, rows_per_strip, exif, icc_profile)


def _checked(strips: Iterable[np.ndarray], height: int, width: int, dtype: np.dtype,
             rows: int) -> Iterator[np.ndarray]:
    """``strips``, each checked against the image's shape and dtype, and their rows against its height."""
    done = 0
    for strip in strips:
        expected = (min(rows, height - done), width, 3)
        if strip.shape != expected or strip.dtype != dtype:
            raise ValueError(f'strip at row {done} is {strip.shape} {strip.dtype}, expected {expected} {dtype}')
        done += strip.shape[0]
        yield strip
    if done != height:
        raise ValueError(f'strips gave {done} rows, expected {height}')


def _exif_tiff_bytes(exif: Image.Exif) -> bytes:
    """EXIF as the TIFF structure that PNG's eXIf chunk holds (Pillow's serialisation without "Exif\\0\\0")."""
    data = exif.tobytes()
    return data[6:] if data.startswith(b'Exif\x00\x00') else data


def _deflater() -> 'zlib._Compress':
    return zlib.compressobj(ZLIB_LEVEL, zlib.DEFLATED, 15, 9, ZLIB_STRATEGY)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


def _write_png(path: str, strips: Iterator[np.ndarray], height: int, width: int, bits: int,
               exif: Optional[Image.Exif], icc_profile: Optional[bytes]) -> None:
    """PNG, colour type 2 (RGB), filter *Sub* on every row, one zlib stream over the strips."""
    bpp = 3 * bits // 8
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n')
        f.write(_png_chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, bits, 2, 0, 0, 0)))
        if icc_profile is not None:
            f.write(_png_chunk(b'iCCP', b'sRGB\x00\x00' + zlib.compress(icc_profile)))
        if exif is not None and len(exif):
            f.write(_png_chunk(b'eXIf', _exif_tiff_bytes(exif)))
        stream, pending = _deflater(), []
        for strip in strips:
            raw = strip.astype('>u2', copy=False) if bits == 16 else strip
            raw = raw.view(np.uint8).reshape(strip.shape[0], width * bpp)
            rows = np.empty((raw.shape[0], 1 + raw.shape[1]), np.uint8)
            rows[:, 0] = 1  # Sub: each byte minus the byte of the pixel on its left
            rows[:, 1:1 + bpp] = raw[:, :bpp]
            np.subtract(raw[:, bpp:], raw[:, :-bpp], out=rows[:, 1 + bpp:])
            pending.append(stream.compress(rows))
            if sum(map(len, pending)) >= PNG_CHUNK_BYTES:
                f.write(_png_chunk(b'IDAT', b''.join(pending)))
                pending = []
        pending.append(stream.flush())
        f.write(_png_chunk(b'IDAT', b''.join(pending)))
        f.write(_png_chunk(b'IEND', b''))


def _write_tiff(path: str, strips: Iterator[np.ndarray], height: int, width: int, dtype: np.dtype, rows: int,
                exif: Optional[Image.Exif], icc_profile: Optional[bytes]) -> None:
    """TIFF: RGB, Deflate with the horizontal predictor, one strip per strip; EXIF's IFD0 tags in IFD0, its Exif and
    GPS IFDs appended (:func:`_append_ifds`)."""
    exif = exif if exif is not None else Image.Exif()
    sub_ifds = {tag: exif.get_ifd(tag) for tag in (EXIF_IFD, GPS_IFD) if exif.get_ifd(tag)}
    bigtiff = height * width * 3 * dtype.itemsize > 2**32 - 2**25  # the uncompressed size, as tifffile decides
    pointer = 'Q' if bigtiff else 'I'
    extratags = [(tag, 's', 0, exif[tag], True) for tag in TIFF_IFD0_TAGS if isinstance(exif.get(tag), str)]
    extratags += [(PLACEHOLDER[tag], pointer, 1, 0, True) for tag in sub_ifds]

    def encoded() -> Iterator[bytes]:
        for strip in strips:
            diff = strip.astype(dtype.newbyteorder('<'), copy=True)
            diff[:, 1:] -= strip[:, :-1]  # horizontal predictor: each sample minus its left neighbour's (mod 2^bits)
            deflater = _deflater()
            yield deflater.compress(diff) + deflater.flush()

    tifffile.imwrite(path, encoded(), shape=(height, width, 3), dtype=dtype.newbyteorder('<'), byteorder='<',
                     photometric='rgb', planarconfig='contig', compression='zlib', predictor=True,
                     rowsperstrip=rows, bigtiff=bigtiff, iccprofile=icc_profile, metadata=None, software=False,
                     extratags=extratags)
    if sub_ifds:
        _append_ifds(path, sub_ifds, bigtiff)


def _append_ifds(path: str, sub_ifds: Dict[int, Dict[int, Any]], bigtiff: bool) -> None:
    """Append IFDs (Pillow's serialisation, its types for the Exif and GPS tags) at the end of a TIFF tifffile wrote,
    and turn IFD0's :data:`PLACEHOLDER` entries into pointers to them."""
    with tifffile.TiffFile(path) as tif:
        entries = {tag: tif.pages[0].tags[PLACEHOLDER[tag]] for tag in sub_ifds}
    header = b'II+\x00\x08\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00' if bigtiff else b'II*\x00\x08\x00\x00\x00'
    with open(path, 'r+b') as f:
        for tag, tags in sub_ifds.items():
            end = f.seek(0, 2)
            start = end + end % 2  # IFDs start on a word boundary
            ifd = TiffImagePlugin.ImageFileDirectory_v2(header, group=tag)
            for key, value in tags.items():
                ifd[key] = value
            f.write(b'\x00' * (start - end) + ifd.tobytes(start))
            f.seek(entries[tag].offset)
            f.write(struct.pack('<H', tag))
            f.seek(entries[tag].valueoffset)
            f.write(struct.pack('<Q' if bigtiff else '<I', start))
