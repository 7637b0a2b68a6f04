"""``python app.py`` in a child process on a free loopback port: the one launcher the tests and
the benchmarks share (a test harness, kept out of the product package)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Mapping, Optional

from pneumonia.serving import free_port

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"


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
