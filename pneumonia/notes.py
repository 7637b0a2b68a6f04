"""Plain-language text shown beside a result: what the label means and what to look for.

Kept apart from the code so a clinician can review the wording in one place.
"""

DISCLAIMER = (
    "**Decision support only, not a diagnosis.** This research demo has not been validated for "
    "clinical use and is not a medical device. It was trained on paediatric frontal films from one "
    "hospital; a qualified clinician must read every film."
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
}

HEATMAP_LEGEND = (
    "Grad-CAM: red marks the regions that pushed the model most towards its answer, blue and "
    "untinted ones the least. It shows where the model looked, not the outline of a lesion."
)
