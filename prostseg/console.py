"""What reaches the console: prostseg's own lines, not the chatter of native libraries.

TensorFlow, absl, CUDA, ITK, GDCM and elastix write start-up notes and diagnostics
straight to the process's file descriptors 1 and 2, below Python, so neither
``TF_CPP_MIN_LOG_LEVEL`` nor redirecting :data:`sys.stderr` silences all of it.
:func:`native_output_captured` points those descriptors at a temporary file while a
block runs, and keeps Python's :data:`sys.stdout` and :data:`sys.stderr` (prostseg's
messages, warnings, progress bars) on the console. The library's reasons for failing
reach the user through exceptions, never through that chatter.

The ``prostseg`` command captures native output for the whole command unless
``--verbose`` is given (:func:`show_native_output`).

Examples
--------
>>> import os
>>> with native_output_captured() as captured:
...     _ = os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on\\n")
>>> "oneDNN" in captured.text()
True
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

__all__ = ["CapturedOutput", "native_output_captured", "show_native_output"]

_lock = threading.RLock()
_depth = 0
_active = None  # (CapturedOutput, the function that ends the capture) while one is open
_shown = False


class CapturedOutput:
    """What native code wrote to descriptors 1 and 2 while a capture was open."""

    def __init__(self, file) -> None:
        self._file = file
        self._final = ""

    def text(self) -> str:
        """The captured bytes so far (all of them once the capture closed), decoded leniently."""
        if self._file is None:
            return self._final
        with _lock:
            position = self._file.tell()
            self._file.seek(0)
            content = self._file.read()
            self._file.seek(position)
        return content.decode("utf-8", errors="replace")

    def _close(self) -> None:
        """Keep the text and drop the file."""
        self._final = self.text()
        self._file.close()
        self._file = None


def show_native_output(show: bool) -> None:
    """Let native output through (``True``, the command line's ``--verbose``) or capture it."""
    global _shown
    _shown = bool(show)


def _swapped_stream(name: str, fd: int, saved_fd: int):
    """A text stream on the console for ``sys.<name>`` when it writes to descriptor ``fd``."""
    stream = getattr(sys, name)
    try:
        writes_to_fd = stream.fileno() == fd
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        writes_to_fd = False
    if not writes_to_fd:
        return None
    stream.flush()
    return open(os.dup(saved_fd), "w", buffering=1, encoding=stream.encoding,  # noqa: SIM115
                errors=stream.errors or "strict", closefd=True)


@contextlib.contextmanager
def native_output_captured() -> Iterator[CapturedOutput]:
    """Capture what native libraries write to descriptors 1 and 2 while the block runs.

    Nested and concurrent blocks (threads) share one capture: the first to open it
    redirects the descriptors, the last to close it restores them. After
    ``show_native_output(True)`` nothing is captured.

    Yields
    ------
    CapturedOutput
        Its :meth:`CapturedOutput.text` holds what was written so far.
    """
    global _depth, _active
    if _shown:
        yield CapturedOutput(None)
        return
    with _lock:
        if _depth == 0:
            _active = _open_capture()
        _depth += 1
        captured = _active[0]
    try:
        yield captured
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _active[1]()
                _active = None


def _open_capture():
    """Point descriptors 1 and 2 at a temporary file; return the capture and its undo."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    file = tempfile.TemporaryFile()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    streams = {name: _swapped_stream(name, fd, saved[fd]) for name, fd in (("stdout", 1), ("stderr", 2))}
    originals = {name: getattr(sys, name) for name, stream in streams.items() if stream is not None}
    for name, stream in streams.items():
        if stream is not None:
            setattr(sys, name, stream)
    for fd in (1, 2):
        os.dup2(file.fileno(), fd)
    captured = CapturedOutput(file)

    def undo() -> None:
        for stream in streams.values():
            if stream is not None:
                stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        for name, original in originals.items():
            streams[name].close()
            setattr(sys, name, original)
        captured._close()

    return captured, undo
