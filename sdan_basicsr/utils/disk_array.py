"""An image-sized array kept in a temporary file and read and written by boxes, so that it takes no memory.

``sdan-zoom`` keeps two whole-image arrays that need not stay in memory: the zoomed output until its colours are
fitted and its strips encoded, and the tiled network's CPA2 input between its second and third pass. The file has no
name (``tempfile.TemporaryFile``): it goes away when closed and when the process ends, killed or not. It is read and
written with ``pread``/``pwrite``, not mapped, so its pages are the kernel's page cache and never the process's
resident memory.
"""
import os
import tempfile
from typing import Optional, Sequence, Tuple

import numpy as np


class DiskArray:
    """An (H, W, C) array of ``dtype`` in an unnamed temporary file.

    Args:
        shape (Sequence[int]): (H, W, C).
        dtype (np.dtype): Element type.
        folder (str | None): Where the file goes (best on the disk that receives the results). Default: None
            (the system's temporary folder).
    """

    def __init__(self, shape: Sequence[int], dtype: np.dtype, folder: Optional[str] = None):
        self.shape: Tuple[int, int, int] = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._file = tempfile.TemporaryFile(dir=folder)
        self._fd = self._file.fileno()
        self._row_bytes = self.shape[1] * self.shape[2] * self.dtype.itemsize
        self._pixel_bytes = self.shape[2] * self.dtype.itemsize
        self._file.truncate(self.shape[0] * self._row_bytes)  # sparse: no block is written until a box is

    @property
    def nbytes(self) -> int:
        """Size of the array in bytes."""
        return self.shape[0] * self._row_bytes

    def _offset(self, row: int, col: int) -> int:
        return row * self._row_bytes + col * self._pixel_bytes

    def write(self, row: int, col: int, block: np.ndarray) -> None:
        """Store ``block`` (h, w, C) with its top-left corner at (``row``, ``col``)."""
        h, w = block.shape[:2]
        inside = 0 <= row and row + h <= self.shape[0] and 0 <= col and col + w <= self.shape[1]
        if not inside or block.shape[2:] != self.shape[2:]:
            raise ValueError(f'block {block.shape} at ({row}, {col}) does not fit in {self.shape}')
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if w == self.shape[1]:  # whole rows are one run of the file
            self._pwrite(memoryview(block).cast('B'), self._offset(row, 0))
            return
        for i in range(h):
            self._pwrite(memoryview(block[i]).cast('B'), self._offset(row + i, col))

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The box rows ``y0:y1``, columns ``x0:x1``, as a new (y1 - y0, x1 - x0, C) array."""
        if not (0 <= y0 <= y1 <= self.shape[0] and 0 <= x0 <= x1 <= self.shape[1]):
            raise ValueError(f'box ({y0}:{y1}, {x0}:{x1}) is outside {self.shape}')
        out = np.empty((y1 - y0, x1 - x0, self.shape[2]), self.dtype)
        if x1 - x0 == self.shape[1]:
            self._pread(memoryview(out).cast('B'), self._offset(y0, 0))
        else:
            for i in range(y1 - y0):
                self._pread(memoryview(out[i]).cast('B'), self._offset(y0 + i, x0))
        return out

    def _pwrite(self, data: memoryview, offset: int) -> None:
        while data:
            written = os.pwrite(self._fd, data, offset)
            data, offset = data[written:], offset + written

    def _pread(self, out: memoryview, offset: int) -> None:
        while out:
            got = os.preadv(self._fd, [out], offset)
            if not got:
                raise OSError(f'temporary file ended at byte {offset} of {self.nbytes}')
            out, offset = out[got:], offset + got

    def close(self) -> None:
        """Delete the file."""
        self._file.close()

    def __enter__(self) -> 'DiskArray':
        return self

    def __exit__(self, *exc) -> None:
        self.close()
