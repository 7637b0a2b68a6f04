"""What the app's page shows: its styles, HTML pieces and the text of each state of the verdict.

Pure functions from data to strings (no Gradio, no I/O), so ``app.py`` only lays out the page and
wires its events, and each piece can be tested on its own. The verdict banner reads the verdict
dict of :meth:`pneumonia.inference.Prediction.to_dict`, the one serialisation every interface
uses, with ``.get`` for the keys that only some verdicts carry (``reason``, ``age_group``).
"""

from __future__ import annotations

import hashlib
import html
from typing import Mapping, Optional

from pneumonia.notes import DISCLAIMER, HEATMAP_SCALE, POPULATION_FILMS

VIEWS = ("Overlay", "Original")
TITLE = "Chest X-ray pneumonia screening"
INTRO = (f"# {TITLE}\nUpload a frontal chest X-ray (image or DICOM) or pick an example: a CNN answers "
         "NORMAL or PNEUMONIA with a calibrated probability and a Grad-CAM heatmap of where it looked "
         "(**Analyze** runs it again).")
API_DESCRIPTION = ("Classify one chest X-ray (DICOM, JPEG, PNG, TIFF, BMP or WebP) and explain it. Returns the "
                   "calibrated confidences (gr.Label), the Grad-CAM overlay at heatmap opacity `alpha` (none for "
                   "UNKNOWN) and the verdict: Prediction.to_dict(), whose `label` is the thresholded answer.")
NOTES_PLACEHOLDER = "What the result means, what to look for on the film and when to escalate appear here."
# On a phone the result sits below the examples: bring it (and its progress bar) into view.
SCROLL_TO_RESULT_JS = """() => { if (window.innerWidth < 768) {
  document.getElementById("verdict")?.scrollIntoView({behavior: "smooth", block: "start"}); } }"""

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
.bar { flex: 0 0 96px; height: 10px; border-radius: 5px; border: 1px solid rgba(0, 0, 0, .15);
  background: linear-gradient(90deg, rgba(128, 128, 128, .25) 0%, #1e3cff 18%, #00d5ff 42%,
  #ffe600 66%, #ff2a00 88%, #8b0000 100%); }
.text { flex: 1 1 280px; min-width: 0; }
"""

NOTICE_CSS = """
.notice { margin: -10px -12px; border: 1px solid #e0b84c; background: #fff8e1; color: #5b4500; border-radius: 8px;
  padding: 8px 12px; font-size: .9rem; line-height: 1.45; }
"""

UNKNOWN_TEXT = ("This does not look like a frontal chest X-ray, so no pneumonia assessment is given. "
                "See the notes below.")


def make_banner(kind: str, title: str, *paragraphs: str) -> str:
    """A verdict-area box: ``kind`` picks its colours, ``paragraphs`` are HTML already escaped."""
    body = "".join(f"<p>{paragraph}</p>" for paragraph in paragraphs)
    return (f'<div class="verdict {kind}" role="status" aria-live="polite">'
            f"<h2>{html.escape(title)}</h2>{body}</div>")


IDLE_BANNER = make_banner("idle", "No result yet",
                          "Upload a film or pick an example: the verdict and heatmap appear here.")


def error_banner(message: str, title: str = "Cannot analyse this file") -> str:
    """The one place an error is shown: where the verdict goes, in words, with no stack trace."""
    return make_banner("error", title, html.escape(message))


def verdict_html(verdict: Mapping) -> str:
    """The coloured verdict banner: label, calibrated probability and operating threshold.

    Args:
        verdict: :meth:`pneumonia.inference.Prediction.to_dict`. A verdict with no probability
            (``UNKNOWN``: not a frontal chest film) gets a grey banner with the ``reason`` instead,
            since the classifier's output means nothing for such an image. An ``age_group``, when
            present, is shown beside the label; the ``population`` whose threshold decided it, and
            how it was known, beside the threshold; a ``caution`` above the probability.

    Returns:
        HTML.
    """
    label = str(verdict["label"])
    age = verdict.get("age_group")
    heading = html.escape(label) + (f'<span class="age">age group {html.escape(str(age))}</span>' if age else "")
    kind = html.escape(label.lower())
    p = verdict.get("pneumonia_probability")
    if p is None:
        reason = verdict.get("reason")
        text = html.escape(reason if reason else UNKNOWN_TEXT)
        more = "" if not reason else "<p>No pneumonia assessment is given. See the notes below.</p>"
        return (f'<div class="verdict {kind}" role="status" aria-live="polite">'
                f"<h2>{heading}</h2><p>{text}</p>{more}</div>")
    p, t = float(p), float(verdict["threshold"])
    side = "at or above" if p >= t else "below"
    label_at = min(max(t, 0.12), 0.88)  # keep the "threshold" caption clear of "0%" and "100%"
    population = verdict.get("population")
    whose = f" for {html.escape(POPULATION_FILMS.get(population, str(population)), quote=False)}" if population else ""
    known_by = f" (population {html.escape(str(verdict.get('population_source')))})" if population else ""
    caution = verdict.get("caution")
    return (
        f'<div class="verdict {kind}" role="status" aria-live="polite">'
        f"<h2>{heading}</h2>"
        + (f'<p class="caution"><strong>Caution.</strong> {html.escape(str(caution))}</p>' if caution else "")
        + f"<p>Calibrated probability of pneumonia <strong>{p:.1%}</strong>, {side} the operating "
        f"threshold{whose} of <strong>{t:.1%}</strong>{known_by}.</p>"
        f'<div class="track" aria-hidden="true"><div class="fill" style="width:{p:.1%}"></div>'
        f'<div class="cut" style="left:{t:.1%}"></div></div>'
        f'<div class="scale" aria-hidden="true"><span>0%</span>'
        f'<span class="at" style="left:{label_at:.1%}">threshold</span><span class="hi">100%</span></div>'
        "</div>"
    )


def format_confidences(verdict: Mapping, probabilities: Mapping[str, float]) -> dict | str:
    """What ``gr.Label`` shows: the calibrated probabilities, or just the label when there are none."""
    return dict(probabilities) if verdict.get("pneumonia_probability") is not None else str(verdict["label"])


def notice_html() -> str:
    """The "decision support only" notice, ``**bold**`` kept."""
    return f'<div class="notice" role="note">{bold(DISCLAIMER)}</div>'


def legend_html() -> str:
    """The one-line colour scale under the overlay."""
    return ('<div class="legend"><span class="bar" role="img" aria-label="Colour scale from untinted through '
            f'blue, yellow to red"></span><span class="text">{html.escape(HEATMAP_SCALE)}</span></div>')


def bold(markdown: str) -> str:
    """Escape text for HTML, turning ``**bold**`` into ``<strong>``."""
    parts = html.escape(markdown).split("**")
    return "".join(f"<strong>{part}</strong>" if i % 2 else part for i, part in enumerate(parts))


def identify_film(film: Optional[bytes]) -> Optional[str]:
    """A short fingerprint of an upload's bytes: which film a kept result belongs to."""
    return None if film is None else hashlib.blake2b(film, digest_size=16).hexdigest()
