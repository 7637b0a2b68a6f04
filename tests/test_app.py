"""The app over HTTP: gradio_client round trips, the UNKNOWN outcome, errors and a full queue.

Each app is launched in this process on a free loopback port and closed at the end.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import app

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(predictor, temp_dir: Path, queue: dict | None = None):
    """Build the app over ``predictor``, serve it on loopback, yield its URL, then close it."""
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(temp_dir)  # read when the components are built
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = app.build_demo(predictor)
    if queue:
        demo.queue(**queue)
    try:
        demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                    **app.launch_options())
        yield demo.local_url
    finally:
        demo.close()
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous


@pytest.fixture(scope="module")
def url(predictor, tmp_path_factory):
    with serve(predictor, tmp_path_factory.mktemp("gradio")) as local_url:
        yield local_url


@pytest.fixture(scope="module")
def client(url):
    return Client(url, verbose=False)


def confidences_of(label_output: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label_output.get("confidences") or []}


def test_predict_endpoint_is_named_and_takes_the_file_first(client):
    info = client.view_api(print_info=False, return_format="dict")
    endpoint = info["named_endpoints"]["/predict"]
    first, second = endpoint["parameters"][:2]
    assert first["component"] == "File" and not first["parameter_has_default"]
    assert second["component"] == "Slider" and second["parameter_default"] == pytest.approx(0.4)
    assert [r["component"] for r in endpoint["returns"][:3]] == ["Label", "Image", "Json"]
    # Only the analysis is an API; preview and overlay re-rendering are page-only events.
    assert list(info["named_endpoints"]) == ["/predict"]


def test_every_example_round_trips_like_the_library(client, predictor, example_paths):
    assert example_paths, "no bundled examples"
    for path in example_paths:
        label_output, overlay_path, verdict, *_ = client.predict(handle_file(str(path)), api_name="/predict")
        expected = predictor.predict(path)
        assert verdict["label"] == expected.label, path.name
        assert verdict["threshold"] == pytest.approx(expected.threshold)
        assert verdict["pneumonia_probability"] == pytest.approx(expected.pneumonia_probability, abs=1e-4)
        got = confidences_of(label_output)
        assert set(got) == set(expected.probabilities)
        for name, p in expected.probabilities.items():
            assert got[name] == pytest.approx(p, abs=1e-4), (path.name, name)
        with Image.open(overlay_path) as overlay:
            assert overlay.mode == "RGB" and max(overlay.size) <= app.OVERLAY_MAX_SIDE


def test_overlay_opacity_is_honoured(client, predictor, example_paths):
    # A film whose heatmap has a peak (an all-zero map tints nothing at any opacity).
    film = next(p for p in example_paths if predictor.predict(p, explain=True).heatmap.max() > 0.5)
    path = handle_file(str(film))
    plain = client.predict(path, 0.0, api_name="/predict")[1]
    tinted = client.predict(path, 1.0, api_name="/predict")[1]
    with Image.open(plain) as a, Image.open(tinted) as b:
        a, b = np.asarray(a.convert("RGB"), dtype=np.int16), np.asarray(b.convert("RGB"), dtype=np.int16)
    # At opacity 0 the overlay is the grey film itself; at 1 the heatmap colours it.
    assert np.abs(a[..., 0] - a[..., 2]).mean() < 3
    assert np.abs(b - a).mean() > 3


def test_verdict_banner_states_probability_and_threshold(client, predictor, example_paths):
    _, _, _, banner, notes, *_ = client.predict(handle_file(str(example_paths[-1])), api_name="/predict")
    expected = predictor.predict(example_paths[-1])
    assert f'class="verdict {expected.label.lower()}"' in banner
    assert f"{expected.pneumonia_probability:.1%}" in banner and f"{expected.threshold:.1%}" in banner
    assert notes == app.FINDINGS[expected.label]


def test_unreadable_upload_is_refused_in_words(client, tmp_path):
    bad = tmp_path / "film.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(Exception) as info:
        client.predict(handle_file(str(bad)), api_name="/predict")
    message = str(info.value)
    assert "Traceback" not in message and "not an image format" in message


class _FixedPredictor:
    """Wraps a predictor and answers every film with ``label`` (to exercise the UNKNOWN path)."""

    def __init__(self, inner, label: str):
        self.inner, self.label = inner, label
        self.metadata, self.class_names = inner.metadata, inner.class_names

    def predict(self, image, **kwargs):
        from pneumonia.inference import Prediction

        result = self.inner.predict(image)
        return Prediction(label=self.label, probabilities=result.probabilities, threshold=result.threshold,
                          logit=result.logit, image=result.image)


def test_unknown_is_not_presented_as_a_diagnosis(predictor, example_paths, tmp_path):
    with serve(_FixedPredictor(predictor, "UNKNOWN"), tmp_path) as local_url:
        label_output, overlay, verdict, banner, notes, *_ = Client(local_url, verbose=False).predict(
            handle_file(str(example_paths[0])), api_name="/predict")
    assert label_output["label"] == "UNKNOWN" and not confidences_of(label_output)
    assert verdict["label"] == "UNKNOWN" and verdict["pneumonia_probability"] is None
    assert overlay is None
    assert 'class="verdict unknown"' in banner and "%" not in banner
    assert notes == app.FINDINGS["UNKNOWN"]


class _GatedPredictor:
    """Holds every ``predict`` call until ``release`` is set, so the queue can be filled."""

    def __init__(self, inner):
        self.inner, self.release, self.entered = inner, threading.Event(), threading.Semaphore(0)
        self.metadata, self.class_names = inner.metadata, inner.class_names

    def predict(self, image, **kwargs):
        self.entered.release()
        self.release.wait(60)
        return self.inner.predict(image, **kwargs)


def test_full_queue_says_busy_instead_of_hanging(predictor, example_paths, tmp_path):
    from gradio_client.utils import QueueError

    gated = _GatedPredictor(predictor)
    film = handle_file(str(example_paths[0]))
    with serve(gated, tmp_path, queue={"max_size": 1, "default_concurrency_limit": 1}) as local_url:
        client = Client(local_url, verbose=False)
        running = client.submit(film, api_name="/predict")
        assert gated.entered.acquire(timeout=60), "first request never started"
        waiting = client.submit(film, api_name="/predict")
        try:
            # The worker is busy and the one queue slot is taken: the next user is turned away.
            pause = threading.Event()
            for _ in range(600):
                if waiting.status().code.name in ("IN_QUEUE", "PROCESSING"):
                    break
                pause.wait(0.1)
            with pytest.raises(QueueError, match="(?i)queue is full.*try again"):
                client.predict(film, api_name="/predict")
        finally:
            gated.release.set()
        assert running.result(timeout=120)[2]["label"] in predictor.class_names
        assert waiting.result(timeout=120)[2]["label"] in predictor.class_names
