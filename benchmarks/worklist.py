"""Worklist speed and load through ``/predict_batch`` against ``python app.py`` on loopback.

    python -m benchmarks.worklist                  # all three parts
    python -m benchmarks.worklist --films 100 --rounds 3 --users 8 --per-user 20

1. Films/s end to end: one client sends N Kermany test films (``../shared/data/chest_xray/test``,
   every k-th of the sorted list, both classes) in one ``/predict_batch`` request: upload, reading,
   network, sorting, the table and the CSV download. Median of rounds, after a warm-up request.
2. Load: U users (each its own client and session) each send one request of F films at once, in
   three waves (two through ``gradio_client``, one uploading each user's files in one request as
   the page does); errors, latency per request, and the server's resident memory after each wave
   (flat: no growth from the first wave to the last).
3. Single-film latency (``/predict``, the bundled examples) on an idle app and while worklists of N
   films run back to back: the worklist has its own queue, so single films only share the CPU.

Prints the figures and the targets (issue 20: >= 40 films/s; no error, memory flat under 8 x 20).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from benchmarks._common import EXAMPLES, TEST_DIR, AppServer, analyze, check, print_header, summarize

TARGET_FILMS_PER_S = 40.0
MAX_WAVE_GROWTH_MB = 50.0  # "flat": a second identical wave may not add more than this


def pick_films(count: int) -> list:
    """Every k-th film of the sorted test split (NORMAL and PNEUMONIA both), ``count`` in all."""
    films = sorted(p for p in TEST_DIR.rglob("*.jpeg") if not p.name.startswith("."))
    if len(films) < count:
        raise SystemExit(f"need {count} films under {TEST_DIR}, found {len(films)} (set PNEUMONIA_DATA)")
    step = len(films) // count
    return films[::step][:count]


def send_batch(client, films, expected_rows: int | None = None) -> tuple[float, int]:
    """One ``/predict_batch`` request: ``(seconds, rows)``; raises on an error reply or a row count
    other than ``expected_rows`` (default: one per file)."""
    from gradio_client import handle_file

    start = time.perf_counter()
    table, csv_path = client.predict([handle_file(str(p)) for p in films], False, api_name="/predict_batch")
    elapsed = time.perf_counter() - start
    rows = len(table["data"])
    if rows != (expected_rows or len(films)) or not csv_path:
        raise RuntimeError(f"{rows} rows for {len(films)} films")
    return elapsed, rows


def send_zip(client, films, folder) -> tuple[float, int]:
    """The films zipped by the client (stored, no compression: JPEGs do not shrink) and sent as one
    archive: ``(seconds including the zipping, rows)``."""
    import zipfile

    start = time.perf_counter()
    archive = folder / "films.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as handle:
        for film in films:
            handle.write(film, f"{film.parent.name}/{film.name}")
    _, rows = send_batch(client, [archive], expected_rows=len(films))
    return time.perf_counter() - start, rows


def send_as_browser(url: str, films) -> tuple[float, int]:
    """As the page sends a multi-file drop: every file in one upload request, then
    ``/predict_batch`` over Gradio's REST API (``/gradio_api/call``), then the CSV downloaded, on one
    keep-alive connection: ``(seconds, rows)``."""
    import json

    import httpx

    start = time.perf_counter()
    with httpx.Client(timeout=600) as http:
        stored = http.post(f"{url}/gradio_api/upload",
                           files=[("files", (film.name, film.read_bytes())) for film in films]).json()
        data = [{"path": path, "orig_name": film.name, "meta": {"_type": "gradio.FileData"}}
                for path, film in zip(stored, films)]
        event = http.post(f"{url}/gradio_api/call/predict_batch", json={"data": [data, False]}).json()["event_id"]
        reply, kind = None, None
        with http.stream("GET", f"{url}/gradio_api/call/predict_batch/{event}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind in ("complete", "error"):
                    reply = json.loads(line.split(":", 1)[1])
                    break
        if kind != "complete":
            raise RuntimeError(f"/predict_batch answered {kind}: {reply}")
        table, csv_file = reply
        http.get(f"{url}/gradio_api/file={csv_file['path']}").raise_for_status()
    rows = len(table["data"])
    if rows != len(films):
        raise RuntimeError(f"{rows} rows for {len(films)} films")
    return time.perf_counter() - start, rows


def measure_throughput(server, films, rounds: int) -> float:
    client = server.client()
    send_batch(client, EXAMPLES)  # warm-up: traces the network, imports the image libraries
    times = [send_batch(client, films)[0] for _ in range(rounds)]
    stats = summarize(times)
    rate = len(films) / stats.median
    print(f"\n1. {len(films)} films in one /predict_batch request: median {stats.median:.2f} s "
          f"(min {stats.minimum:.2f} s, n={rounds}) -> {rate:.1f} films/s end to end")
    print("   (gradio_client uploads each file in an HTTP request of its own, on a new connection)")
    zipped = summarize([send_zip(client, films, server.workdir)[0] for _ in range(rounds)])
    zip_rate = len(films) / zipped.median
    print(f"   the same {len(films)} films as one .zip (zipped by the client, timed): median {zipped.median:.2f} s "
          f"-> {zip_rate:.1f} films/s end to end")
    browser = summarize([send_as_browser(server.url, films)[0] for _ in range(rounds)])
    browser_rate = len(films) / browser.median
    print(f"   the same {len(films)} files uploaded in one request, as the page does, then /predict_batch and the "
          f"CSV: median {browser.median:.2f} s -> {browser_rate:.1f} films/s end to end")
    print(check("films/s end to end, gradio_client files", rate, TARGET_FILMS_PER_S, higher_is_better=True))
    print(check("films/s end to end, one .zip", zip_rate, TARGET_FILMS_PER_S, higher_is_better=True))
    print(check("films/s end to end, one upload request", browser_rate, TARGET_FILMS_PER_S, higher_is_better=True))
    rate = max(rate, zip_rate, browser_rate)
    inner = in_process_rate(films, rounds)
    print(f"   same films in this process (worklist.run_worklist: reading, network, sorting; no HTTP): "
          f"{inner:.1f} films/s; the endpoint keeps {rate / inner:.0%} of it")
    return rate


def in_process_rate(films, rounds: int) -> float:
    """Films/s of :func:`pneumonia.worklist.run_worklist` in this process, median of rounds."""
    from pneumonia import Predictor, worklist

    predictor = Predictor.load()
    named = [(p.name, p) for p in films]
    worklist.run_worklist(predictor, named[:12])
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        worklist.run_worklist(predictor, named)
        times.append(time.perf_counter() - start)
    return len(films) / summarize(times).median


def run_wave(server, films, users: int, per_user: int, as_browser: bool = False) -> tuple[list, list]:
    """``users`` concurrent requests of ``per_user`` films each: ``(latencies, errors)``. Each user
    sends through ``gradio_client`` (one upload per file), or ``as_browser`` (one upload request)."""
    latencies, errors, lock = [], [], threading.Lock()

    def user(i: int) -> None:
        chosen = [films[(i * per_user + j) % len(films)] for j in range(per_user)]
        try:
            if as_browser:
                elapsed, _ = send_as_browser(server.url, chosen)
            else:
                elapsed, _ = send_batch(server.client(), chosen)
            with lock:
                latencies.append(elapsed)
        except Exception as exc:  # counted, never raised: the point is to see them
            with lock:
                errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(900)
    return latencies, errors


def measure_load(server, films, users: int, per_user: int) -> bool:
    """Two waves through gradio_client, then one as the page sends files; errors and memory."""
    total = users * per_user
    before = server.rss_mb()[0]
    print(f"\n2. load: {users} users x {per_user} films at once")
    ok = True
    rss = [before]
    for wave, as_browser in ((1, False), (2, False), (3, True)):
        start = time.perf_counter()
        latencies, errors = run_wave(server, films, users, per_user, as_browser)
        wall = time.perf_counter() - start
        rss.append(server.rss_mb()[0])
        stats = summarize(latencies) if latencies else None
        how = "one upload request each, as the page" if as_browser else "gradio_client"
        print(f"   wave {wave} ({how}): {len(latencies)}/{users} requests answered, {len(errors)} errors, "
              f"wall {wall:.1f} s, {total / wall:.1f} films/s"
              + (f", request p50 {stats.median:.1f} s, p95 {stats.p95:.1f} s" if stats else ""))
        for error in errors:
            print(f"   error: {error}")
        ok = ok and not errors
    peak = server.rss_mb()[1]
    print(f"   server RSS before {before:.0f} MB, after each wave " + " / ".join(f"{r:.0f}" for r in rss[1:])
          + f" MB, peak {peak:.0f} MB")
    print(check("errors", 0 if ok else 1, 0))
    print(check("RSS growth from wave 1 to wave 3", rss[-1] - rss[1], MAX_WAVE_GROWTH_MB, " MB"))
    return ok and rss[-1] - rss[1] <= MAX_WAVE_GROWTH_MB


def measure_single_beside_worklist(server, films, samples: int) -> None:
    client = server.client()
    analyze(client)  # warm
    idle = [time_one(client, EXAMPLES[i % len(EXAMPLES)]) for i in range(samples)]
    stop = threading.Event()
    batches = []

    def worklists() -> None:
        other = server.client()
        while not stop.is_set():
            batches.append(send_batch(other, films)[0])

    runner = threading.Thread(target=worklists, daemon=True)
    runner.start()
    time.sleep(1.0)  # the first worklist is under way
    busy = [time_one(client, EXAMPLES[i % len(EXAMPLES)]) for i in range(samples)]
    stop.set()
    runner.join(600)
    a, b = summarize(idle), summarize(busy)
    print(f"\n3. single film (/predict with Grad-CAM, round trip), n={samples} each")
    print(f"   idle:                      p50 {a.median:.2f} s, p95 {a.p95:.2f} s")
    print(f"   while worklists of {len(films)} run: p50 {b.median:.2f} s, p95 {b.p95:.2f} s "
          f"({len(batches)} worklists finished meanwhile"
          + (f", {len(films) / summarize(batches).median:.1f} films/s" if batches else "") + ")")


def time_one(client, film) -> float:
    start = time.perf_counter()
    analyze(client, film)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--films", type=int, default=100, help="films per throughput request (default 100)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--per-user", type=int, default=20)
    parser.add_argument("--samples", type=int, default=12, help="single-film requests per condition")
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "load", "single"])
    args = parser.parse_args(argv)
    if not 1 <= args.films <= 500 or not 1 <= args.users <= 32 or not 1 <= args.per_user <= 100:
        parser.error("keep it bounded: 1-500 films, 1-32 users, 1-100 films each")
    films = pick_films(max(args.films, args.per_user))
    print_header(f"worklist: {args.films} films, load {args.users} x {args.per_user}")
    ok = True
    with AppServer() as server:
        print(f"app up in {server.wait_until_up():.1f} s at {server.url}")
        if "throughput" not in args.skip:
            ok = measure_throughput(server, films[:args.films], args.rounds) >= TARGET_FILMS_PER_S
        if "load" not in args.skip:
            ok = measure_load(server, films, args.users, args.per_user) and ok
        if "single" not in args.skip:
            measure_single_beside_worklist(server, films[:args.films], args.samples)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
