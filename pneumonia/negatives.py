"""A varied set of images that are *not* frontal chest X-rays, built from what packages ship.

Used only to measure the UNKNOWN gate (never to build it): photographs, faces, animals, documents
and text, screenshots of charts, drawings and patterns, astronomy, microscopy and histology,
retinal photographs, a CT phantom, an MRI slice, terrain maps, and synthetic noise, blank frames
and an ultrasound-like speckle fan. Sources: scikit-image's bundled data, matplotlib's and
scikit-learn's sample images, and images drawn here. Needs ``scikit-image`` (a dev requirement).
"""

from __future__ import annotations

import gzip
import io
import os
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

SKIMAGE_IMAGES = (
    "astronaut", "brick", "camera", "cell", "chelsea", "checkerboard", "clock", "coffee", "coins",
    "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
    "microaneurysms", "moon", "page", "retina", "rocket", "text", "shepp_logan_phantom",
)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    low, high = np.nanmin(array), np.nanmax(array)
    return np.round((array - low) / (high - low + 1e-12) * 255).astype(np.uint8)


def _package_images() -> Iterator[tuple[str, np.ndarray]]:
    import matplotlib
    import skimage.data
    import sklearn.datasets

    for name in SKIMAGE_IMAGES:
        image = getattr(skimage.data, name)()
        yield f"skimage:{name}", image if image.dtype == np.uint8 else _to_uint8(image)
    faces = skimage.data.lfw_subset()
    for i in range(0, 100, 20):
        yield f"skimage:lfw_face_{i}", np.asarray(Image.fromarray(_to_uint8(faces[i])).resize((150, 150)))
    sample = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data")
    for name in ("grace_hopper.jpg", "logo2.png", "Minduka_Present_Blue_Pack.png"):
        yield f"matplotlib:{name}", np.asarray(Image.open(os.path.join(sample, name)).convert("RGB"))
    with gzip.open(os.path.join(sample, "s1045.ima.gz")) as f:  # an MRI slice, 256 x 256 uint16
        yield "matplotlib:mri_slice", _to_uint8(np.frombuffer(f.read(), np.uint16).reshape(256, 256))
    for name in ("topobathy.npz", "jacksboro_fault_dem.npz"):
        with np.load(os.path.join(sample, name)) as data:
            yield f"matplotlib:{name}", _to_uint8(data[data.files[0]])
    for i, image in enumerate(sklearn.datasets.load_sample_images().images):
        yield f"sklearn:sample_{i}", image


def _drawn_images(rng: np.random.Generator) -> Iterator[tuple[str, np.ndarray]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield "synthetic:uniform_noise", rng.integers(0, 256, (400, 400), dtype=np.uint8)
    yield "synthetic:gaussian_noise", np.clip(rng.normal(128, 40, (400, 400)), 0, 255).astype(np.uint8)
    yield "synthetic:gradient", np.tile(np.linspace(0, 255, 400).astype(np.uint8), (400, 1))
    yield "synthetic:blank_white", np.full((300, 300), 255, np.uint8)
    yield "synthetic:blank_grey", np.full((300, 300), 90, np.uint8)
    yield "synthetic:checker", (np.indices((400, 400)).sum(axis=0) // 25 % 2 * 255).astype(np.uint8)
    circles = np.hypot(*np.indices((400, 400)) - 200)
    yield "synthetic:rings", (np.sin(circles / 6) * 127 + 128).astype(np.uint8)

    document = Image.new("L", (600, 800), 255)
    draw = ImageDraw.Draw(document)
    for line in range(30):
        draw.text((40, 30 + 25 * line), "Lorem ipsum dolor sit amet, consectetur %d adipiscing elit." % line, fill=0)
    yield "synthetic:document", np.asarray(document)

    drawing = Image.new("RGB", (500, 500), "white")
    draw = ImageDraw.Draw(drawing)
    for _ in range(12):
        x, y = rng.integers(0, 450, 2)
        draw.ellipse((int(x), int(y), int(x) + 60, int(y) + 40), outline=tuple(int(v) for v in rng.integers(0, 255, 3)), width=4)
        draw.rectangle((int(y), int(x), int(y) + 50, int(x) + 70), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    yield "synthetic:drawing", np.asarray(drawing)

    # An ultrasound-like frame: speckle inside a fan on black.
    yy, xx = np.indices((480, 640))
    angle = np.arctan2(xx - 320, yy + 40)
    radius = np.hypot(xx - 320, yy + 40)
    fan = (np.abs(angle) < 0.6) & (radius > 80) & (radius < 500)
    speckle = rng.rayleigh(40, (480, 640)) * fan
    yield "synthetic:ultrasound_fan", np.clip(speckle, 0, 255).astype(np.uint8)

    for kind in ("line", "bar", "scatter"):
        fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
        x = np.arange(20)
        # The lambdas run at once, inside this iteration: the loop variables are the ones meant.
        {"line": lambda: ax.plot(x, np.cumsum(rng.normal(size=20))),  # noqa: B023
         "bar": lambda: ax.bar(x, rng.random(20)),  # noqa: B023
         "scatter": lambda: ax.scatter(rng.random(50), rng.random(50))}[kind]()  # noqa: B023
        ax.set_title(f"A {kind} chart")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        yield f"synthetic:{kind}_chart_screenshot", np.asarray(Image.open(buffer).convert("RGB"))


def make_negative_images(seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Every negative image, each also rotated by 90 degrees and centre-cropped, for variety.

    Returns:
        ``[(name, uint8 array (H, W) or (H, W, 3|4)), ...]``; all at least 64 px on each side.
    """
    rng = np.random.default_rng(seed)
    out = []
    for name, image in list(_package_images()) + list(_drawn_images(rng)):
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[-1] == 4:
            image = image[..., :3]
        out.append((name, image))
        out.append((f"{name}/rot90", np.ascontiguousarray(np.rot90(image))))
        h, w = image.shape[:2]
        crop = image[h // 6: h - h // 6, w // 6: w - w // 6]
        if min(crop.shape[:2]) >= 64:
            out.append((f"{name}/crop", np.ascontiguousarray(crop)))
    return out
