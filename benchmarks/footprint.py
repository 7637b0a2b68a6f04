"""Footprint: the app's memory over 100 requests, the model's size, the run-time dependencies' size.

    python -m benchmarks.footprint [--requests 100] [--sessions 10]

1. ``python app.py`` on a free loopback port; ``--requests`` analyses through ``gradio_client``
   from ``--sessions`` clients (each its own session, so per-session state accumulates as with
   real users), two at a time (the app's concurrency limit). The app's resident set size is
   read from ``/proc`` after start-up, after warm-up and after every tenth of the requests, and
   its peak (``VmHWM``) at the end. "Flat" means the last half of the requests grew RSS by
   less than 5 %.
2. The model folder's files.
3. Everything ``requirements.txt`` pulls in at run time (its transitive closure, as installed
   here), and for each requirement which run-time module imports it.

Target (issue 5): app RSS after 100 requests <= 1.0 GB, and flat.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata as metadata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks._common import EXAMPLES, ROOT, AppServer, analyze, check, print_header

RUNTIME_CODE = [ROOT / "app.py", *sorted((ROOT / "pneumonia").glob("*.py"))]
# Imported by pydicom through its plugin entry points, never by name.
PLUGINS = {"pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg"}


def measure_memory(requests: int, sessions: int) -> dict:
    """RSS (MB) of the app after start-up, warm-up and each tenth of ``requests``."""
    with AppServer() as server:
        server.wait_until_up(timeout=300)
        samples = [("started", server.rss_mb()[0])]
        clients = [server.client() for _ in range(sessions)]
        analyze(clients[0])
        samples.append(("1 request", server.rss_mb()[0]))
        step = max(1, requests // 10)
        done = 0
        with ThreadPoolExecutor(max_workers=2) as pool:
            while done < requests:
                count = min(step, requests - done)
                jobs = [pool.submit(analyze, clients[(done + i) % sessions], EXAMPLES[(done + i) % len(EXAMPLES)])
                        for i in range(count)]
                for job in jobs:
                    job.result()
                done += count
                samples.append((f"{done} requests", server.rss_mb()[0]))
        current, peak = server.rss_mb()
    return {"samples": samples, "final_mb": current, "peak_mb": peak}


def requirement_closure(path: Path = ROOT / "requirements.txt") -> tuple[list[str], dict[str, set[str]]]:
    """Top-level requirement names, and every installed distribution they pull in (by name)."""
    from packaging.requirements import Requirement

    top = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            top.append(requirement.name)
    closure: dict[str, set[str]] = {}
    pending = list(top)
    while pending:
        name = pending.pop()
        key = _canonical(name)
        if key in closure:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            closure[key] = set()
            continue
        closure[key] = set()
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                closure[key].add(_canonical(requirement.name))
                pending.append(requirement.name)
    return top, closure


def installed_mb(name: str) -> float:
    """Size on disk of an installed distribution's files, in MB."""
    try:
        files = metadata.distribution(name).files or []
    except metadata.PackageNotFoundError:
        return 0.0
    total = 0
    for file in files:
        try:
            total += file.locate().stat().st_size
        except OSError:
            pass
    return total / 1e6


def importers(requirement: str) -> list[str]:
    """Run-time modules (``app.py``, ``pneumonia/*.py``) that import ``requirement`` by name."""
    modules = {module for module, dists in metadata.packages_distributions().items()
               if _canonical(requirement) in {_canonical(d) for d in dists}}
    users = []
    for path in RUNTIME_CODE:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split(".")[0] in modules for name in names):
                users.append(path.relative_to(ROOT).as_posix())
                break
    return users


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="analyses to send (at most 500)")
    parser.add_argument("--sessions", type=int, default=10, help="clients (sessions) sending them")
    args = parser.parse_args(argv)
    if not 10 <= args.requests <= 500 or not 1 <= args.sessions <= 50:
        parser.error("keep it bounded: 10-500 requests, 1-50 sessions")

    print_header("footprint")
    memory = measure_memory(args.requests, args.sessions)
    print(f"app RSS over {args.requests} requests from {args.sessions} sessions (MB):")
    print("  " + ", ".join(f"{label} {mb:.0f}" for label, mb in memory["samples"]))
    tail = [mb for _, mb in memory["samples"][2:]]
    half = tail[len(tail) // 2]
    growth = (tail[-1] - half) / half
    counts = np.arange(1, len(tail) + 1) * max(1, args.requests // 10)
    slope = float(np.polyfit(counts, tail, 1)[0]) if len(tail) > 1 else 0.0
    print(f"  peak (VmHWM) {memory['peak_mb']:.0f} MB; last half of the requests: {growth:+.1%}; "
          f"fitted slope {slope:+.2f} MB/request -> {'flat' if abs(growth) < 0.05 else 'NOT flat'}")

    from pneumonia.model import resolve_model_dir

    model_dir = resolve_model_dir()
    files = {p.name: p.stat().st_size / 1e6 for p in sorted(model_dir.iterdir()) if p.is_file()}
    print(f"model folder {model_dir}: " + ", ".join(f"{name} {mb:.2f} MB" for name, mb in files.items())
          + f"; total {sum(files.values()):.2f} MB")

    top, closure = requirement_closure()
    sizes = {name: installed_mb(name) for name in closure}
    print(f"run-time dependencies: {len(top)} requirements, {len(closure)} distributions installed, "
          f"{sum(sizes.values()):.0f} MB on disk")
    for name, mb in sorted(sizes.items(), key=lambda item: -item[1])[:8]:
        print(f"  {name:<28} {mb:8.1f} MB")
    print("requirements.txt, and the run-time code that imports each:")
    for name in top:
        users = importers(name)
        note = ", ".join(users) if users else ("loaded by pydicom as a plugin" if name in PLUGINS else "UNUSED?")
        print(f"  {name:<28} {note}")
    print(check("app RSS after the requests (peak)", memory["peak_mb"] / 1024, 1.0, " GB"))
    return {"rss_final_mb": memory["final_mb"], "rss_peak_mb": memory["peak_mb"], "rss_growth_last_half": growth,
            "model_mb": sum(files.values()), "deps_mb": sum(sizes.values())}


if __name__ == "__main__":
    main()
