"""Process settings for serving the app: address, limits, allocator, temporary folder, signals.

``app.py`` lays out the page; this module holds what the process around it needs: where to
listen (read and checked before the model loads, so a typo or a busy port is reported at once),
how much to accept, where uploads live and how the process exits. It also starts ``python app.py``
as a child process on a free loopback port (:class:`AppProcess`), the one launcher the tests and
the benchmarks share. Nothing here runs at import time.

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
import contextlib
import ctypes
import itertools
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Mapping, Optional

from pneumonia.errors import PneumoniaError

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
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


def as_sentence(text: str) -> str:
    """``text`` on one line, ending with a full stop."""
    text = " ".join(text.split())
    return text if text.endswith((".", "!", "?")) else text + "."


class AppProcess:
    """``python app.py`` in a child process on a free loopback port; a context manager.

    Used by the tests and the benchmarks. The child's output goes to ``log_path`` (shown when it
    fails to start); :meth:`close` sends SIGTERM, which the app turns into a clean exit, and
    SIGKILL if it has not exited after ``stop_timeout`` seconds.

    Args:
        model_dir: the model folder to serve (``PNEUMONIA_MODEL_DIR``); ``None``: the app's default.
        log_path: where the child's output goes; ``None``: a file in a temporary folder.
        env: more environment variables for the child; a value of ``None`` removes the variable.
        port: the port; ``None``: a free one.
        stop_timeout: seconds :meth:`close` waits after SIGTERM before SIGKILL.
    """

    def __init__(self, model_dir: Optional[Path] = None, log_path: Optional[Path] = None,
                 env: Optional[Mapping[str, Optional[str]]] = None, port: Optional[int] = None, stop_timeout: float = 30.0):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="pneumonia-appprocess-"))
        self.log_path = Path(log_path) if log_path else self.workdir / "app.log"
        self.env = {key: value for key, value in os.environ.items() if key != "GRADIO_TEMP_DIR"}  # app picks its own
        self.env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(self.port),
                        GRADIO_ANALYTICS_ENABLED="False", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        if model_dir is not None:
            self.env["PNEUMONIA_MODEL_DIR"] = str(model_dir)
        for key, value in (env or {}).items():
            if value is None:
                self.env.pop(key, None)
            else:
                self.env[key] = value
        self.stop_timeout = stop_timeout
        self.process: Optional[subprocess.Popen] = None
        self.started = 0.0
        self.up_after: Optional[float] = None

    def start(self) -> "AppProcess":
        """Start the child and return at once (see :meth:`wait_until_up`)."""
        with open(self.log_path, "wb") as log:
            self.started = time.perf_counter()
            self.process = subprocess.Popen([sys.executable, str(APP)], cwd=ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        return self

    def wait_until_up(self, timeout: float = 300.0) -> float:
        """Poll the page until it answers (at once if it already has).

        Returns:
            Seconds from :meth:`start` to the first answer.

        Raises:
            RuntimeError: the child exited, or did not answer within ``timeout`` seconds (the log
                is in the message).
        """
        deadline = self.started + timeout
        while self.up_after is None and time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/config", timeout=2) as response:
                    if response.status == 200:
                        self.up_after = time.perf_counter() - self.started
                        break
            time.sleep(0.05)
        if self.up_after is None:
            raise RuntimeError(f"app not up after {timeout:.0f} s:\n{self.log()}")
        return self.up_after

    def run_to_exit(self, timeout: float = 300.0) -> tuple[int, str]:
        """Start the child, wait for it to exit by itself and clean up (for start-up failures).

        Returns:
            ``(exit code, everything it printed)``.
        """
        self.start()
        try:
            code = self.process.wait(timeout=timeout)
            return code, self.log_path.read_text(errors="replace")
        finally:
            self.close()

    def log(self) -> str:
        """The end of the child's output."""
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def close(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL) and remove the working folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "AppProcess":
        self.start()
        try:
            self.wait_until_up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()
