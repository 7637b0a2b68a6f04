"""Load: N concurrent gradio_client users, M analyses each, against ``python app.py`` on loopback.

    python -m benchmarks.load                      # 8 users x 10 requests (issue 7's targets)
    python -m benchmarks.load --users 40 --requests 1   # a burst past the queue: "busy" refusals

Starts its own app on a free loopback port (or uses ``--url``, which must be a loopback address),
sends one warm-up request, then lets every user (its own client and session) analyse the bundled
example films in turn. Bounded: ``users x requests`` analyses at most, and no new request after
``--time-limit`` seconds. Prints throughput, p50/p95 latency, errors by kind (a full queue is
reported as "busy") and the server's resident memory before and after; exits 1 if a target of
issue 7 (no errors, memory growth under 150 MB) is missed.
"""

from __future__ import annotations

import argparse
import collections
import ipaddress
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from benchmarks._common import ROOT, AppServer, check, make_client, print_header, summarize

MAX_GROWTH_MB = 150.0
EXAMPLES = sorted((ROOT / "examples").glob("*/*.jpeg"))


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def classify(exc: BaseException) -> str:
    """A short name for a failed request: "busy" when the queue turned it away."""
    from gradio_client.utils import QueueError

    if isinstance(exc, QueueError) or "queue is full" in str(exc).lower():
        return "busy (queue full)"
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "TimeoutError":
        return "timeout"
    return type(exc).__name__


def run_user(url: str, downloads: str, requests: int, deadline: float, request_timeout: float, offset: int,
             latencies: list, errors: collections.Counter, lock: threading.Lock) -> None:
    """One user: its own client (session), ``requests`` analyses one after another."""
    from gradio_client import handle_file

    try:
        client = make_client(url, downloads)
    except Exception as exc:  # a user who cannot even connect counts as one error per request
        with lock:
            errors[f"connect: {type(exc).__name__}"] += requests
        return
    for i in range(requests):
        if time.monotonic() > deadline:
            with lock:
                errors["not sent (time limit)"] += requests - i
            return
        film = EXAMPLES[(offset + i) % len(EXAMPLES)]
        start = time.perf_counter()
        try:
            job = client.submit(handle_file(str(film)), api_name="/predict")
            verdict = job.result(timeout=request_timeout)[2]
            if not isinstance(verdict, dict) or "label" not in verdict:
                raise ValueError("reply without a verdict")
        except Exception as exc:
            with lock:
                errors[classify(exc)] += 1
            continue
        with lock:
            latencies.append(time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=8, help="concurrent users (default 8)")
    parser.add_argument("--requests", type=int, default=10, help="analyses per user (default 10)")
    parser.add_argument("--time-limit", type=float, default=900.0, help="no new request after this many s")
    parser.add_argument("--request-timeout", type=float, default=300.0, help="give up on one request after s")
    parser.add_argument("--url", help="an app already running on loopback (default: start one)")
    args = parser.parse_args(argv)
    if not 1 <= args.users <= 64 or not 1 <= args.requests <= 1000:
        parser.error("keep it bounded: 1-64 users and 1-1000 requests each")
    if args.url and not is_loopback(args.url):
        parser.error("--url must be a loopback address (127.0.0.1, ::1 or localhost)")

    from gradio_client import handle_file

    print_header(f"load: {args.users} users x {args.requests} requests")
    server = None if args.url else AppServer().start()
    try:
        url = args.url or server.url
        if server:
            print(f"app up in {server.wait_until_up(timeout=300):.1f} s at {url}")
        workdir = server.workdir if server else tempfile.mkdtemp(prefix="pneumonia-load-")
        downloads = str(Path(workdir) / "downloads")
        make_client(url, downloads).predict(handle_file(str(EXAMPLES[0])), api_name="/predict")  # warm-up
        before = server.rss_mb()[0] if server else None

        latencies: list[float] = []
        errors: collections.Counter = collections.Counter()
        lock = threading.Lock()
        deadline = time.monotonic() + args.time_limit
        users = [threading.Thread(target=run_user, args=(url, downloads, args.requests, deadline,
                                                         args.request_timeout, i, latencies, errors, lock),
                                  name=f"user-{i}", daemon=True) for i in range(args.users)]
        start = time.perf_counter()
        for user in users:
            user.start()
        for user in users:
            user.join(args.time_limit + args.request_timeout + 60)
        wall = time.perf_counter() - start
        after, peak = server.rss_mb() if server else (None, None)
    finally:
        if server:
            server.close()

    total = args.users * args.requests
    n_errors = sum(errors.values())
    print(f"requests {total}: {len(latencies)} answered, {n_errors} errors, wall {wall:.1f} s")
    print(f"throughput {len(latencies) / wall:.2f} analyses/s")
    if latencies:
        stats = summarize(latencies)
        print(f"latency p50 {stats.median:.2f} s, p95 {stats.p95:.2f} s, min {stats.minimum:.2f} s "
              f"(each includes upload, queueing, Grad-CAM and the overlay download)")
    for kind, count in errors.most_common():
        print(f"  error: {kind} x {count}")
    met = n_errors == 0
    print(check("errors", n_errors, 0))
    if before is not None:
        growth = after - before
        print(f"server RSS before {before:.0f} MB, after {after:.0f} MB, peak {peak:.0f} MB")
        print(check("RSS growth", growth, MAX_GROWTH_MB, " MB"))
        met = met and growth <= MAX_GROWTH_MB
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
