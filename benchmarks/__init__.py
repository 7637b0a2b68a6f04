"""Performance benchmarks (not run by the test suite; see docs/performance.md).

Run from the repository root, one at a time, on an otherwise idle machine:

    python -m benchmarks.latency      # single image: ours vs a seed-style reference CNN
    python -m benchmarks.cold_start   # `python app.py` until the first answer
    python -m benchmarks.roundtrip    # through the app with gradio_client: 1 and 8 users
    python -m benchmarks.batch        # `python -m pneumonia predict` on the test split
    python -m benchmarks.footprint    # app RSS over 100 requests, model and dependency sizes
    python -m benchmarks.cost_model   # multiply-adds per image vs this CPU's matmul throughput

Every script talks to its own app on a free loopback port, bounds its requests and run time,
and prints its figures next to the targets of issue 5.
"""
