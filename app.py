"""Gradio front end: upload a frontal chest X-ray, get NORMAL / PNEUMONIA with Grad-CAM.

Run ``python app.py`` (serves on 0.0.0.0:7860, or GRADIO_SERVER_NAME / GRADIO_SERVER_PORT) or
``python app.py --share`` for a public gradio.live link. All the work happens in
:mod:`pneumonia.inference`; this file only lays out the page and wires events.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import gradio as gr

from pneumonia import PneumoniaError
from pneumonia.notes import DISCLAIMER, FINDINGS, HEATMAP_LEGEND

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"
FILE_TYPES = [".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".dcm", ".dicom"]
OVERLAY_MAX_SIDE = 1024  # display size of the returned overlay: sharp on screen, light on the wire
MAX_FILE_SIZE = "25mb"
QUEUE_MAX_SIZE = 32  # waiting requests beyond this are turned away with a "busy" message
CONCURRENCY_LIMIT = 2  # one inference per CPU core
CACHE_TTL_S = 3600  # uploads are deleted from Gradio's cache after an hour (checked hourly)


def list_examples(folder: Path = EXAMPLES_DIR) -> list[tuple[str, str]]:
    """Bundled films as ``(path, ground-truth label)``, the label being the class folder's name."""
    return [(str(p), p.parent.name) for p in sorted(folder.glob("*/*")) if p.is_file()]


def build_demo(predictor) -> gr.Blocks:
    """Lay out the page over a loaded :class:`pneumonia.Predictor`.

    Args:
        predictor: the loaded model; shared by all requests.

    Returns:
        The ``gr.Blocks`` app, queue configured, not launched.
    """
    from pneumonia.inference import format_verdict, make_preview, render_overlay

    def preview(path):
        if not path:
            return None
        try:
            return make_preview(path)
        except PneumoniaError as exc:
            raise gr.Error(str(exc)) from None

    def analyze(path, alpha):
        if not path:
            raise gr.Error("Upload a chest X-ray (or pick an example) first.")
        try:
            result = predictor.predict(path, explain=True, alpha=alpha, max_overlay_side=OVERLAY_MAX_SIDE)
        except PneumoniaError as exc:
            raise gr.Error(str(exc)) from None
        return result.probabilities, result.overlay, format_verdict(result), FINDINGS[result.label], result

    def rerender(result, alpha):
        if result is None:
            return None
        return render_overlay(result.image, result.heatmap, alpha, OVERLAY_MAX_SIDE)

    examples = list_examples()
    with gr.Blocks(title="Chest X-ray pneumonia screening", delete_cache=(CACHE_TTL_S, CACHE_TTL_S)) as demo:
        gr.Markdown("# Chest X-ray pneumonia screening\nUpload a frontal chest X-ray; the CNN answers "
                    "NORMAL or PNEUMONIA with a calibrated probability and shows where it looked.")
        gr.Markdown(DISCLAIMER)
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Chest X-ray (JPEG, PNG, TIFF, BMP, WebP, DICOM)", file_types=FILE_TYPES,
                                 type="filepath")
                film = gr.Image(label="Uploaded film", type="pil", interactive=False, height=320)
                analyze_button = gr.Button("Analyze", variant="primary")
                gr.Examples(examples=[[path] for path, _ in examples], inputs=[upload],
                            example_labels=[f"{label}: {Path(path).stem}" for path, label in examples],
                            label="Example films (ground truth before the colon; never trained on)")
            with gr.Column(scale=1):
                verdict = gr.Markdown("Upload a film and press **Analyze**.")
                confidences = gr.Label(label="Calibrated confidence", num_top_classes=2)
                overlay = gr.Image(label="Grad-CAM overlay", type="pil", interactive=False, format="jpeg")
                opacity = gr.Slider(0.0, 1.0, value=0.4, step=0.05, label="Heatmap opacity")
                gr.Markdown(HEATMAP_LEGEND)
                notes = gr.Markdown()

        upload.change(preview, inputs=[upload], outputs=[film], api_name=False)
        analyze_button.click(analyze, inputs=[upload, opacity],
                             outputs=[confidences, overlay, verdict, notes, state], api_name="predict")
        opacity.release(rerender, inputs=[state, opacity], outputs=[overlay], api_name=False)
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_MAX_SIZE)
    return demo


def main(argv=None) -> None:
    """Load the model, build the page and serve it."""
    parser = argparse.ArgumentParser(description="Serve the pneumonia screening app.")
    parser.add_argument("--share", action="store_true", help="also serve on a public gradio.live link")
    args = parser.parse_args(argv)

    from pneumonia import ModelLoadError, Predictor

    try:
        predictor = Predictor.load()
    except ModelLoadError as exc:
        raise SystemExit(f"Cannot start: {exc}") from None
    demo = build_demo(predictor)
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        share=args.share,
        max_file_size=MAX_FILE_SIZE,
    )


if __name__ == "__main__":
    main()
