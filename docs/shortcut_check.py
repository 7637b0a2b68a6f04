"""Shortcut check on the shipped model: does blurring or sharpening a film move P(pneumonia)?

Run from the repository root: ``PYTHONPATH=. python docs/shortcut_check.py`` (needs ../shared/data).
A one-off measurement quoted in README and docs/experiments.md, not part of the package.
"""
import numpy as np
import cv2
from pneumonia import Predictor
from pneumonia.data import list_records, list_adult_records, split_adult_records
from pneumonia.preprocessing import read_image
p = Predictor.load()
def prob(g): return p.predict(g.astype(np.float32)).pneumonia_probability
for name, recs in (("children test", list_records("../shared/data/chest_xray/test")),
                   ("adult test", split_adult_records(list_adult_records("../shared/data/adult_nih"))[1])):
    for label in (0, 1):
        rs = [r for r in recs if r.label == label][:80]
        base, blur, sharp = [], [], []
        for r in rs:
            g = read_image(r.path); s = max(g.shape) / 224 * 2.0
            b = cv2.GaussianBlur(g, (0, 0), s)
            base.append(prob(g)); blur.append(prob(b)); sharp.append(prob(np.clip(g + 0.6 * (g - b), 0, 1)))
        base, blur, sharp = map(np.array, (base, blur, sharp))
        print(f"{name} {['NORMAL','PNEUMONIA'][label]} n={len(rs)}: mean P {base.mean():.3f}; blurred {blur.mean():.3f} "
              f"(mean change {np.mean(blur-base):+.3f}); sharpened {sharp.mean():.3f} ({np.mean(sharp-base):+.3f})")
