"""What the app's page shows: its styles, HTML pieces and the text of each state of the verdict.

Pure functions from data to strings (no Gradio, no I/O), so ``app.py`` only lays out the page and
wires its events, and each piece can be tested on its own. The verdict banner reads the verdict
dict of :meth:`pneumonia.inference.Prediction.to_dict`, the one serialisation every interface
uses, with ``.get`` for the keys that only some verdicts carry (``reason``, ``age_group``).
"""

from __future__ import annotations

import hashlib
import html
from pathlib import Path
from typing import Mapping, NamedTuple, Optional

from pneumonia.gradcam import colormap_table
from pneumonia.notes import DISCLAIMER, HEATMAP_LEGEND, HEATMAP_MISSING, HEATMAP_VERDICT, describe_verdict

VIEWS = ("Overlay", "Original")
TITLE = "Chest X-ray pneumonia screening"
INTRO = (f"# {TITLE}\nUpload a frontal chest X-ray (image or DICOM) or pick an example: a CNN answers "
         "NORMAL or PNEUMONIA with a calibrated probability and a Grad-CAM heatmap of where it looked "
         "(**Analyze** runs it again).")
API_DESCRIPTION = ("Classify one chest X-ray (DICOM, JPEG, PNG, TIFF, BMP or WebP) and explain it. Returns the "
                   "calibrated confidences (gr.Label), the Grad-CAM overlay at heatmap opacity `alpha` (none for "
                   "UNKNOWN) and the verdict: Prediction.to_dict(), whose `label` is the thresholded answer.")
NOTES_PLACEHOLDER = "What the result means, what to look for on the film and when to escalate appear here."
# On a phone the result sits below the upload and the examples: bring the verdict into view (run
# after every new result, and when Analyze starts one so its progress shows).
SCROLL_TO_RESULT_JS = """() => { if (window.innerWidth < 768) {
  document.getElementById("verdict")?.scrollIntoView({behavior: "instant", block: "start"}); } }"""

# gr.HTML pads its content by 10px 12px; the negative margins line the boxes up with the blocks.
BANNER_CSS = """
.verdict { margin: -10px -12px; border-radius: 10px; padding: 14px 16px; border: 1px solid #d0d5da;
  border-left-width: 8px; background: #f6f7f8; color: #1f2933; }
.verdict h2 { margin: 0 0 4px; font-size: 1.55rem; font-weight: 700; line-height: 1.2; letter-spacing: .02em;
  color: inherit; }
.verdict p { margin: 0; font-size: .98rem; line-height: 1.45; color: inherit; }
.verdict p + p { margin-top: 4px; }
.verdict.normal { background: #e8f5ec; border-color: #2e7d4f; color: #14532d; }
.verdict.pneumonia { background: #fdede8; border-color: #c2410c; color: #7c2d12; }
.verdict.unknown { background: #eef0f2; border-color: #6b7280; color: #374151; }
.verdict.error { background: #fef2f2; border-color: #b91c1c; color: #7f1d1d; }
.verdict.idle { border-style: dashed; border-left-width: 1px; color: #4b5563; }
.verdict .age { font-size: .9rem; font-weight: 400; letter-spacing: 0; margin-left: .5em; opacity: .85; }
.verdict .caution { margin: 6px 0; padding: 6px 10px; border-radius: 6px; background: #fff8e1; color: #5b4500;
  border: 1px solid #e0b84c; }
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
.bar { height: 12px; border-radius: 6px; border: 1px solid rgba(0, 0, 0, .15); background-color: #808080; }
.scalebar { flex: 0 0 176px; display: flex; flex-direction: column; gap: 2px; }
.scalebar .bar { flex: 0 0 12px; }
.ends { display: flex; justify-content: space-between; gap: 6px; font-size: .75rem; }
.text { flex: 1 1 280px; min-width: 0; }
"""

NOTICE_CSS = """
.notice { margin: -10px -12px; border: 1px solid #e0b84c; background: #fff8e1; color: #5b4500; border-radius: 8px;
  padding: 8px 12px; font-size: .9rem; line-height: 1.45; }
"""

def make_banner(kind: str, title_html: str, body_html: str, key: Optional[str] = None) -> str:
    """The verdict area's box, the one place its markup is written.

    Args:
        kind: picks its colours (``normal``, ``pneumonia``, ``unknown``, ``error``, ``idle``).
        title_html: the heading, HTML already escaped.
        body_html: what follows the heading, HTML already escaped.
        key: the film's fingerprint (:func:`identify_film`), kept on the box so that two films with
            the same verdict still give two different banners (the page scrolls to each new one).
    """
    film = f' data-film="{html.escape(key)}"' if key else ""
    return (f'<div class="verdict {html.escape(kind)}" role="status" aria-live="polite"{film}>'
            f"<h2>{title_html}</h2>{body_html}</div>")


def paragraph(text: str) -> str:
    """Plain text as one escaped HTML paragraph."""
    return f"<p>{html.escape(text, quote=False)}</p>"


IDLE_BANNER = make_banner("idle", "No result yet",
                          paragraph("Upload a film or pick an example: the verdict and heatmap appear here."))


def error_banner(message: str, title: str = "Cannot analyse this file", key: Optional[str] = None) -> str:
    """The one place an error is shown: where the verdict goes, in words, with no stack trace."""
    return make_banner("error", html.escape(title), paragraph(message), key)


def verdict_html(verdict: Mapping, key: Optional[str] = None) -> str:
    """The coloured verdict banner: the label, :func:`pneumonia.notes.describe_verdict` in words,
    and for a diagnosis a bar marking the probability and the threshold.

    Args:
        verdict: :meth:`pneumonia.inference.Prediction.to_dict`. A verdict with no probability
            (``UNKNOWN``: not a frontal chest film) gets a grey banner with the ``reason`` and no
            bar, since the classifier's output means nothing for such an image. A ``caution``
            comes in a box above the sentence, with a link to the model card's figures.
        key: the film's fingerprint (:func:`make_banner`).

    Returns:
        HTML.
    """
    label = str(verdict["label"])
    text = paragraph(describe_verdict(dict(verdict)))
    p = verdict.get("pneumonia_probability")
    if p is None:
        return make_banner(label.lower(), html.escape(label), text, key)
    p, t = float(p), float(verdict["threshold"])
    label_at = min(max(t, 0.12), 0.88)  # keep the "threshold" caption clear of "0%" and "100%"
    caution = verdict.get("caution")
    box = (f'<p class="caution"><strong>Caution.</strong> {html.escape(str(caution))} '
           f'<a href="#{MODEL_CARD_ID}">Model card</a></p>') if caution else ""
    bar = (f'<div class="track" aria-hidden="true"><div class="fill" style="width:{p:.1%}"></div>'
           f'<div class="cut" style="left:{t:.1%}"></div></div>'
           f'<div class="scale" aria-hidden="true"><span>0%</span>'
           f'<span class="at" style="left:{label_at:.1%}">threshold</span><span class="hi">100%</span></div>')
    return make_banner(label.lower(), html.escape(label), box + text + bar, key)


# The model card's accordion on the page: where a caution's link leads.
MODEL_CARD_ID = "model-card"


def format_confidences(verdict: Mapping, probabilities: Mapping[str, float]) -> dict | str:
    """What ``gr.Label`` shows: the calibrated probabilities, or just the label when there are none."""
    return dict(probabilities) if verdict.get("pneumonia_probability") is not None else str(verdict["label"])


def notice_html() -> str:
    """The "decision support only" notice, ``**bold**`` kept."""
    return f'<div class="notice" role="note">{bold(DISCLAIMER)}</div>'


def legend_html(colormap: str | None, label: str | None = None) -> str:
    """The heatmap's legend: a colour bar drawn from the model's colour table, in words beside it.

    Args:
        colormap: a key of :data:`pneumonia.gradcam.COLORMAPS` (``metadata.heatmap["colormap"]``);
            ``None`` when the model records no heatmap scale (then the legend says so).
        label: the film's verdict, said beside the legend; ``None`` before any result.

    Returns:
        HTML.
    """
    if colormap is None:
        return f'<div class="legend"><span class="text">{html.escape(HEATMAP_MISSING)}</span></div>'
    table = colormap_table(colormap)
    # The bar as the overlay draws it over a grey film: colour s at opacity |s|, for s from -1 to +1.
    stops = []
    for step in range(9):
        s = step / 4 - 1.0
        r, g, b = (int(c) for c in table[min(255, round((s + 1.0) * 127.5))])
        stops.append(f"rgba({r}, {g}, {b}, {abs(s):.2f}) {step * 12.5:g}%")
    words = HEATMAP_LEGEND + (" " + HEATMAP_VERDICT.format(label=label) if label else "")
    return ('<div class="legend"><span class="scalebar"><span class="bar" role="img" aria-label="Colour scale: blue '
            'for evidence for a normal film, untinted for none, red for evidence for pneumonia" '
            f'style="background-image: linear-gradient(90deg, {", ".join(stops)})"></span>'
            '<span class="ends" aria-hidden="true"><span>normal</span><span>none</span><span>pneumonia</span>'
            f'</span></span><span class="text">{html.escape(words)}</span></div>')


def bold(markdown: str) -> str:
    """Escape text for HTML, turning ``**bold**`` into ``<strong>``."""
    parts = html.escape(markdown).split("**")
    return "".join(f"<strong>{part}</strong>" if i % 2 else part for i, part in enumerate(parts))


def identify_film(film: Optional[bytes]) -> Optional[str]:
    """A short fingerprint of an upload's bytes: which film a kept result belongs to."""
    return None if film is None else hashlib.blake2b(film, digest_size=16).hexdigest()


# The bundled adult examples are described in examples/MANIFEST.tsv (docs/pick_adult_examples.py):
# their grade and source hospital are shown beside them, whatever the model answers.
EXAMPLE_MANIFEST = "MANIFEST.tsv"


class ExampleGroup(NamedTuple):
    """One row of example buttons: its title, films, button labels and a caption (may be empty)."""

    title: str
    paths: list[str]
    labels: list[str]
    caption: str


def group_examples(folder: Path) -> list[ExampleGroup]:
    """The bundled films, grouped for the page: children's films by class, then the adult films.

    Args:
        folder: the ``examples`` folder (``<class>/<file>``; adult films listed in its manifest).

    Returns:
        Children's NORMAL and PNEUMONIA groups (buttons ``NORMAL 1``...), then one adult group
        (buttons ``Adult NORMAL 1``...) whose caption gives each film's grade and source.
    """
    import csv

    adults = {}
    manifest = folder / EXAMPLE_MANIFEST
    if manifest.is_file():
        with open(manifest, newline="", encoding="utf-8") as handle:
            adults = {row["file"]: row for row in csv.DictReader(handle, delimiter="\t")}
    films = [p for p in sorted(folder.glob("*/*")) if p.is_file()]
    children = [p for p in films if f"{p.parent.name}/{p.name}" not in adults]
    groups = []
    for truth in sorted({p.parent.name for p in children}):
        paths = [str(p) for p in children if p.parent.name == truth]
        groups.append(ExampleGroup(f"Children's films graded {truth} (patients never used in training)", paths,
                                   [f"{truth} {i}" for i in range(1, len(paths) + 1)], ""))
    if adults:
        rows = sorted(adults.values(), key=lambda row: (row["truth"], row["file"]))
        counts: dict[str, int] = {}
        labels, lines = [], []
        for row in rows:
            counts[row["truth"]] = counts.get(row["truth"], 0) + 1
            labels.append(f"Adult {row['truth']} {counts[row['truth']]}")
            lines.append(f"- **{labels[-1]}**: {row['source']}; {row['grade']}.")
        groups.append(ExampleGroup("Adults' films from the adult test sets (never trained on)",
                                   [str(folder / row["file"]) for row in rows], labels,
                                   "Drawn at random from the adult test sets, whatever the model answers on them:\n"
                                   + "\n".join(lines)))
    return groups

