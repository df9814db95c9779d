"""Test-only start-up module: pause a training process inside the atomic save of one file, so that a test can
``kill -9`` it exactly there (on ``PYTHONPATH`` only in ``tests/test_checkpoint.py``'s subprocesses).

``SDAN_TEST_PAUSE=<final file name>:write`` pauses after the first bytes of its temporary file are written (the
file object of ``atomic_save`` comes from ``os.fdopen``); ``…:replace`` pauses with the temporary file complete,
just before ``os.replace`` gives it its final name. The process then writes ``$SDAN_TEST_PAUSE_MARKER`` and sleeps.
"""
import os
import time

_TARGET, _, _WHEN = os.environ.get('SDAN_TEST_PAUSE', '').partition(':')
_MARKER = os.environ.get('SDAN_TEST_PAUSE_MARKER', '')


def _pause(what: str) -> None:
    with open(_MARKER + '.part', 'w') as f:
        f.write(what)
    os.replace(_MARKER + '.part', _MARKER)
    while True:
        time.sleep(60)


class _PausingWriter:
    """A binary file that lets its first write through, then pauses before the second."""

    def __init__(self, file, path):
        self._file, self._path, self._writes = file, path, 0

    def write(self, data):
        if self._writes == 1:
            self._file.flush()
            _pause(f'write {self._path} {os.path.getsize(self._path)}')
        self._writes += 1
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


if _WHEN == 'write':
    _fdopen = os.fdopen

    def _fdopen_pausing(fd, mode='r', *args, **kwargs):
        file = _fdopen(fd, mode, *args, **kwargs)
        path = os.readlink(f'/proc/self/fd/{fd}')
        if 'w' in mode and os.path.basename(path).startswith(f'.{_TARGET}.'):
            return _PausingWriter(file, path)
        return file

    os.fdopen = _fdopen_pausing
elif _WHEN == 'replace':
    _replace = os.replace

    def _replace_pausing(src, dst, *args, **kwargs):
        if os.path.basename(dst) == _TARGET:
            _pause(f'replace {src} {os.path.getsize(src)}')
        return _replace(src, dst, *args, **kwargs)

    os.replace = _replace_pausing
