"""Through the app: one `gradio_client` user, then 8 concurrent users, against `python app.py`.

    python -m benchmarks.roundtrip [--single 30] [--users 8] [--requests 10]

Starts its own app on a free loopback port, sends warm-up requests, then times whole analyses as a
client sees them: upload, queueing, prediction with Grad-CAM, the overlay encoded and downloaded.
The users are :func:`benchmarks.load.run_user` (the load test's own user loop, reused as is), each
with its own client and session, cycling through the bundled example films. Bounded: at most
``single + users x requests`` analyses and no new request after ``--time-limit`` seconds.
The clients run on the same two cores as the app, so their own work is in the figures too; the
CPU time each side spends per request is printed, which bounds the requests/s two cores allow.

Targets (issue 5): one user median <= 0.4 s; 8 users >= 5 requests/s with p95 <= 3 s.
"""

from __future__ import annotations

import argparse
import collections
import os
import threading
import time
from pathlib import Path

from benchmarks import load
from benchmarks._common import AppServer, analyze, check, cpu_seconds, print_header, summarize

REQUEST_TIMEOUT_S = 120.0


def run_users(server: AppServer, downloads: str, users: int, requests: int, time_limit: float) -> dict:
    """``users`` concurrent users of ``requests`` analyses each: latencies, errors, wall time, and
    the CPU seconds the app and this process (the clients) spent meanwhile."""
    url = server.url
    app_cpu, own_cpu = server.cpu_seconds(), cpu_seconds(os.getpid())
    latencies: list[float] = []
    errors: collections.Counter = collections.Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit
    threads = [threading.Thread(target=load.run_user, daemon=True, name=f"user-{i}",
                                args=(url, downloads, requests, deadline, REQUEST_TIMEOUT_S, i, latencies,
                                      errors, lock))
               for i in range(users)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(time_limit + REQUEST_TIMEOUT_S + 30)
    return {"latencies": latencies, "errors": errors, "wall": time.perf_counter() - start,
            "app_cpu": server.cpu_seconds() - app_cpu, "client_cpu": cpu_seconds(os.getpid()) - own_cpu}


def report(name: str, run: dict) -> dict:
    stats = summarize(run["latencies"]) if run["latencies"] else None
    rate = len(run["latencies"]) / run["wall"]
    errors = ", ".join(f"{kind} x {count}" for kind, count in run["errors"].items()) or "none"
    if stats:
        done = len(run["latencies"])
        print(f"  {name:<10} {stats.ms()}, {rate:5.2f} requests/s, errors: {errors}; CPU per request: "
              f"app {run['app_cpu'] / done * 1e3:.0f} ms, clients {run['client_cpu'] / done * 1e3:.0f} ms")
    return {"median_s": stats.median if stats else float("nan"), "p95_s": stats.p95 if stats else float("nan"),
            "rate": rate, "errors": sum(run["errors"].values())}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--single", type=int, default=30, help="sequential requests of the single user")
    parser.add_argument("--users", type=int, default=8, help="concurrent users")
    parser.add_argument("--requests", type=int, default=10, help="requests per concurrent user")
    parser.add_argument("--time-limit", type=float, default=300.0, help="no new request after this many s")
    args = parser.parse_args(argv)
    if not (1 <= args.single <= 500 and 1 <= args.users <= 32 and 1 <= args.requests <= 100):
        parser.error("keep it bounded: single <= 500, users <= 32, requests <= 100")

    print_header("round trip through the app (gradio_client, loopback)")
    with AppServer() as server:
        print(f"app up in {server.wait_until_up(timeout=300):.1f} s at {server.url}")
        downloads = str(Path(server.workdir) / "downloads")
        warm = server.client()
        for _ in range(3):
            analyze(warm)
        single = report("1 user", run_users(server, downloads, 1, args.single, args.time_limit))
        many = report(f"{args.users} users", run_users(server, downloads, args.users, args.requests,
                                                         args.time_limit))
        rss, peak = server.rss_mb()
        print(f"app RSS {rss:.0f} MB (peak {peak:.0f} MB)")
    print(check("1 user: median round trip", single["median_s"], 0.4, " s"))
    print(check(f"{args.users} users: requests/s", many["rate"], 5.0, "/s", higher_is_better=True))
    print(check(f"{args.users} users: p95 round trip", many["p95_s"], 3.0, " s"))
    return {"single_median_s": single["median_s"], "single_p95_s": single["p95_s"],
            "single_rate": single["rate"], "users": args.users, "many_median_s": many["median_s"],
            "many_p95_s": many["p95_s"], "many_rate": many["rate"], "errors": single["errors"] + many["errors"]}


if __name__ == "__main__":
    main()
