"""Run ``python app.py`` as a subprocess on a free loopback port, for the tests that need the real server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_app(model_dir: Path, log_path: Path, **env):
    """Serve ``python app.py`` over ``model_dir`` on loopback; yield ``(url, process)``; stop it."""
    port = free_port()
    full_env = {key: value for key, value in os.environ.items() if key != "GRADIO_TEMP_DIR"}  # app picks its own
    full_env.update(PNEUMONIA_MODEL_DIR=str(model_dir), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
                    GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", **env)
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=full_env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):  # the model loads first: allow a slow, busy machine
            if process.poll() is not None:
                raise AssertionError(f"app exited early:\n{log_path.read_text(errors='replace')}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/gradio_api/info", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError("app did not come up")
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
