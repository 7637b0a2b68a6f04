"""Gradio front end: upload a frontal chest X-ray, get NORMAL / PNEUMONIA with Grad-CAM.

Run ``python app.py`` (serves on 0.0.0.0:7860, or GRADIO_SERVER_NAME / GRADIO_SERVER_PORT) or
``python app.py --share`` for a public gradio.live link. All the work happens in
:mod:`pneumonia.inference`; this file only lays out the page and wires events.

Environment:
    PNEUMONIA_MODEL_DIR: model folder to serve (default: the shipped ``model/``).
    PNEUMONIA_CACHE_TTL_S: seconds an upload (and its preview and overlay) may stay in the
        temporary folder before it is deleted (default 3600).
    GRADIO_TEMP_DIR: where Gradio keeps those files; ``main`` points it at a private folder of
        its own when unset.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import html
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path

import gradio as gr

from pneumonia import PneumoniaError
from pneumonia.inference import OVERLAY_MAX_SIDE  # display size of overlay and preview
from pneumonia.notes import DISCLAIMER, FINDINGS, HEATMAP_SCALE, format_model_card

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"
# A 4300 x 4300 16-bit uncompressed DICOM, the largest film there is, is 37 MB; anything bigger
# is refused by the server while it streams in, before it reaches the model.
MAX_FILE_SIZE = "40mb"
# Queue: at most CONCURRENCY_LIMIT analyses run at once (one per CPU core; each is CPU-bound),
# and at most QUEUE_MAX_SIZE requests wait. Past that the browser shows "This application is
# currently busy. Please try again." and gradio_client raises QueueError("Queue is full! Please
# try again."), instead of anyone waiting on an unbounded queue.
CONCURRENCY_LIMIT = 2
QUEUE_MAX_SIZE = 32
CACHE_TTL_S = 3600  # default age at which uploads, previews and overlays are deleted
# What a session keeps to redraw its overlay (the film as 8-bit grayscale at display size and the
# heatmap, about 1 MB) is dropped this long after its analysis.
STATE_TTL_S = 900
VIEWS = ("Overlay", "Original")

logger = logging.getLogger("pneumonia.app")

# gr.HTML pads its content by 10px 12px; the negative margins line the boxes up with the blocks.
BANNER_CSS = """
.verdict { margin: -10px -12px; border-radius: 10px; padding: 14px 16px; border: 1px solid #d0d5da;
  border-left-width: 8px; background: #f6f7f8; color: #1f2933; }
.verdict h2 { margin: 0 0 4px; font-size: 1.55rem; font-weight: 700; line-height: 1.2; letter-spacing: .02em;
  color: inherit; }
.verdict p { margin: 0; font-size: .98rem; line-height: 1.45; color: inherit; }
.verdict.normal { background: #e8f5ec; border-color: #2e7d4f; color: #14532d; }
.verdict.pneumonia { background: #fdede8; border-color: #c2410c; color: #7c2d12; }
.verdict.unknown { background: #eef0f2; border-color: #6b7280; color: #374151; }
.verdict.idle { border-style: dashed; border-left-width: 1px; color: #4b5563; }
.track { position: relative; height: 10px; margin: 12px 0 4px; border-radius: 5px;
  background: rgba(0, 0, 0, .10); }
.fill { position: absolute; left: 0; top: 0; bottom: 0; border-radius: 5px; background: #6b7280; }
.normal .fill { background: #2e7d4f; }
.pneumonia .fill { background: #c2410c; }
.cut { position: absolute; top: -4px; bottom: -4px; width: 3px; margin-left: -1px; border-radius: 1px;
  background: #111827; }
.scale { position: relative; height: 1.2em; font-size: .78rem; opacity: .85; }
.scale span { position: absolute; top: 0; white-space: nowrap; }
.scale .hi { right: 0; }
.scale .at { transform: translateX(-50%); }
"""

LEGEND_CSS = """
.legend { margin: -6px -12px; display: flex; flex-wrap: wrap; align-items: center; gap: 4px 8px; font-size: .85rem;
  line-height: 1.35; color: var(--body-text-color-subdued, #4b5563); }
.bar { flex: 0 0 96px; height: 10px; border-radius: 5px; border: 1px solid rgba(0, 0, 0, .15);
  background: linear-gradient(90deg, rgba(128, 128, 128, .25) 0%, #1e3cff 18%, #00d5ff 42%,
  #ffe600 66%, #ff2a00 88%, #8b0000 100%); }
.text { flex: 1 1 280px; min-width: 0; }
"""

NOTICE_CSS = """
.notice { margin: -10px -12px; border: 1px solid #e0b84c; background: #fff8e1; color: #5b4500; border-radius: 8px;
  padding: 8px 12px; font-size: .9rem; line-height: 1.45; }
"""


def list_examples(folder: Path = EXAMPLES_DIR) -> list[tuple[str, str]]:
    """Bundled films as ``(path, ground-truth label)``, the label being the class folder's name."""
    return [(str(p), p.parent.name) for p in sorted(folder.glob("*/*")) if p.is_file()]


def cache_ttl_s() -> int:
    """Age in seconds at which temporary files are deleted (PNEUMONIA_CACHE_TTL_S, default 1 h)."""
    value = os.environ.get("PNEUMONIA_CACHE_TTL_S", "")
    return int(value) if value.strip().isdigit() and int(value) > 0 else CACHE_TTL_S


def launch_options() -> dict:
    """Keyword arguments every ``demo.launch()`` of this app should get: upload limit and theme."""
    # Fonts are served by the app itself (no third-party font requests from a clinical page). The
    # semibold Source Sans Pro file bundled with Gradio 6.31 holds only 55 glyphs, so text in
    # weight 600 came out in a mix of fonts; regular and bold are complete.
    font = [gr.themes.LocalFont("Source Sans Pro", weights=(400, 700)), "ui-sans-serif", "system-ui",
            "sans-serif"]
    theme = gr.themes.Default(primary_hue="blue", neutral_hue="slate", font=font)
    return {"max_file_size": MAX_FILE_SIZE, "footer_links": ["api", "settings"], "theme": theme}


def verdict_html(result, class_names) -> str:
    """The coloured verdict banner: label, calibrated probability and operating threshold.

    A label outside ``class_names`` (e.g. ``UNKNOWN``: not a frontal chest film) gets a grey
    banner with no probability, since the classifier's output means nothing for such an image.
    """
    label = html.escape(str(result.label))
    if result.label not in class_names:
        return ('<div class="verdict unknown" role="status" aria-live="polite">'
                f"<h2>{label}</h2><p>This does not look like a frontal chest X-ray, so no "
                "pneumonia assessment is given. See the notes below.</p></div>")
    p = float(result.pneumonia_probability)
    t = float(result.threshold)
    side = "at or above" if p >= t else "below"
    label_at = min(max(t, 0.12), 0.88)  # keep the "threshold" caption clear of "0%" and "100%"
    return (
        f'<div class="verdict {label.lower()}" role="status" aria-live="polite">'
        f"<h2>{label}</h2>"
        f"<p>Calibrated probability of pneumonia <strong>{p:.1%}</strong>, {side} the operating "
        f"threshold of <strong>{t:.1%}</strong>.</p>"
        f'<div class="track" aria-hidden="true"><div class="fill" style="width:{p:.1%}"></div>'
        f'<div class="cut" style="left:{t:.1%}"></div></div>'
        f'<div class="scale" aria-hidden="true"><span>0%</span>'
        f'<span class="at" style="left:{label_at:.1%}">threshold</span><span class="hi">100%</span></div>'
        "</div>"
    )


NOTES_PLACEHOLDER = "What the result means, what to look for on the film and when to escalate appear here."
SCROLL_TO_RESULT_JS = """() => { if (window.innerWidth < 768) {
  document.getElementById("verdict")?.scrollIntoView({behavior: "smooth", block: "start"}); } }"""
IDLE_BANNER = ('<div class="verdict idle" role="status" aria-live="polite"><h2>No result yet</h2>'
               "<p>Upload a film or pick an example, then press <strong>Analyze</strong>.</p></div>")
READY_BANNER = ('<div class="verdict idle" role="status" aria-live="polite"><h2>Ready</h2>'
                "<p>Film loaded. Press <strong>Analyze</strong> for the verdict and heatmap.</p></div>")


def summarize(result, known: bool) -> dict:
    """The verdict as data: label, P(pneumonia) (``None`` when not a chest film) and threshold."""
    return {"label": result.label,
            "pneumonia_probability": round(float(result.pneumonia_probability), 6) if known else None,
            "threshold": float(result.threshold),
            "is_chest_xray": bool(getattr(result, "is_chest_xray", known))}


def to_cache_file(image, component, name: str) -> str | None:
    """Write ``image`` to a new folder of ``component``'s cache and return the file's path.

    Gradio 6.31 saves a returned PIL image under a folder named by the hash of its bytes and
    rewrites it in place, so two requests producing the same image (two users on the same
    example) truncate the file while the first is still downloading it. A folder per image avoids
    that; ``delete_cache`` removes it like any other output. The file carries no metadata.
    """
    if image is None:
        return None
    folder = Path(component.GRADIO_CACHE) / secrets.token_hex(16)
    folder.mkdir(parents=True)
    path = folder / name
    if name.endswith(".jpeg"):
        image.save(path, quality=90)
    else:
        image.save(path)
    return str(path)


def log_failure(exc: BaseException) -> None:
    """Log an unexpected error by type and code location only: messages may quote the upload."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    logger.error("analysis failed: %s at %s", type(exc).__name__, where)


def build_demo(predictor) -> gr.Blocks:
    """Lay out the page over a loaded :class:`pneumonia.Predictor`.

    Args:
        predictor: the loaded model; shared by all requests.

    Returns:
        The ``gr.Blocks`` app, queue configured, not launched (launch it with
        ``**launch_options()``).
    """
    from pneumonia.inference import make_preview, render_overlay
    from pneumonia.preprocessing import read_image

    class_names = tuple(predictor.class_names)
    ttl = cache_ttl_s()

    def show_upload(film):
        """A new file: preview it and clear the previous result so no stale verdict remains."""
        cleared = (None, None, None, IDLE_BANNER if not film else READY_BANNER, NOTES_PLACEHOLDER, None, VIEWS[0])
        if not film:
            return (None, *cleared)
        try:
            preview = to_cache_file(make_preview(film), film_view, "film.png")
        except PneumoniaError as exc:
            raise gr.Error(str(exc), title="Cannot read this file", print_exception=False) from None
        except Exception as exc:
            log_failure(exc)
            raise gr.Error("This file could not be read.", print_exception=False) from None
        return (preview, *cleared)

    def analyze(film, alpha):
        """Classify the uploaded file (its bytes) and explain the answer at opacity ``alpha``."""
        if not film:
            raise gr.Error("Upload a chest X-ray, or pick an example, first.", title="No film",
                           print_exception=False)
        try:
            result = predictor.predict(film, explain=True, alpha=alpha, max_overlay_side=OVERLAY_MAX_SIDE)
        except PneumoniaError as exc:
            raise gr.Error(str(exc), title="Cannot analyse this file", print_exception=False) from None
        except Exception as exc:
            log_failure(exc)
            raise gr.Error("The analysis failed unexpectedly. Try another file.", print_exception=False) from None
        known = result.label in class_names
        confidences = result.probabilities if known else result.label
        overlay_file = to_cache_file(result.overlay if getattr(result, "heatmap", None) is not None else None,
                                     overlay, "overlay.jpeg")
        notes = FINDINGS.get(result.label, FINDINGS["UNKNOWN"])
        return (confidences, overlay_file, summarize(result, known), verdict_html(result, class_names), notes,
                (make_preview(result.image, max_side=OVERLAY_MAX_SIDE), result.heatmap), VIEWS[0])

    def rerender(kept, alpha, view):
        """Redraw the overlay from the session's kept film and heatmap: no model call."""
        if kept is None:
            return gr.skip()
        film, heatmap = kept
        if view == VIEWS[1] or heatmap is None:
            return to_cache_file(film, overlay, "film.jpeg")
        return to_cache_file(render_overlay(read_image(film), heatmap, alpha), overlay, "overlay.jpeg")

    examples = list_examples()
    # The bundled films are served from examples/ itself rather than copied into the temporary
    # folder: copies made for gr.File examples are not exempt from delete_cache, so they would
    # vanish after the first TTL and break the examples; and the temporary folder then holds
    # nothing but what users uploaded. Only this folder of public sample films is exposed.
    gr.set_static_paths([str(EXAMPLES_DIR)])
    with gr.Blocks(title="Chest X-ray pneumonia screening", delete_cache=(min(ttl, 600), ttl),
                   analytics_enabled=False) as demo:
        gr.Markdown("# Chest X-ray pneumonia screening\nUpload a frontal chest X-ray (image or DICOM) "
                    "and press **Analyze**: a CNN answers NORMAL or PNEUMONIA with a calibrated "
                    "probability and a Grad-CAM heatmap of where it looked.")
        gr.HTML(f'<div class="notice" role="note">{_bold(DISCLAIMER)}</div>', css_template=NOTICE_CSS,
                js_on_load=None)
        state = gr.State(None, time_to_live=STATE_TTL_S)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                # Any file is taken and its content decides the format: DICOM exported from a PACS
                # often has no .dcm extension. It reaches the handlers as bytes, so no file name
                # (often a patient's) ends up in messages, and Gradio 6.31 does not leave an empty
                # temporary file behind per request as it does with type="filepath".
                upload = gr.File(label="Chest X-ray: DICOM, JPEG, PNG, TIFF, BMP or WebP",
                                 type="binary", elem_id="upload")
                film_view = gr.Image(label="Film as the model reads it", type="pil", interactive=False,
                                height="min(300px, 75vw)", format="png", buttons=["fullscreen"], elem_id="film",
                                alt_text="Preview of the uploaded chest film, in grayscale as the model reads it")
                analyze_button = gr.Button("Analyze", variant="primary", size="lg")
                for truth in sorted({label for _, label in examples}):
                    paths = [path for path, label in examples if label == truth]
                    gr.Examples(examples=[[path] for path in paths], inputs=[upload],
                                example_labels=[f"{truth} {i}" for i in range(1, len(paths) + 1)],
                                label=f"Example films graded {truth} by radiologists (never used in training)",
                                examples_per_page=len(paths))
            with gr.Column(scale=1, min_width=300):
                # For API users: gr.Label's own "label" is the most probable class, which is not
                # the verdict when P(pneumonia) lies between 0.5 and the operating threshold.
                summary = gr.JSON(label="Verdict", visible=False)
                banner = gr.HTML(IDLE_BANNER, css_template=BANNER_CSS, js_on_load=None, elem_id="verdict")
                confidences = gr.Label(label="Calibrated confidence", num_top_classes=2, show_heading=False,
                                       elem_id="confidences")
                overlay = gr.Image(label="Grad-CAM overlay", type="pil", interactive=False, format="jpeg",
                                   height="min(500px, 90vw)",
                                   buttons=["fullscreen", "download"], elem_id="overlay",
                                   alt_text="The film with the Grad-CAM heatmap laid over it: red marks the "
                                            "regions that most influenced the model's answer")
                gr.HTML(f'<div class="legend"><span class="bar" role="img" aria-label="Colour scale from '
                        f'untinted through blue, yellow to red"></span><span class="text">'
                        f"{html.escape(HEATMAP_SCALE)}</span></div>", css_template=LEGEND_CSS, js_on_load=None)
                with gr.Row():
                    opacity = gr.Slider(0.0, 1.0, value=0.4, step=0.05, label="Heatmap opacity", min_width=160,
                                        elem_id="opacity")
                    view = gr.Radio(list(VIEWS), value=VIEWS[0], label="Show", min_width=140)
                with gr.Accordion("Radiological notes", open=True):
                    notes = gr.Markdown(NOTES_PLACEHOLDER, elem_id="notes")
        with gr.Accordion("Model card: data, figures, intended use and limits", open=False):
            gr.Markdown(format_model_card(predictor.metadata, retention_s=min(ttl, 600) + ttl))

        upload.change(show_upload, inputs=[upload],
                      outputs=[film_view, confidences, overlay, summary, banner, notes, state, view],
                      api_name=False, show_progress="minimal")
        # On a phone the result sits below the examples: bring it (and its progress bar) into view.
        analyze_button.click(None, js=SCROLL_TO_RESULT_JS)
        analyze_button.click(analyze, inputs=[upload, opacity],
                             outputs=[confidences, overlay, summary, banner, notes, state, view],
                             api_name="predict")
        # Dragging (or arrow keys) fires many inputs: only the latest pending redraw runs.
        for control in (opacity, view):
            control.input(rerender, inputs=[state, opacity, view], outputs=[overlay], api_name=False,
                          show_progress="hidden", trigger_mode="always_last")
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_MAX_SIZE)
    return demo


def _bold(markdown: str) -> str:
    """Escape text for HTML, turning ``**bold**`` into ``<strong>``."""
    parts = html.escape(markdown).split("**")
    return "".join(f"<strong>{part}</strong>" if i % 2 else part for i, part in enumerate(parts))


def limit_allocator_growth() -> None:
    """Stop glibc malloc from keeping freed film-sized buffers, which reads as a memory leak.

    By default glibc raises its mmap threshold after the first large free, so later multi-MB
    arrays (decoded films, overlays) come from per-thread heaps that are rarely returned to the
    OS, and each worker thread gets a heap of its own. Measured with benchmarks/load.py (8 users x
    10 requests): resident memory grew 230 MB without this and 30 MB with it. Settings already
    given in the environment (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_) win; other C libraries
    are left alone.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_mmap_threshold, m_arena_max = -3, -8  # from glibc's malloc.h
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        mallopt(m_mmap_threshold, 1 << 20)  # 1 MB and up: mmap, handed back to the OS on free
    if "MALLOC_ARENA_MAX" not in os.environ:
        mallopt(m_arena_max, 2)


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text.endswith((".", "!", "?")) else text + "."


def use_private_temp_dir() -> str:
    """Point Gradio's file cache at a fresh folder only this process uses, removed at exit.

    Uploads, previews and overlays live there until ``delete_cache`` ages them out. An explicit
    GRADIO_TEMP_DIR is respected (and left in place).
    """
    if os.environ.get("GRADIO_TEMP_DIR"):
        return os.environ["GRADIO_TEMP_DIR"]
    folder = tempfile.mkdtemp(prefix="pneumonia-app-")  # mode 0700
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["GRADIO_TEMP_DIR"] = folder
    return folder


def main(argv=None) -> None:
    """Load the model, build the page and serve it; start-up failures exit with one sentence."""
    parser = argparse.ArgumentParser(description="Serve the pneumonia screening app.")
    parser.add_argument("--share", action="store_true", help="also serve on a public gradio.live link")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    limit_allocator_growth()

    from pneumonia import ModelLoadError, Predictor

    try:
        predictor = Predictor.load()  # $PNEUMONIA_MODEL_DIR, else the shipped model/
    except ModelLoadError as exc:
        raise SystemExit(_sentence(f"Cannot start: {exc}")) from None
    # Trace the network while the page is built and the server starts, not in the first request.
    # Not a daemon: an exit during start-up waits for it (TensorFlow aborts if torn down mid-call).
    threading.Thread(target=predictor.warm_up, name="warm-up").start()
    use_private_temp_dir()
    # SIGTERM (docker stop, systemd) exits like Ctrl+C, so the temporary folder is removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    demo = build_demo(predictor)
    try:
        port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    except ValueError:
        raise SystemExit("Cannot start: GRADIO_SERVER_PORT must be a port number.") from None
    try:
        demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), server_port=port,
                    share=args.share, **launch_options())
    except OSError as exc:  # e.g. the port is taken
        raise SystemExit(_sentence(f"Cannot start: {exc}")) from None


if __name__ == "__main__":
    main()
