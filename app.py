"""Gradio front end: upload a frontal chest X-ray, get NORMAL / PNEUMONIA with Grad-CAM.

Run ``python app.py`` (serves on 127.0.0.1:7860, or GRADIO_SERVER_NAME / GRADIO_SERVER_PORT) or
``python app.py --share`` for a public gradio.live link. This file only lays out the page and wires
its events: the analysis is :mod:`pneumonia.inference`, the page's text and styles
:mod:`pneumonia.ui`, the process settings and environment :mod:`pneumonia.serving`.
"""

import argparse
import os
import threading
from pathlib import Path

from pneumonia import report, serving, ui, worklist
from pneumonia.errors import ModelLoadError
from pneumonia.inference import OVERLAY_MAX_SIDE, UNKNOWN, Predictor, make_preview
from pneumonia.notes import FINDINGS, HEATMAP_MISSING, format_model_card
from pneumonia.preprocessing import read_image
from pneumonia.serving import MAX_FILE_SIZE  # the upload limit, also read by the tests

# Gradio is imported where it is used: it reads GRADIO_SERVER_PORT when imported and fails with a
# stack trace on a bad value, which main() reports in one sentence first.

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"


def launch_options() -> dict:
    """Keyword arguments every ``demo.launch()`` of this app should get: upload limit and theme."""
    import gradio as gr

    # Fonts are served by the app itself (no third-party font requests from a clinical page). The
    # semibold Source Sans Pro file bundled with Gradio 6.31 holds only 55 glyphs; regular and bold are complete.
    font = [gr.themes.LocalFont("Source Sans Pro", weights=(400, 700)), "ui-sans-serif", "system-ui", "sans-serif"]
    theme = gr.themes.Default(primary_hue="blue", neutral_hue="slate", font=font)
    return {"max_file_size": MAX_FILE_SIZE, "footer_links": ["api", "settings"], "theme": theme}


def build_demo(predictor):
    """Lay out the page over a loaded :class:`pneumonia.Predictor` and return the ``gr.Blocks`` app.

    The queue is configured; launch it with ``**launch_options()``.
    """
    import gradio as gr

    ttl = serving.cache_ttl_s()
    newest = serving.LatestRequests()
    colormap = predictor.metadata.heatmap.get("colormap")  # None: the model records no heatmap scale

    def analyse(film, alpha):
        """``(result, None)``, or ``(None, message)`` when the film cannot be analysed."""
        try:
            return predictor.predict(film, explain=True, alpha=alpha, max_overlay_side=OVERLAY_MAX_SIDE), None
        except Exception as exc:  # noqa: BLE001 - every failure becomes a sentence, never a trace
            return None, serving.describe_failure(exc)

    def draw(kept, alpha, view):
        """The overlay (or the plain film) from a kept result: no model call."""
        _, film, heatmap = kept
        if heatmap is None:
            return None
        shown = film if view == ui.VIEWS[1] else predictor.draw_overlay(read_image(film), heatmap, alpha)
        return serving.save_image(shown, overlay.GRADIO_CACHE, "overlay.jpeg")

    def show(film, alpha, view, kept, request: gr.Request):
        """The whole result area for the current film, opacity and view (see the wiring below).

        Returns the outputs ``(preview, confidences, overlay, banner, notes, kept, legend,
        heatmap box)``. An UNKNOWN verdict or an error hides the confidences and the heatmap box
        (overlay, legend, opacity, view); the next result shows them again.
        """
        ticket, key = newest.begin(request.session_hash), ui.identify_film(film)

        def shown(visible):
            return gr.Label(visible=visible), gr.Column(visible=visible)

        if key is None:
            label, box = shown(True)
            page = (None, label, None, ui.IDLE_BANNER, ui.NOTES_PLACEHOLDER, None, ui.legend_html(colormap), box)
        elif kept is not None and kept[0] == key:  # the film on show: only opacity or view changed
            page = (gr.skip(), gr.skip(), draw(kept, alpha, view), gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                    gr.skip())
        else:
            result, problem = analyse(film, alpha)
            if problem:
                label, box = shown(False)
                page = (None, label, None, ui.error_banner(problem, key=key), ui.NOTES_PLACEHOLDER, None,
                        gr.skip(), box)
            else:
                verdict, kept = result.to_dict(), (key, make_preview(result.image, OVERLAY_MAX_SIDE), result.heatmap)
                known = verdict["label"] != UNKNOWN
                _, box = shown(known)
                confidences_value = ui.format_confidences(verdict, result.probabilities) if known else None
                page = (serving.save_image(make_preview(result.image), film_view.GRADIO_CACHE, "film.png"),
                        gr.Label(confidences_value, visible=known), draw(kept, alpha, view),
                        ui.verdict_html(verdict, key=key), FINDINGS.get(verdict["label"], FINDINGS["UNKNOWN"]), kept,
                        ui.legend_html(colormap, verdict["label"]), box)
        # A newer event of this page started meanwhile: it draws the page, this one stands down.
        return page if newest.is_latest(request.session_hash, ticket) else (gr.skip(),) * len(page)

    def predict(film, alpha):
        """The public API: confidences, overlay and verdict for one film; bad input raises a sentence."""
        result, problem = analyse(film, alpha) if film is not None else (None, "Upload a chest X-ray first.")
        if problem:
            raise gr.Error(problem, title="Cannot analyse this file", print_exception=False)
        verdict = result.to_dict()
        return (ui.format_confidences(verdict, result.probabilities),
                serving.save_image(result.overlay, overlay.GRADIO_CACHE, "overlay.jpeg"), verdict)

    examples = ui.group_examples(EXAMPLES_DIR)
    # The bundled films are served from examples/ itself rather than copied into the temporary
    # folder: copies made for gr.File examples are not exempt from delete_cache, so they would
    # vanish after the first TTL and break the examples; and the temporary folder then holds
    # nothing but what users uploaded. Only this folder of public sample films is exposed.
    gr.set_static_paths([str(EXAMPLES_DIR)])
    # The single-film view is the first tab, the worklist (build_worklist_tab) the second.
    with (gr.Blocks(title=ui.TITLE, delete_cache=(min(ttl, 600), ttl), analytics_enabled=False) as demo,
          gr.Tabs() as tabs, gr.Tab("Single film", id="single")):
        gr.Markdown(ui.INTRO)
        gr.HTML(ui.notice_html(), css_template=ui.NOTICE_CSS, js_on_load=None)
        state = gr.State(None, time_to_live=serving.STATE_TTL_S)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                # Any file is taken and its content decides the format: DICOM exported from a PACS
                # often has no .dcm extension. It reaches the handlers as bytes, so no file name
                # (often a patient's) ends up in messages, and Gradio 6.31 does not leave an empty
                # temporary file behind per request as it does with type="filepath".
                upload = gr.File(label="Chest X-ray: DICOM, JPEG, PNG, TIFF, BMP or WebP", type="binary",
                                 elem_id="upload")
                film_view = gr.Image(label="Film as the model reads it", type="pil", interactive=False,
                                     height="min(300px, 75vw)", format="png", buttons=["fullscreen"], elem_id="film",
                                     alt_text="Preview of the uploaded chest film, in grayscale as the model reads it")
                analyze_button = gr.Button("Analyze", variant="primary", size="lg")
                for group in examples:
                    gr.Examples(examples=[[path] for path in group.paths], inputs=[upload],
                                example_labels=group.labels, label=group.title, examples_per_page=len(group.paths))
                    if group.caption:
                        gr.Markdown(group.caption, elem_id="adult-examples")
            with gr.Column(scale=1, min_width=300):
                # For API users: gr.Label's own "label" is the most probable class, which is not
                # the verdict when P(pneumonia) lies between 0.5 and the operating threshold.
                verdict = gr.JSON(label="Verdict", visible=False)
                banner = gr.HTML(ui.IDLE_BANNER, css_template=ui.BANNER_CSS, js_on_load=None, elem_id="verdict")
                confidences = gr.Label(label="Calibrated confidence", num_top_classes=2, show_heading=False,
                                       elem_id="confidences")
                # Hidden for UNKNOWN and errors (show() toggles it): nothing to explain then.
                with gr.Column(elem_id="heatmap-box") as heatmap_box:
                    overlay = gr.Image(label="Grad-CAM evidence map", type="pil", interactive=False, format="jpeg",
                                       height="min(500px, 90vw)", buttons=["fullscreen", "download"], elem_id="overlay",
                                       alt_text="The film with the evidence map laid over it: red where the model "
                                                "found evidence for pneumonia, blue where it found evidence for a "
                                                "normal film, on the same scale for every film")
                    legend = gr.HTML(ui.legend_html(colormap), css_template=ui.LEGEND_CSS, js_on_load=None,
                                     elem_id="legend")
                    with gr.Row():
                        opacity = gr.Slider(0.0, 1.0, value=0.4, step=0.05, label="Heatmap opacity", min_width=160,
                                            elem_id="opacity")
                        view = gr.Radio(list(ui.VIEWS), value=ui.VIEWS[0], label="Show", min_width=140,
                                        elem_id="view")
                with gr.Accordion("Radiological notes", open=True):
                    notes = gr.Markdown(ui.NOTES_PLACEHOLDER, elem_id="notes")
                with gr.Row():
                    report_button = gr.Button("Make a PDF report", size="sm", elem_id="report-button")
                    report_file = gr.File(label="PDF report", interactive=False, elem_id="report-file")
        with gr.Accordion("Model card: data, figures, intended use and limits", open=False, elem_id=ui.MODEL_CARD_ID):
            gr.Markdown(format_model_card(predictor.metadata, retention_s=min(ttl, 600) + ttl))

        # The result area has ONE writer. (Issue 12: the upload's own handler used to clear the
        # result, ran beside the analysis and, landing last, wiped the fresh verdict.) A new film,
        # Analyze, opacity and view all trigger this one event, and its outputs are a pure function
        # of (film, opacity, view), never of which control fired (Gradio re-runs a deferred
        # "always_last" event under its first trigger): it analyses the film, or for the film
        # already on show only redraws the overlay, so the preview and verdict it writes belong to
        # one film. "always_last" runs one at a time per page, the next with the latest inputs;
        # should two still overlap, the one that started first returns gr.skip(). Nothing clears
        # a result, so nothing can land after an analysis and wipe it.
        gr.on([upload.change, analyze_button.click, opacity.input, view.input], show,
              inputs=[upload, opacity, view, state],
              outputs=[film_view, confidences, overlay, banner, notes, state, legend, heatmap_box],
              trigger_mode="always_last", concurrency_id="analysis", api_visibility="private",
              show_progress="full", show_progress_on=[banner])
        analyze_button.click(None, js=ui.SCROLL_TO_RESULT_JS)
        # Every new result (upload, example, Analyze) changes the banner, which names its film: on a
        # phone, bring it into view. Opacity and view changes leave the banner, and the page, alone.
        banner.change(None, js=ui.SCROLL_TO_RESULT_JS)
        # The API: its own event, triggered by no control on the page, sharing the page's analysis slots.
        gr.on([], predict, inputs=[upload, opacity], outputs=[confidences, overlay, verdict], api_name="predict",
              api_description=ui.API_DESCRIPTION, concurrency_id="analysis")
        report_button.click(lambda film, alpha: make_report(predictor, film, alpha, report_file.GRADIO_CACHE),
                            inputs=[upload, opacity], outputs=[report_file], concurrency_id="analysis",
                            api_visibility="private")
    with demo, tabs, gr.Tab("Worklist", id="worklist"):
        build_worklist_tab(predictor)
    demo.queue(default_concurrency_limit=serving.CONCURRENCY_LIMIT, max_size=serving.QUEUE_MAX_SIZE)
    return demo


def save_report(predictor, result, cache_dir) -> str:
    """The PDF report of one analysed film (``explain=True``), saved for download; returns its path."""
    pdf = report.render_report(result.to_dict(), make_preview(result.image, OVERLAY_MAX_SIDE), result.overlay,
                               predictor.metadata.version, predictor.metadata.created)
    return serving.save_bytes(pdf, cache_dir, report.REPORT_NAME)


def make_report(predictor, film, alpha, cache_dir):
    """The single-film view's PDF report (``None`` without a film); a film that cannot be read raises
    a sentence (its banner already says why)."""
    import gradio as gr

    if film is None:
        return None  # nothing to report on: no film, no file
    try:
        return save_report(predictor, predictor.predict(film, explain=True, alpha=alpha), cache_dir)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a sentence, never a trace
        raise gr.Error(serving.describe_failure(exc), title="No report", print_exception=False) from None


def build_worklist_tab(predictor) -> None:
    """The Worklist tab and ``/predict_batch``, inside the open ``gr.Blocks`` / ``gr.Tab`` context.

    Its events run in queues of their own (:data:`pneumonia.serving.WORKLIST_CONCURRENCY_LIMIT`),
    never in the single-film ``"analysis"`` slots.
    """
    import gradio as gr

    gr.Markdown(worklist.INTRO)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            files = gr.File(label="Films: images, DICOM files or .zip archives", file_count="multiple",
                            type="filepath", height=240, elem_id="worklist-upload")
            numbered = gr.Checkbox(label="Replace file names with numbers", value=False, elem_id="worklist-numbered")
            run_button = gr.Button("Read all films", variant="primary", elem_id="worklist-run")
            status = gr.Markdown("", elem_id="worklist-status")
            csv_file = gr.File(label="CSV (the batch command's columns)", interactive=False, elem_id="worklist-csv")
        with gr.Column(scale=2, min_width=300):
            table = gr.Dataframe(headers=list(worklist.TABLE_COLUMNS), interactive=False, wrap=True, max_height=640,
                                 column_widths=["6%", "30%", "13%", "11%", "11%", "9%", "20%"],
                                 label="Most suspicious first: select a row to open the film", elem_id="worklist-table")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            row_banner = gr.HTML(ui.make_banner("idle", "No film open", "Select a row of the table."),
                                 css_template=ui.BANNER_CSS, js_on_load=None, elem_id="worklist-verdict")
            row_report = gr.DownloadButton("PDF report of this film", visible=False, elem_id="worklist-report")
            with gr.Accordion("Radiological notes", open=False):
                row_notes = gr.Markdown(ui.NOTES_PLACEHOLDER, elem_id="worklist-notes")
        with gr.Column(scale=1, min_width=300):
            row_overlay = gr.Image(label="Grad-CAM overlay", type="filepath", interactive=False, format="jpeg",
                                   height="min(500px, 90vw)", buttons=["fullscreen", "download"],
                                   elem_id="worklist-overlay",
                                   alt_text="The selected film with the Grad-CAM heatmap laid over it")
    origins = gr.State([], time_to_live=serving.STATE_TTL_S)

    # The worklist's events take their uploads unprocessed (preprocess=False: Gradio's file
    # descriptions, each with the stored path and the uploaded name): gr.File(type="filepath")
    # would leave an empty temporary file behind per film, which delete_cache never removes.
    def run(paths, numbered_names, progress):
        """The request's sorted :class:`pneumonia.worklist.Worklist`, its table and its CSV's path."""
        if not paths:
            raise worklist.WorklistError("Upload films first (images, DICOM files or .zip archives).")
        done = worklist.run_worklist(predictor, worklist.name_uploads(paths), numbered=bool(numbered_names),
                                     progress=progress)
        rows = [worklist.to_table_row(i, result) for i, result in enumerate(done.results, 1)]
        path = serving.save_bytes(worklist.format_csv(done.results).encode(), csv_file.GRADIO_CACHE, "worklist.csv")
        return done, {"headers": list(worklist.TABLE_COLUMNS), "data": rows}, path

    def show_worklist(paths, numbered_names, progress=gr.Progress()):  # noqa: B008 (Gradio finds its progress bar by this default)
        """The page: table, CSV, a one-line summary and where each row's film lies; a refusal in words."""
        def report_progress(done_count, total):
            progress((done_count, total), desc="Reading films", unit="films")

        try:
            done, rows, path = run(paths, numbered_names, report_progress)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a sentence, never a trace
            return None, None, f"**Not read.** {serving.describe_failure(exc)}", []
        return rows, path, worklist.summarise_results(done.results), done.origins

    def predict_batch(films, numbered=False):
        """The public API: the sorted table and the CSV file; a refused request raises a sentence."""
        try:
            _, rows, path = run(films, numbered, None)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a sentence, never a trace
            raise gr.Error(serving.describe_failure(exc), title="Cannot read these films",
                           print_exception=False) from None
        return rows, path

    def open_row(kept_origins, evt: gr.SelectData):
        """The selected row's film: verdict banner, overlay, notes and PDF report (one analysis)."""
        row = dict(zip(worklist.TABLE_COLUMNS, evt.row_value or ()))
        try:  # the row's "#" is its place in the sorted worklist, whatever order the table shows
            origin, name = kept_origins[int(row["#"]) - 1], row["file"]
        except (KeyError, TypeError, ValueError, IndexError):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        error = row["reason or error"] if row["verdict"] == "unreadable" else ""
        if error or not origin[0]:
            return (ui.error_banner(error or "This file was not read.", title=f"Cannot read {name}"), None,
                    ui.NOTES_PLACEHOLDER, gr.DownloadButton(visible=False))
        try:
            result = predictor.predict(worklist.read_origin(origin), explain=True, max_overlay_side=OVERLAY_MAX_SIDE)
        except Exception as exc:  # noqa: BLE001
            return (ui.error_banner(serving.describe_failure(exc)), None, ui.NOTES_PLACEHOLDER,
                    gr.DownloadButton(visible=False))
        verdict = result.to_dict()
        return (ui.verdict_html(verdict), serving.save_image(result.overlay, row_overlay.GRADIO_CACHE, "overlay.jpeg"),
                FINDINGS.get(verdict["label"], FINDINGS["UNKNOWN"]),
                gr.DownloadButton(value=save_report(predictor, result, row_report.GRADIO_CACHE), visible=True))

    gr.on([files.upload, run_button.click], show_worklist, inputs=[files, numbered],
          outputs=[table, csv_file, status, origins], trigger_mode="always_last", concurrency_id="worklist",
          concurrency_limit=serving.WORKLIST_CONCURRENCY_LIMIT, api_visibility="private", show_progress="full",
          show_progress_on=[status], preprocess=False)
    table.select(open_row, inputs=[origins], outputs=[row_banner, row_overlay, row_notes, row_report],
                 concurrency_id="worklist-row", concurrency_limit=serving.WORKLIST_CONCURRENCY_LIMIT,
                 api_visibility="private")
    gr.on([], predict_batch, inputs=[files, numbered], outputs=[table, csv_file], api_name="predict_batch",
          api_description=worklist.API_DESCRIPTION, concurrency_id="worklist",
          concurrency_limit=serving.WORKLIST_CONCURRENCY_LIMIT, preprocess=False)


def main(argv=None) -> None:
    """Check the address, load the model, build the page and serve it; start-up failures exit with one sentence."""
    parser = argparse.ArgumentParser(description="Serve the pneumonia screening app.")
    parser.add_argument("--share", action="store_true", help="also serve on a public gradio.live link")
    args = parser.parse_args(argv)
    try:  # before the model loads (seconds) and before Gradio, which reads the port, is imported
        host, port = serving.read_address()
        serving.check_port_free(host, port)
    except serving.StartError as exc:
        raise SystemExit(f"Cannot start: {exc}") from None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    serving.limit_allocator_growth()
    try:
        predictor = Predictor.load()  # $PNEUMONIA_MODEL_DIR, else the shipped model/
    except ModelLoadError as exc:
        raise SystemExit(serving.as_sentence(f"Cannot start: {exc}")) from None
    # Trace the network while the page is built and the server starts, not in the first request.
    # Not a daemon: an exit during start-up waits for it (TensorFlow aborts if torn down mid-call).
    threading.Thread(target=predictor.warm_up, name="warm-up").start()
    serving.use_private_temp_dir()
    serving.exit_on_sigterm()  # so the temporary folder is removed on docker stop / systemd
    demo = build_demo(predictor)
    try:
        # quiet: Gradio's own hint ("set share=True in launch()") is not how this app is run.
        demo.launch(server_name=host, server_port=port, share=args.share, quiet=True, prevent_thread_lock=True,
                    **launch_options())
    except OSError as exc:  # e.g. the port was taken while the model loaded
        raise SystemExit(serving.as_sentence(f"Cannot start: {exc}")) from None
    print(serving.describe_address(host, port, args.share), flush=True)
    if not predictor.metadata.heatmap:
        print(HEATMAP_MISSING, flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
