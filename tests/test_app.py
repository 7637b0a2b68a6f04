"""The app over HTTP: gradio_client round trips, the UNKNOWN outcome, errors and a full queue;
and the page's verdict banner as HTML.

Each app is launched in this process on a free loopback port and closed at the end (the real
``python app.py`` process is tests/test_security.py's and tests/test_browser.py's).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import app
from pneumonia import ui
from pneumonia.notes import UNKNOWN_TEXT, describe_verdict
from pneumonia.serving import free_port

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402


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


def test_predict_endpoint_is_named_and_returns_only_named_outputs(client):
    info = client.view_api(print_info=False, return_format="dict")
    endpoint = info["named_endpoints"]["/predict"]
    film, alpha = endpoint["parameters"]
    assert (film["parameter_name"], film["component"], film["parameter_has_default"]) == ("film", "File", False)
    assert (alpha["parameter_name"], alpha["component"]) == ("alpha", "Slider")
    assert alpha["parameter_default"] == pytest.approx(0.4)
    returns = [(r["label"], r["component"]) for r in endpoint["returns"]]
    assert returns == [("Calibrated confidence", "Label"), ("Grad-CAM evidence map", "Image"), ("Verdict", "Json")]
    # Only the analyses are APIs: the page's own events (preview, banner, notes, redraws, worklist) are not.
    assert list(info["named_endpoints"]) == ["/predict", "/predict_batch"] and not info["unnamed_endpoints"]
    batch = info["named_endpoints"]["/predict_batch"]
    assert [(p["parameter_name"], p["component"]) for p in batch["parameters"]] == [("films", "File"),
                                                                                    ("numbered", "Checkbox")]
    assert [r["component"] for r in batch["returns"]] == ["Dataframe", "File"]
    assert "to_dict" in endpoint["description"]


def test_every_example_round_trips_like_the_library(client, predictor, example_paths):
    assert example_paths, "no bundled examples"
    for path in example_paths:
        label_output, overlay_path, verdict = client.predict(handle_file(str(path)), api_name="/predict")
        expected = predictor.predict(path)
        assert verdict == expected.to_dict(), path.name  # one verdict contract: exactly the library's
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


def test_verdict_banner_states_probability_and_threshold(predictor, example_paths):
    verdict = predictor.predict(example_paths[-1]).to_dict()
    banner = ui.verdict_html(verdict)
    assert 'class="verdict {}"'.format(verdict["label"].lower()) in banner
    assert f"{verdict['pneumonia_probability']:.1%}" in banner and f"{verdict['threshold']:.1%}" in banner
    assert "age group" not in banner


@pytest.mark.parametrize("verdict, expected", [
    ({"label": "PNEUMONIA", "pneumonia_probability": 0.9731, "threshold": 0.382324, "population": "child",
      "population_source": "estimated from the image"},
     "Calibrated probability of pneumonia 97.3%, at or above the operating threshold for children's films of 38.2% "
     "(population estimated from the image): the answer is PNEUMONIA."),
    ({"label": "NORMAL", "pneumonia_probability": 0.2, "threshold": 0.333316, "population": "adult",
      "population_source": "DICOM patient age", "age_group": "18-64 years"},
     "Calibrated probability of pneumonia 20.0%, below the operating threshold for adults' films of 33.3% "
     "(population DICOM patient age): the answer is NORMAL. Age group 18-64 years (from the DICOM header)."),
    ({"label": "NORMAL", "pneumonia_probability": 0.5, "threshold": 0.5},
     "Calibrated probability of pneumonia 50.0%, at or above the operating threshold of 50.0%: the answer is NORMAL."),
    ({"label": "UNKNOWN", "pneumonia_probability": None, "threshold": None, "reason": "It is a knee."},
     "It is a knee. No pneumonia assessment is given (UNKNOWN)."),
])
def test_describe_verdict_says_the_verdict_in_plain_words(verdict, expected):
    text = describe_verdict(verdict)
    assert text == expected and "<" not in text
    assert text in ui.verdict_html(verdict).replace("&amp;", "&")  # the banner says the same words


@pytest.mark.parametrize("label", [None, "NORMAL", "PNEUMONIA"])
def test_legend_is_drawn_from_the_colour_table_and_names_the_verdict(label):
    from pneumonia.gradcam import colormap_table

    legend = ui.legend_html("blue-red", label)
    table = colormap_table("blue-red")
    for entry in (0, 255):  # the bar's ends are the table's ends
        assert "rgba({}, {}, {}, 1.00)".format(*(int(c) for c in table[entry])) in legend
    assert "Red: evidence for pneumonia; blue: evidence for a normal film" in legend
    assert ("The threshold gave" in legend) == (label is not None)
    if label:
        assert f"The threshold gave {label}." in legend
    assert "fit-heatmap" in ui.legend_html(None)  # a model with no heatmap scale says how to record one


@pytest.mark.parametrize("heatmap, expected", [
    ({"scale": 32.2063, "rule": "percentile 99 of ...", "colormap": "blue-red"}, "full colour at 32.2 (percentile 99 of ...)"),
    ({}, None),
])
def test_model_card_states_the_heatmap_scale_when_recorded(predictor, heatmap, expected):
    import dataclasses

    from pneumonia.notes import format_model_card

    card = format_model_card(dataclasses.replace(predictor.metadata, heatmap=heatmap))
    assert ("**Heatmap.**" in card) == (expected is not None)
    if expected:
        assert expected in card


def test_unknown_banner_gives_the_reason_and_no_probability():
    verdict = {"label": "UNKNOWN", "pneumonia_probability": None, "normal_probability": None, "threshold": 0.31,
               "is_chest_xray": False, "reason": "A lateral view: <only frontal films> are assessed."}
    banner = ui.verdict_html(verdict)
    assert 'class="verdict unknown"' in banner and "%" not in banner
    assert "A lateral view: &lt;only frontal films&gt; are assessed." in banner
    # Before the reason was given (older verdicts) the banner still says why in general terms.
    assert UNKNOWN_TEXT in ui.verdict_html({**verdict, "reason": None})
    assert UNKNOWN_TEXT in ui.verdict_html({k: v for k, v in verdict.items() if k != "reason"})


def test_age_group_is_shown_beside_the_verdict_when_given(predictor, example_paths):
    verdict = predictor.predict(example_paths[0]).to_dict()
    assert "age group" not in ui.verdict_html(verdict)
    banner = ui.verdict_html({**verdict, "age_group": "child (1-5 years)"})
    heading = banner.split("<h2>")[1].split("</h2>")[0]
    assert heading == verdict["label"] and "Age group child (1-5 years)" in banner


def test_caution_and_population_are_shown_with_the_verdict(predictor, example_paths):
    verdict = predictor.predict(example_paths[0]).to_dict()
    plain = ui.verdict_html({**verdict, "population": None, "caution": None})
    assert "Caution" not in plain and "population" not in plain
    banner = ui.verdict_html({**verdict, "population": "adult", "population_source": "DICOM patient age",
                              "caution": "Adult film: <weaker> on adults."})
    assert "<strong>Caution.</strong> Adult film: &lt;weaker&gt; on adults." in banner
    assert "threshold for adults' films" in banner and "(population DICOM patient age)" in banner
    child = ui.verdict_html({**verdict, "population": "child", "population_source": "estimated from the image"})
    assert "threshold for children's films" in child and "Caution" not in child


@pytest.mark.parametrize("content, words", [(b"this is not an image", "not an image format"),
                                            (b"", "empty")])
def test_unreadable_upload_is_refused_in_words(client, tmp_path, content, words):
    bad = tmp_path / "film.png"
    bad.write_bytes(content)
    with pytest.raises(Exception) as info:
        client.predict(handle_file(str(bad)), api_name="/predict")
    message = str(info.value)
    assert "Traceback" not in message and words in message, message


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
        label_output, overlay, verdict = Client(local_url, verbose=False).predict(
            handle_file(str(example_paths[0])), api_name="/predict")
    assert label_output["label"] == "UNKNOWN" and not confidences_of(label_output)
    assert verdict["label"] == "UNKNOWN" and verdict["pneumonia_probability"] is None
    assert verdict["normal_probability"] is None
    assert overlay is None


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
