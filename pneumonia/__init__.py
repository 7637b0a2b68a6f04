"""Chest X-ray pneumonia screening: preprocessing, a Keras CNN, Grad-CAM and inference.

``from pneumonia import Predictor`` is resolved lazily so that importing the package never loads
TensorFlow or a model.
"""

__version__ = "0.1.0"
__all__ = ["Predictor", "Prediction", "PneumoniaError", "InvalidImageError", "ModelLoadError", "__version__"]

from pneumonia.errors import InvalidImageError, ModelLoadError, PneumoniaError


def __getattr__(name):
    if name in ("Predictor", "Prediction"):
        from pneumonia import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'pneumonia' has no attribute {name!r}")
