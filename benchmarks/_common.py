"""Shared by the benchmark scripts: statistics, machine state, targets and an app on loopback."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from benchmarks.app_process import AppProcess

ROOT = Path(__file__).resolve().parent.parent
# The largest bundled film (1024 x 967, 8-bit JPEG): the "full-resolution example".
EXAMPLE = ROOT / "examples" / "NORMAL" / "NORMAL2-IM-0568-0001.jpeg"
EXAMPLES = sorted((ROOT / "examples").glob("*/*.jpeg"))  # the bundled JPEG films (children 1024 px, NIH adults 512 px)
DATA = Path(os.environ.get("PNEUMONIA_DATA", ROOT.parent / "shared" / "data" / "chest_xray"))
TEST_DIR = DATA / "test"
# Quiet TensorFlow in this process and in every child it starts.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "GRADIO_ANALYTICS_ENABLED": "False"}


@dataclasses.dataclass(frozen=True)
class Summary:
    """Order statistics of a list of timings, in the samples' unit."""

    n: int
    median: float
    p95: float
    mean: float
    minimum: float

    def ms(self) -> str:
        """``median 12.3 ms, p95 15.0 ms (n=200)`` for samples in seconds."""
        return f"median {self.median * 1e3:7.1f} ms, p95 {self.p95 * 1e3:7.1f} ms (n={self.n})"


def summarize(samples: Sequence[float]) -> Summary:
    """Median, 95th percentile (linear interpolation), mean and minimum of ``samples``."""
    values = np.asarray(samples, dtype=np.float64)
    return Summary(len(values), float(np.median(values)), float(np.percentile(values, 95)),
                   float(values.mean()), float(values.min()))


def time_call(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def training_pids() -> list[int]:
    """PIDs of running ``pneumonia train`` jobs (they would distort any timing)."""
    out = subprocess.run(["pgrep", "-f", "pneumonia train"], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split() if int(pid) != os.getpid()]


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def model_summary() -> str:
    """Version, size and training date of the model the benchmarks run (from its metadata)."""
    from pneumonia.model import resolve_model_dir

    model_dir = resolve_model_dir()
    try:
        meta = json.loads((model_dir / "metadata.json").read_text())
    except (OSError, ValueError):
        return f"model {model_dir} (no readable metadata)"
    return (f"model {model_dir.name}/ {meta.get('version')} ({meta.get('architecture', '?').split(', logit')[0]}; "
            f"trained {meta.get('training', {}).get('date', '?')})")


def print_header(title: str) -> None:
    """Title, machine state and model, and a warning when a training job is running."""
    print(f"== {title} ==")
    print(f"{os.cpu_count()} CPU cores, load average {load_average()}; {model_summary()}")
    busy = training_pids()
    if busy:
        print(f"CAUTION: `pneumonia train` is running (pid {', '.join(map(str, busy))}): timings are distorted")
    sys.stdout.flush()


def check(name: str, value: float, target: float, unit: str = "", higher_is_better: bool = False) -> str:
    """One line comparing a figure with its target, e.g. ``predict / reference  0.31  (target <= 0.4)  met``."""
    met = value >= target if higher_is_better else value <= target
    sign = ">=" if higher_is_better else "<="
    return f"{name:<44} {value:9.3f}{unit:<6} (target {sign} {target:g}{unit})  {'met' if met else 'NOT MET'}"


def rss_mb(pid: int) -> tuple[float, float]:
    """``(current, peak)`` resident set size of a process in MB (``VmRSS``, ``VmHWM``)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024.0
    return fields["VmRSS"], fields["VmHWM"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, in seconds (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_client(url: str, download_dir: str):
    """A ``gradio_client.Client`` for ``url``: quiet, no analytics, downloads into ``download_dir``."""
    from gradio_client import Client

    return Client(url, verbose=False, download_files=download_dir, analytics_enabled=False)


def analyze(client, path: Path = EXAMPLE):
    """One analysis through the app's API: upload, predict with Grad-CAM, overlay downloaded."""
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), api_name="/predict")


class AppServer(AppProcess):
    """``python app.py`` in a child process on a free loopback port (:class:`benchmarks.app_process.AppProcess`,
    the launcher the tests use too), with the benchmarks' quiet environment and measurements.

    ``with AppServer() as server`` returns once the app answers; ``server.wait_until_up()`` then
    gives the seconds it took from the start.
    """

    def __init__(self, port: int | None = None, env: dict | None = None):
        super().__init__(env={**QUIET_ENV, **(env or {})}, port=port, stop_timeout=15)

    def client(self):
        """A new ``gradio_client.Client`` (its own session) for this app."""
        return make_client(self.url, str(self.workdir / "downloads"))

    def rss_mb(self) -> tuple[float, float]:
        return rss_mb(self.process.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)
