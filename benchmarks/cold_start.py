"""Cold start: `python app.py` on a free loopback port until its first analysis is answered.

    python -m benchmarks.cold_start [--runs 3]

Each run starts a fresh process, polls ``/config`` until the server answers, then connects with
``gradio_client`` and analyses the full-resolution example (Grad-CAM and overlay included); the
figure is the time from ``Popen`` to that answer. A second child then times the start-up stages
one by one (imports, model load, first prediction, page build) to show where the time goes.
Target (issue 5): <= 8 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from benchmarks._common import EXAMPLE, QUIET_ENV, ROOT, AppServer, analyze, check, print_header, summarize

# Run in a fresh interpreter in the repository root: each stage's wall time, in app.py's order.
STAGES = f"""
import json, time
t = [time.perf_counter()]
import gradio
t.append(time.perf_counter())
import app
t.append(time.perf_counter())
from pneumonia import Predictor
predictor = Predictor.load()
t.append(time.perf_counter())
predictor.predict({str(EXAMPLE)!r}, explain=True)
t.append(time.perf_counter())
app.build_demo(predictor)
t.append(time.perf_counter())
import sys
names = ["import gradio", "import app (page, notes)",
         "Predictor.load()" + ("" if "tensorflow" in sys.modules else " (LiteRT; TensorFlow not imported)"),
         "first predict(explain=True)", "build_demo()"]
print(json.dumps(dict(zip(names, [b - a for a, b in zip(t, t[1:])]))))
"""


def measure_once() -> dict:
    """Seconds from spawning ``python app.py`` to: server up, client connected, first answer."""
    with AppServer() as server:
        up = server.wait_until_up()
        client = server.client()
        connected = time.perf_counter() - server.started
        analyze(client)
        answered = time.perf_counter() - server.started
        return {"up": up, "connected": connected, "answered": answered, "rss_mb": server.rss_mb()[0]}


def measure_stages() -> dict:
    """Wall time of each start-up stage in a fresh interpreter."""
    import os

    out = subprocess.run([sys.executable, "-c", STAGES], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **QUIET_ENV}, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh starts to time")
    args = parser.parse_args(argv)

    print_header("cold start")
    runs = []
    for i in range(args.runs):
        run = measure_once()
        runs.append(run)
        print(f"  run {i + 1}: server up {run['up']:5.2f} s, client connected {run['connected']:5.2f} s, "
              f"first answer {run['answered']:5.2f} s (app RSS then {run['rss_mb']:.0f} MB)")
    answered = summarize([r["answered"] for r in runs])
    print("start-up stages in a fresh interpreter:")
    for name, seconds in measure_stages().items():
        print(f"  {name:<32} {seconds:6.2f} s")
    print(check("cold start to first answer (median)", answered.median, 8.0, " s"))
    return {"cold_start_s": answered.median, "cold_start_max_s": max(r["answered"] for r in runs),
            "server_up_s": summarize([r["up"] for r in runs]).median}


if __name__ == "__main__":
    main()
