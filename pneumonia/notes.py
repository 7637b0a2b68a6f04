"""Plain-language text shown beside a result: what the label means and what to look for.

Kept apart from the code so a clinician can review the wording in one place.
"""

DISCLAIMER = (
    "**Decision support only, not a diagnosis.** This research demo has not been validated for "
    "clinical use and is not a medical device. It was trained on children's frontal films from one "
    "hospital and adults' frontal films from a few others, it is weaker on adults and weaker still on "
    "films from hospitals it never saw; a qualified clinician must read every film."
)

FINDINGS = {
    "PNEUMONIA": (
        "**What the model's label means:** the film resembles the training films graded as pneumonia "
        "(bacterial or viral). It does not tell the two apart, nor locate disease precisely.\n\n"
        "**Findings that support pneumonia on a frontal film:**\n"
        "- *Lobar or segmental consolidation*: a homogeneous opacity that effaces vessels, often "
        "bounded by a fissure.\n"
        "- *Air bronchograms*: dark, branching airways visible inside the white consolidated lung.\n"
        "- *Interstitial or perihilar pattern*: streaky or reticular opacities radiating from the "
        "hila, peribronchial cuffing; more typical of viral infection in children.\n"
        "- *Silhouette sign*: loss of the heart border or a hemidiaphragm next to the opacity.\n"
        "- *Parapneumonic effusion*: blunting of a costophrenic angle or a meniscus.\n\n"
        "**When to escalate:** respiratory distress, low oxygen saturation, a large effusion or a "
        "white-out, or a clinical picture that disagrees with the film."
    ),
    "NORMAL": (
        "**What the model's label means:** the film resembles the training films graded as normal. "
        "Early or subtle disease, and findings outside the lungs, can be missed.\n\n"
        "**What a normal frontal film shows:** clear lung fields with vessels tapering to the "
        "periphery, sharp heart borders and hemidiaphragms, and sharp costophrenic angles.\n\n"
        "**When to escalate:** whenever symptoms persist or worsen, or the clinical findings "
        "(fever, crackles, hypoxia) suggest pneumonia despite this result."
    ),
    "UNKNOWN": (
        "**What the model's label means:** the upload is not one the model may read, so **no "
        "pneumonia assessment is given**; the reason is stated with the result. Its probabilities "
        "would be meaningless here and are not shown.\n\n"
        "**What is checked, in this order:** a DICOM file's header (modality, body part and view "
        "position); colour; how closely the image resembles the training films; and whether it "
        "shows two lung fields side by side, as a frontal film does. The side-by-side check was "
        "built and tested on drawn phantoms and on real frontal films only: no real lateral film "
        "was available to measure it on. None of these checks is complete: a film of another body "
        "part, a lateral view or a photograph of a film can still get a label.\n\n"
        "**What to do:** upload the original frontal (PA or AP) chest film, ideally the DICOM or a "
        "full-resolution export. A clinician should read the film in any case."
    ),
}

# Why an upload is answered UNKNOWN, one sentence a person can act on per cause. The keys are
# the causes pneumonia.dicom.find_header_refusal and pneumonia.ood.find_refusal return.
UNKNOWN_REASONS = {
    "modality": (
        "The DICOM file is not a plain radiograph (its modality is another kind of imaging, such as "
        "CT, MRI or ultrasound); upload a frontal chest X-ray (CR or DX)."
    ),
    "body_part": (
        "The DICOM file says the body part examined is not the chest; upload a frontal chest X-ray."
    ),
    "side_view": (
        "The DICOM file says this is a lateral or oblique view; the model reads frontal (PA or AP) "
        "chest films only, so upload the frontal film of the study."
    ),
    "colour": (
        "The image is in colour, and an X-ray film has none: it looks like a photograph or a "
        "screenshot. Upload the film itself (DICOM, or a PNG or JPEG export)."
    ),
    "unlike_training": (
        "The image does not look like the frontal chest films the model was trained on (it may be "
        "another body part, a lateral view, a photograph or a heavily cropped or annotated "
        "export); upload the original frontal (PA or AP) chest film."
    ),
    "lateral": (
        "The image shows one lung field instead of two side by side, as on a lateral (side) view; "
        "the model reads frontal (PA or AP) chest films only, so upload the frontal film."
    ),
}

# What the heatmap's colours mean (the page's legend; the colours are pneumonia.gradcam.COLORMAPS).
HEATMAP_LEGEND = (
    "Red: evidence for pneumonia; blue: evidence for a normal film; untinted: little either way. "
    "Same scale for every film, whatever the verdict. It shows where the evidence lies, not the "
    "outline of a lesion."
)
# Beside the legend: which answer the operating threshold gave for the film on show.
HEATMAP_VERDICT = "The threshold gave {label}."
# In place of the map when the model records no heatmap scale (metadata.heatmap).
HEATMAP_MISSING = ("No heatmap: this model records no heatmap scale. Record one with "
                   "python -m pneumonia fit-heatmap.")

MODEL_CARD_INTENDED_USE = (
    "**Intended use.** A teaching and research demonstration of how a convolutional network can "
    "flag frontal chest films for a second look. It is not intended to diagnose, to triage real "
    "patients, or to replace a radiologist's report."
)

MODEL_CARD_NOT_COVERED = (
    "Not covered: lateral views, neonates, and conditions other than pneumonia (effusion alone, masses, "
    "heart failure, tuberculosis), which may be misread. The label does not separate bacterial from viral "
    "pneumonia. Children's films come from one hospital (Guangzhou, ages 1 to 5); adults' from the NIH "
    "Clinical Center (USA) and, where the model was trained on them, BIMCV (Spain) and MIDRC-RICORD (USA), "
    "whose pneumonia is mostly COVID-19."
)
MODEL_CARD_LICENCES = (
    "**Licences of the training data.** Kermany et al. 2018: CC BY 4.0. NIH ChestX-ray14: unrestricted use "
    "with citation. SIIM-FISABIO-RSNA COVID-19 (BIMCV-COVID19+, MIDRC-RICORD, the latter CC BY-NC 4.0): "
    "**non-commercial research and education only**; a model trained on them, and this demo, inherit that."
)

MODEL_CARD_PRIVACY = (
    "**Privacy.** An upload is kept only in a temporary folder the app owns, shown back only to "
    "the person who sent it, and deleted automatically {retention}. Images, DICOM tags and "
    "results are never logged or stored."
)

_METRIC_NAMES = (
    ("sensitivity", "Sensitivity (pneumonia found)"),
    ("specificity", "Specificity (normal cleared)"),
    ("accuracy", "Accuracy"),
    ("roc_auc", "ROC AUC"),
    ("precision", "Positive predictive value"),
)
_SPLIT_NAMES = (("test", "Children's test set (Kermany test split)"),
                ("adult_test", "Adults' test set (radiologist-boxed pneumonia films and held-out normal patients, NIH)"),
                ("siim_test", "Adults' SIIM test split (radiologists' reads, a fifth of the studies; BIMCV, Spain, "
                              "and MIDRC-RICORD, USA)"),
                ("validation", "Validation split (it chose the calibration, so optimistic)"))
# How each population's films are named wherever a verdict, report or card speaks of them.
POPULATION_FILMS = {"child": "children's films", "adult": "adults' films"}


# The figures a caution compares between populations, in the order it states them.
CAUTION_FIGURES = (("roc_auc", "ROC AUC"), ("sensitivity", "sensitivity"), ("specificity", "specificity"))


def describe_verdict(verdict: dict) -> str:
    """The verdict in plain words: one or two sentences for the banner, the API, a CSV or a report.

    Args:
        verdict: :meth:`pneumonia.inference.Prediction.to_dict` (``label``,
            ``pneumonia_probability``, ``threshold``, ``reason``, ``age_group``, ``population``,
            ``population_source``; missing keys are read as ``None``). The ``caution`` is not
            repeated: it has its own field and its own box.

    Returns:
        Plain text, e.g. ``"Calibrated probability of pneumonia 97.0%, at or above the operating
        threshold for children's films of 38.2% (population estimated from the image): the answer
        is PNEUMONIA."``; for UNKNOWN, why no assessment is given.
    """
    label = str(verdict.get("label"))
    p = verdict.get("pneumonia_probability")
    age = verdict.get("age_group")
    age_text = f" Age group {age} (from the DICOM header)." if age else ""
    if p is None:
        return f"{verdict.get('reason') or UNKNOWN_TEXT} No pneumonia assessment is given ({label}).{age_text}"
    p, t = float(p), float(verdict["threshold"])
    population = verdict.get("population")
    whose = f" for {POPULATION_FILMS.get(population, str(population))}" if population else ""
    known_by = f" (population {verdict.get('population_source')})" if population else ""
    side = "at or above" if p >= t else "below"
    return (f"Calibrated probability of pneumonia {p:.1%}, {side} the operating threshold{whose} of {t:.1%}"
            f"{known_by}: the answer is {label}.{age_text}")


# An UNKNOWN verdict without a recorded reason.
UNKNOWN_TEXT = "This does not look like a frontal chest X-ray."


def count_in_ten(rate: float) -> str:
    """A rate as "about N in 10", for a sentence a person reads at a glance (``"fewer than 1"`` below 0.05)."""
    tenths = round(float(rate) * 10)
    return "fewer than 1" if tenths == 0 and rate > 0 else "none" if rate <= 0 else f"about {tenths}"


def describe_caution(population: str | None, metrics: dict, view: str | None = None) -> str | None:
    """A visible caution for a film of a population the model was measured weaker on, else ``None``.

    Children's films are most of the training data and their test split is the reference. An adult
    film gets a caution when the model's recorded adult test figures (``metrics["adult_test"]``)
    are below its children's (``metrics["test"]``) on any of :data:`CAUTION_FIGURES`, or when no
    adult figures were ever recorded. The caution leads in plain words: from the figures on a
    hospital the model was not trained on when they are recorded (``metrics["unseen_hospital"]``:
    ``sensitivity``, ``specificity``, ``roc_auc``, ``n``, ``description``), else from the adult
    test figures; then the figures themselves. A view of adult films on which the evaluation
    measured a figure below the lower 95% bound of the adults' own adds a sentence
    (:func:`describe_view_caution`). Every number comes from ``metrics``.

    Args:
        population: ``"child"``, ``"adult"`` or ``None`` (see :mod:`pneumonia.population`).
        metrics: the model's ``metadata.metrics``.
        view: the film's view from its DICOM header (``"PA"``, ``"AP"``), or ``None`` when unknown.

    Returns:
        Two to three sentences of plain text, or ``None``.
    """
    if population != "adult":
        return None
    adult, child = metrics.get("adult_test"), metrics.get("test") or {}
    unseen = metrics.get("unseen_hospital") or {}
    if not adult and not unseen:
        return ("Adult film: this model was never tested on adults' films, so its answer here has no "
                "measured accuracy. Read it with extra caution.")
    weaker = [key for key, _ in CAUTION_FIGURES if key in child and (adult or {}).get(key, 1.0) < child[key]]
    by_view = describe_view_caution(adult or {}, view)
    if not weaker and not unseen:
        return by_view
    source = unseen or adult
    found, cleared = source.get("sensitivity"), source.get("specificity")
    if unseen:
        parts = ([f"found {count_in_ten(found)} in 10 adult pneumonias"] if found is not None else []) + \
            ([f"cleared {count_in_ten(cleared)} in 10 normal films"] if cleared is not None else [])
        lead = f"At hospitals it never saw it {' and '.join(parts) or 'was measured'}."
    else:
        parts = ([f"misses {count_in_ten(1.0 - found)} in 10 pneumonias"] if found is not None else []) + \
            ([f"flags {count_in_ten(1.0 - cleared)} in 10 normal films"] if cleared is not None else [])
        lead = f"On adults' films it {' and '.join(parts) or 'is weaker than on children'}."
    figures = ", ".join(f"{name} {source[key]:.2f}" for key, name in _LEAD_FIGURES if key in source)
    # Where the figures come from is said by the model card; the film count only for the test set
    # quoted, so the unseen-hospital caution stays within three lines at 1280 px.
    films = f"; {source['n']} films" if source.get("n") and not unseen else ""
    return f"{lead[:-1]} ({figures}{films})." + (f" {by_view}" if by_view else "")


# The figures quoted after a caution's lead sentence, in that order.
_LEAD_FIGURES = (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("roc_auc", "ROC AUC"))


# What a view's test films are called in a caution, and what each figure counts.
_VIEW_NAMES = {"AP": "AP (often portable) films", "PA": "PA films"}
_VIEW_FIGURES = (("sensitivity", "On {view} it found only {right} of {n} pneumonias."),
                 ("specificity", "On normal {view} it cleared only {right} of {n}."))


def describe_view_caution(adult: dict, view: str | None) -> str | None:
    """A sentence on the adult views the evaluation measured the model clearly weaker on, else ``None``.

    A view counts as weaker on a figure when its rate on the adult test films of that view lies
    below the lower bound of the 95% interval of the same figure on all adult test films. With the
    view known (DICOM ``ViewPosition``) only that view is spoken of; unknown (JPEG, PNG ...), every
    weaker view is, since the film may be one.

    Args:
        adult: ``metadata.metrics["adult_test"]``, with ``by_view`` as recorded by ``evaluate --record``.
        view: ``"PA"``, ``"AP"``, or ``None`` when unknown.
    """
    by_view, bounds = adult.get("by_view") or {}, adult.get("ci95") or {}
    parts = []
    for figure, template in _VIEW_FIGURES:
        lower = (bounds.get(figure) or [None])[0]
        for name, found in sorted((by_view.get(figure) or {}).items()):
            if lower is None or (view and name != view) or not found["rate"] < lower:
                continue
            parts.append(template.format(right=round(found["rate"] * found["n"]), n=found["n"], rate=found["rate"],
                                         view=_VIEW_NAMES.get(name, f"{name} films")))
    return " ".join(parts) or None


def format_model_card(metadata, retention_s: int | None = None) -> str:
    """The model card as Markdown: data, figures with 95% intervals, intended use and limits.

    Args:
        metadata: a :class:`pneumonia.model.ModelMetadata`; missing or partial ``metrics`` and
            ``training`` entries are left out rather than failing.
        retention_s: how long temporary copies of uploads live, for the privacy note.

    Returns:
        Markdown text.
    """
    training = getattr(metadata, "training", None) or {}
    metrics = getattr(metadata, "metrics", None) or {}
    populations = getattr(metadata, "fitted_populations", None) or {}
    lines = [f"**Model** version {getattr(metadata, 'version', '?')}"]
    if getattr(metadata, "architecture", ""):
        lines[0] += f": {metadata.architecture}"
    lines[0] += f"; input {metadata.input_size} x {metadata.input_size} px grayscale."
    data = training.get("dataset") or training.get("data")
    if data:
        lines.append(f"**Data.** {data}" + _film_counts(training) + ".")
    if training.get("unverified_labels"):
        lines.append(f"**Weak labels.** {training['unverified_labels']}: NIH report labels text-mined and never "
                     "checked by a radiologist; about half of such labels hold up on re-reading.")
    if populations:
        lines.append("**Operating points.** PNEUMONIA when the calibrated probability is at least " + "; ".join(
            f"{float(v['threshold']):.1%} for {POPULATION_FILMS.get(k, k)}" for k, v in populations.items())
            + " (temperature scaling and threshold fitted on each population's validation films). The population "
            "comes from a DICOM's patient age, else it is estimated from the image.")
    else:
        lines.append(
            f"**Operating point.** PNEUMONIA when the calibrated probability is at least "
            f"{float(metadata.threshold):.1%} (temperature-scaled, fitted on the validation split)."
        )
    tables = 0
    for key, title in _SPLIT_NAMES:
        figures = metrics.get(key)
        if not isinstance(figures, dict) or not figures:
            continue
        nested = {k: v for k, v in figures.items() if k in POPULATION_FILMS and isinstance(v, dict)}
        for name, part in (nested.items() if nested else [(None, figures)]):
            lines.append(_metrics_table(title + (f", {POPULATION_FILMS[name]}" if name else ""), part))
            tables += 1
        gate = _gate_sentence(figures.get("gate"))
        if gate:
            lines.append(gate)
    unseen = describe_unseen_hospitals(metrics)
    if unseen:
        lines.append(unseen)
    for key, films in (("pointing_game", "NIH adult films with a radiologist's pneumonia box"),
                       ("pointing_game_siim", "SIIM test films with radiologists' opacity boxes")):
        game = describe_pointing_game(metrics.get(key), films)
        if game:
            lines.append(game)
    heatmap = getattr(metadata, "heatmap", None) or {}
    if isinstance(heatmap.get("scale"), (int, float)):
        lines.append(f"**Heatmap.** Each cell's evidence (its share of the logit) on one scale for every film: red "
                     f"for pneumonia, blue for a normal film, full colour at {heatmap['scale']:.3g} ("
                     f"{heatmap.get('rule') or 'rule not recorded'}).")
    if not tables:
        lines.append("*No evaluation figures are recorded for this model.*")
    elif not isinstance(metrics.get("test"), dict):
        lines.append("*Test-set figures are not recorded yet; the validation split guided training "
                     "and calibration, so its figures are optimistic.*")
    retention = f"within {_duration(retention_s)}" if retention_s else "when the app stops"
    lines += [MODEL_CARD_INTENDED_USE, describe_limits(metrics), MODEL_CARD_LICENCES,
              MODEL_CARD_PRIVACY.format(retention=retention),
              DISCLAIMER]
    return "\n\n".join(lines)


def describe_pointing_game(game, films: str) -> str:
    """One sentence on whether the heatmap points at the disease, from a recorded pointing game.

    Args:
        game: ``metrics["pointing_game"]`` or ``metrics["pointing_game_siim"]`` (may be absent).
        films: what the films are, in words.

    Returns:
        The sentence, or ``""`` when nothing is recorded.
    """
    if not isinstance(game, dict) or not isinstance(game.get("hit_rate"), (int, float)):
        return ""
    text = (f"**Does the heatmap point at the disease?** On {game.get('n')} {films}, the peak of the pneumonia "
            f"evidence lies within {game.get('tolerance_px'):g} px of a box on {game['hit_rate']:.0%}")
    ci = game.get("ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        text += f" (95% CI {ci[0]:.0%} to {ci[1]:.0%})"
    lower = game.get("lower_lung_points")
    if isinstance(lower, dict) and lower:
        text += (", against " + " and ".join(f"{v['hit_rate']:.0%}" for v in lower.values())
                 + " for a fixed point in the middle of either lower lung zone")
    best = game.get("best_fixed_point") or {}
    if isinstance(best.get("hit_rate"), (int, float)):
        text += f" and {best['hit_rate']:.0%} for the best single fixed point searched on these films"
    if isinstance(game.get("box_cover"), (int, float)):
        text += f"; the boxes cover {game['box_cover']:.0%} of a film on average (how easy a hit is)"
    return text + "."


def describe_unseen_hospitals(metrics: dict) -> str:
    """The leave-one-source-out figures in one paragraph, from ``metrics["leave_one_source_out"]``."""
    parts = metrics.get("leave_one_source_out")
    if not isinstance(parts, dict) or not parts:
        return ""
    names = {"siim": "the SIIM test split (Spain, USA)", "nih": "the NIH adult test set (USA)"}
    sentences = []
    for key, part in parts.items():
        if not isinstance(part, dict) or not isinstance(part.get("roc_auc"), (int, float)):
            continue
        sentences.append(f"on {names.get(key, key)} by a model trained without those hospitals: ROC AUC "
                         f"{part['roc_auc']:.2f}, sensitivity {part['sensitivity']:.2f}, specificity "
                         f"{part['specificity']:.2f} ({part.get('n')} films)")
    if not sentences:
        return ""
    return ("**A hospital it never saw.** Models trained with the same recipe but without one adult source, each "
            "scored on that source's test films: " + "; ".join(sentences) + ". Expect figures like these, not the "
            "in-sample ones, on films from your own hospital.")


def describe_limits(metrics: dict) -> str:
    """The model card's limits, every number from the recorded metrics (a new model keeps them true)."""
    text = "**Limits.** "
    adult = metrics.get("adult_test")
    if isinstance(adult, dict) and isinstance(adult.get("n_pneumonia"), int):
        text += (f"The NIH adult test set is small ({adult['n_pneumonia']} radiologist-boxed pneumonia films, "
                 f"{adult.get('n_normal')} normals), so its figures have wide intervals. ")
    text += MODEL_CARD_NOT_COVERED
    game = metrics.get("pointing_game_siim") or metrics.get("pointing_game")
    if isinstance(game, dict) and isinstance(game.get("hit_rate"), (int, float)):
        fixed = [v.get("hit_rate") for v in (game.get("lower_lung_points") or {}).values()]
        fixed.append((game.get("best_fixed_point") or {}).get("hit_rate"))
        fixed = max((f for f in fixed if isinstance(f, (int, float))), default=None)
        if fixed is not None and game["hit_rate"] < fixed + 0.15:
            text += (f" The heatmap is not a lesion outline: its peak fell on a box on {game['hit_rate']:.0%} of the "
                     f"boxed films, against {fixed:.0%} for a fixed point.")
    return text


def _film_counts(training: dict) -> str:
    """`` (4400 training films, 778 validation films)``, per population where the counts are."""
    parts = []
    for key, label in (("train_films", "training"), ("val_films", "validation")):
        count = training.get(key)
        if isinstance(count, int):
            parts.append(f"{count} {label} films")
        elif isinstance(count, dict):
            parts.append(f"{label}: " + ", ".join(f"{n} {POPULATION_FILMS.get(k, k)}" for k, n in count.items()))
    return f" ({'; '.join(parts)})" if parts else ""


def _gate_sentence(gate) -> str:
    """One line on the not-a-chest-X-ray gate from its evaluation figures, if recorded."""
    if not isinstance(gate, dict):
        return ""
    parts = []
    negatives, unknown = gate.get("negatives"), gate.get("negatives_unknown")
    if isinstance(negatives, int) and isinstance(unknown, int) and negatives:
        parts.append(f"UNKNOWN for {unknown} of {negatives} images that are not chest films")
    xrays, flagged = gate.get("xrays"), gate.get("xrays_flagged_unknown")
    if isinstance(xrays, int) and isinstance(flagged, int) and xrays:
        parts.append(f"wrongly UNKNOWN for {flagged} of {xrays} test chest films")
    return ("**Not-a-chest-X-ray check.** " + "; ".join(parts) + ".") if parts else ""


def _metrics_table(title: str, figures: dict) -> str:
    intervals = figures.get("ci95") if isinstance(figures.get("ci95"), dict) else {}
    n = figures.get("n")
    header = f"**{title}**" + (f" ({n} films)" if isinstance(n, int) else "")
    rows = ["| Measure | Value | 95% CI |", "|---|---|---|"]
    for key, name in _METRIC_NAMES:
        value = figures.get(key)
        if not isinstance(value, (int, float)):
            continue
        ci = intervals.get(key)
        ci_text = "n/a"
        if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
            ci_text = f"{ci[0]:.3f} to {ci[1]:.3f}"
        rows.append(f"| {name} | {value:.3f} | {ci_text} |")
    if len(rows) == 2:
        return header + ": no figures recorded."
    return header + "\n\n" + "\n".join(rows)


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} hour" + ("s" if seconds != 3600 else "")
    if seconds % 60 == 0:
        return f"{seconds // 60} minutes"
    return f"{seconds} seconds"

