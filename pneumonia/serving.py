"""Process settings for serving the app: address, limits, allocator, temporary folder, signals.

``app.py`` lays out the page; this module holds what the process around it needs: where to
listen (read and checked before the model loads, so a typo or a busy port is reported at once),
how much to accept, where uploads live and how the process exits. (The launcher the tests and
benchmarks use, ``benchmarks.app_process.AppProcess``, is not part of the product.) Nothing here
runs at import time.

Environment:
    GRADIO_SERVER_NAME: the address to listen on (default ``127.0.0.1``: this machine only; a
        Hugging Face Space sets ``0.0.0.0`` itself).
    GRADIO_SERVER_PORT: the port (default 7860).
    PNEUMONIA_CACHE_TTL_S: seconds an upload (and its preview and overlay) may stay in the
        temporary folder before it is deleted (default 3600).
    GRADIO_TEMP_DIR: where Gradio keeps those files; :func:`use_private_temp_dir` points it at a
        private folder of its own when unset.
"""

from __future__ import annotations

import atexit
import collections
import ctypes
import itertools
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Mapping, Optional

from pneumonia.errors import PneumoniaError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
# A 4300 x 4300 16-bit uncompressed DICOM, the largest film there is, is 37 MB; anything bigger
# is refused by the server while it streams in, before it reaches the model.
MAX_FILE_SIZE = "40mb"
# Queue: at most CONCURRENCY_LIMIT analyses run at once (one per CPU core; each is CPU-bound),
# and at most QUEUE_MAX_SIZE requests wait. Past that the browser shows "This application is
# currently busy. Please try again." and gradio_client raises QueueError("Queue is full! Please
# try again."), instead of anyone waiting on an unbounded queue.
CONCURRENCY_LIMIT = 2
QUEUE_MAX_SIZE = 32
# The Worklist tab and /predict_batch run one request at a time in a queue of their own
# (concurrency_id "worklist"), and opening a worklist row another ("worklist-row"): a big
# worklist never takes the single-film "analysis" slots, it only shares the CPU with them.
WORKLIST_CONCURRENCY_LIMIT = 1
CACHE_TTL_S = 3600  # default age at which uploads, previews and overlays are deleted
# What a session keeps to redraw its overlay (the film as 8-bit grayscale at display size and the
# heatmap, about 1 MB) is dropped this long after its analysis.
STATE_TTL_S = 900
RESERVED_PORTS = (7860, 7861)  # the default port and the next: left to apps people run by hand

logger = logging.getLogger("pneumonia.app")


class StartError(PneumoniaError):
    """The app cannot start; the message is one sentence saying why."""


def read_address(environ: Mapping[str, str] = os.environ) -> tuple[str, int]:
    """The address and port to listen on, from ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``.

    Returns:
        ``(host, port)``; ``127.0.0.1`` and 7860 when unset.

    Raises:
        StartError: the port is not a whole number from 1 to 65535.
    """
    host = environ.get("GRADIO_SERVER_NAME", "").strip() or DEFAULT_HOST
    text = environ.get("GRADIO_SERVER_PORT", "").strip()
    if not text:
        return host, DEFAULT_PORT
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise StartError(f"GRADIO_SERVER_PORT must be a port number from 1 to 65535, not {shown!r}.")
    return host, int(text)


def check_port_free(host: str, port: int) -> None:
    """Bind ``(host, port)`` for a moment, as the server will, so a taken port is reported at once.

    Raises:
        StartError: the address cannot be resolved, or the port is in use or not ours to take.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError):
        raise StartError(f"GRADIO_SERVER_NAME {host!r} is not an address of this machine.") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds it
        try:
            sock.bind(address)
        except OSError as exc:
            reason = "is already in use" if exc.errno == 98 else f"cannot be used ({exc.strerror})"
            raise StartError(f"port {port} on {host} {reason}; set GRADIO_SERVER_PORT to another port.") from None


def free_port() -> int:
    """A free TCP port on the loopback interface (never 7860 or 7861, which people run apps on)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


def cache_ttl_s(environ: Mapping[str, str] = os.environ) -> int:
    """Age in seconds at which temporary files are deleted (PNEUMONIA_CACHE_TTL_S, default 1 h)."""
    value = environ.get("PNEUMONIA_CACHE_TTL_S", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else CACHE_TTL_S


def limit_allocator_growth() -> None:
    """Stop glibc malloc from keeping freed film-sized buffers, which reads as a memory leak.

    By default glibc raises its mmap threshold after the first large free, so later multi-MB
    arrays (decoded films, overlays) come from per-thread heaps that are rarely returned to the
    OS, and each worker thread gets a heap of its own. Measured with benchmarks/load.py (8 users x
    10 requests): resident memory grew 230 MB without this and 30 MB with it. Settings already
    given in the environment (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_) win; other C libraries
    are left alone.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_mmap_threshold, m_arena_max = -3, -8  # from glibc's malloc.h
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        mallopt(m_mmap_threshold, 1 << 20)  # 1 MB and up: mmap, handed back to the OS on free
    if "MALLOC_ARENA_MAX" not in os.environ:
        mallopt(m_arena_max, 2)


def use_private_temp_dir() -> str:
    """Point Gradio's file cache at a fresh folder only this process uses, removed at exit.

    Uploads, previews and overlays live there until ``delete_cache`` ages them out. An explicit
    GRADIO_TEMP_DIR is respected (and left in place).

    Returns:
        The folder.
    """
    if os.environ.get("GRADIO_TEMP_DIR"):
        return os.environ["GRADIO_TEMP_DIR"]
    folder = tempfile.mkdtemp(prefix="pneumonia-app-")  # mode 0700
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["GRADIO_TEMP_DIR"] = folder
    return folder


def exit_on_sigterm() -> None:
    """Make SIGTERM (docker stop, systemd) exit like Ctrl+C, so exit handlers run."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))


def save_image(image, cache_dir: str | Path, name: str) -> Optional[str]:
    """Write ``image`` (a PIL image, or ``None``) to a new folder under ``cache_dir``; return its path.

    Gradio 6.31 saves a returned PIL image under a folder named by the hash of its bytes and
    rewrites it in place, so two requests producing the same image (two users on the same
    example) truncate the file while the first is still downloading it. A folder per image avoids
    that; ``delete_cache`` removes it like any other output. The file carries no metadata; a
    ``.jpeg`` name is saved at quality 90.
    """
    if image is None:
        return None
    folder = Path(cache_dir) / secrets.token_hex(16)
    folder.mkdir(parents=True)
    image.save(folder / name, **({"quality": 90} if name.endswith(".jpeg") else {}))
    return str(folder / name)


def save_bytes(data: bytes, cache_dir: str | Path, name: str) -> str:
    """Write ``data`` (a CSV, a PDF) to a new folder under ``cache_dir`` as ``name``; return its path.

    Like :func:`save_image`: one folder per file, aged out by ``delete_cache`` like any output.
    ``name`` must be the app's own (never an uploaded file's name).
    """
    folder = Path(cache_dir) / secrets.token_hex(16)
    folder.mkdir(parents=True)
    (folder / name).write_bytes(data)
    return str(folder / name)


def describe_failure(exc: BaseException) -> str:
    """What to tell a person about a failed analysis, in one sentence.

    A :class:`~pneumonia.errors.PneumoniaError` says itself; anything else is logged by type and
    code location only (messages may quote the upload) and described in general terms.
    """
    if isinstance(exc, PneumoniaError):
        return str(exc)[:1].upper() + str(exc)[1:]
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    logger.error("analysis failed: %s at %s", type(exc).__name__, where)
    return "The analysis failed unexpectedly. Try another file."


class LatestRequests:
    """Which request of each session started last, so an older one finishing late can stand down.

    Thread-safe; remembers the most recent ``max_sessions`` sessions.
    """

    def __init__(self, max_sessions: int = 10_000):
        self._latest: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._tickets = itertools.count()
        self._lock = threading.Lock()
        self._max_sessions = max_sessions

    def begin(self, session: str) -> int:
        """Record that a request of ``session`` starts now; returns its ticket."""
        with self._lock:
            ticket = next(self._tickets)
            self._latest[session] = ticket
            self._latest.move_to_end(session)
            while len(self._latest) > self._max_sessions:
                self._latest.popitem(last=False)
            return ticket

    def is_latest(self, session: str, ticket: int) -> bool:
        """Whether no request of ``session`` has begun since the one holding ``ticket``."""
        with self._lock:
            return self._latest.get(session, ticket) == ticket


def describe_address(host: str, port: int, shared: bool) -> str:
    """The one line ``python app.py`` prints once it serves: where, and how to get a public link.

    Args:
        host: the address it listens on.
        port: the port.
        shared: whether it was started with ``--share`` (Gradio prints the public link itself).
    """
    where = f"Serving on http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{port}"
    if shared:
        return where + " (the public link is printed above)."
    return where + (" (this machine only)" if host in ("127.0.0.1", "localhost") else "") + \
        "; for a public gradio.live link, run: python app.py --share"


def as_sentence(text: str) -> str:
    """``text`` on one line, ending with a full stop."""
    text = " ".join(text.split())
    return text if text.endswith((".", "!", "?")) else text + "."
