"""A one-page PDF report of one film's result, to hand on: film and overlay side by side, the
verdict, calibrated probability and threshold, population and caution, the model's identity and
date, and the "decision support only" notice.

Drawn with matplotlib (its PDF backend, the 14 standard PDF fonts: nothing embedded, text stays
text). It holds nothing about the patient beyond the verdict's ``age_group``: the verdict
(:meth:`pneumonia.inference.Prediction.to_dict`) carries no other DICOM tag, the images are drawn
from pixels only, and no file name is written (file names are often patients' names).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import textwrap
from typing import Optional

import numpy as np
from PIL import Image

from pneumonia.notes import DISCLAIMER, HEATMAP_LEGEND, describe_verdict

TITLE = "Chest X-ray pneumonia screening: result report"
NOTICE = DISCLAIMER.replace("**", "")  # the page's notice, without its Markdown
PAGE_INCHES = (8.27, 11.69)  # A4 portrait
IMAGE_MAX_SIDE = 900  # pixels of each image on the page: sharp in print, a few hundred kB
WRAP = 100  # characters per line of body text
REPORT_NAME = "pneumonia-report.pdf"  # never the film's own name
_RC = {"pdf.use14corefonts": True, "font.family": "sans-serif", "font.sans-serif": ["Helvetica"],
       "pdf.compression": 6, "axes.unicode_minus": False}


def describe_report_lines(verdict: dict, model_version: str, model_date: Optional[str],
                          created: dt.datetime) -> list[str]:
    """The report's text under the images, one entry per paragraph (plain ASCII/Latin-1).

    Args:
        verdict: :meth:`pneumonia.inference.Prediction.to_dict`.
        model_version: ``metadata.version``.
        model_date: when the model was made (``metadata.created``), or ``None``.
        created: when the report is made (shown in UTC).
    """
    lines = [describe_verdict(verdict)]
    p = verdict.get("pneumonia_probability")
    if p is not None:
        lines.append(f"Calibrated probability of pneumonia: {float(p):.1%}. Operating threshold: "
                     f"{float(verdict['threshold']):.1%}.")
        population = verdict.get("population")
        if population:
            lines.append(f"Population: {population} ({verdict.get('population_source') or 'source unknown'}).")
    if verdict.get("age_group"):
        lines.append(f"Age group (from the DICOM header): {verdict['age_group']}.")
    lines.append(f"Caution: {verdict['caution']}" if verdict.get("caution") else "Caution: none for this film.")
    if p is not None:
        lines.append(f"Heatmap: {HEATMAP_LEGEND}")
    lines.append(f"Model: {model_version}" + (f", made {model_date}" if model_date else "") + ".")
    lines.append(f"Report made {created.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.")
    return [to_latin1(line) for line in lines]


def to_latin1(text: str) -> str:
    """``text`` with characters the standard PDF fonts lack replaced by ASCII look-alikes."""
    swaps = {"\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
             "\u2265": ">=", "\u2264": "<=", "\u2248": "~", "\u00d7": "x"}
    text = "".join(swaps.get(c, c) for c in text)
    return text.encode("latin-1", "replace").decode("latin-1")


def render_report(verdict: dict, film: Image.Image, overlay: Optional[Image.Image], model_version: str,
                  model_date: Optional[str] = None, created: Optional[dt.datetime] = None,
                  file_format: str = "pdf") -> bytes:
    """The one-page PDF.

    Args:
        verdict: :meth:`pneumonia.inference.Prediction.to_dict` (nothing else about the film is used).
        film: the film as the model read it (grayscale ``PIL.Image``, e.g.
            :func:`pneumonia.inference.make_preview`).
        overlay: the Grad-CAM overlay (RGB ``PIL.Image``), ``None`` for UNKNOWN.
        model_version: ``metadata.version``.
        model_date: ``metadata.created``, or ``None``.
        created: the report's date (default: now, UTC).
        file_format: ``"pdf"``; ``"png"`` draws the same page as an image (to look at it).

    Returns:
        The file's bytes (one A4 page).
    """
    import matplotlib
    from matplotlib.backends.backend_pdf import FigureCanvasPdf
    from matplotlib.figure import Figure

    created = created or dt.datetime.now(dt.timezone.utc)
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=PAGE_INCHES)
        FigureCanvasPdf(figure)
        figure.text(0.06, 0.955, TITLE, fontsize=15, weight="bold", va="top")
        figure.text(0.06, 0.925, textwrap.fill(NOTICE, WRAP), fontsize=8.5, va="top", color="#7a1f1f")
        label = str(verdict.get("label"))
        colour = {"PNEUMONIA": "#b23c17", "NORMAL": "#1e7b34"}.get(label, "#555555")
        figure.text(0.06, 0.865, label, fontsize=22, weight="bold", va="top", color=colour)
        panels = ((film, "Film as the model read it"), (overlay, "Grad-CAM evidence map"))
        for i, (image, caption) in enumerate(panels):
            axes = figure.add_axes((0.06 + i * 0.46, 0.43, 0.42, 0.38))
            axes.set_axis_off()
            axes.set_title(caption, fontsize=9)
            if image is None:
                axes.text(0.5, 0.5, "No heatmap: no pneumonia assessment\nis given for this upload.",
                          ha="center", va="center", fontsize=9, transform=axes.transAxes)
                continue
            image = image.copy()
            image.thumbnail((IMAGE_MAX_SIDE, IMAGE_MAX_SIDE))
            pixels = np.asarray(image.convert("L" if image.mode in ("L", "I", "F") else "RGB"))
            axes.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=255,
                        interpolation="antialiased")
        body = "\n\n".join(textwrap.fill(line, WRAP) for line in
                           describe_report_lines(verdict, model_version, model_date, created))
        figure.text(0.06, 0.41, body, fontsize=9.5, va="top", linespacing=1.4)
        figure.text(0.06, 0.03, textwrap.fill(NOTICE, WRAP + 10), fontsize=7.5, va="bottom", color="#444444")
        buffer = io.BytesIO()
        # The core fonts are found by family, not weight: matplotlib's note on that is no news.
        logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
        figure.savefig(buffer, format=file_format, metadata={"Title": TITLE, "Author": None, "Subject": None,
                                                       "Keywords": None, "Creator": "pneumonia.report"})
    return buffer.getvalue()
