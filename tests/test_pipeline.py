"""Training smoke run, evaluation on a tiny folder, the batch CLI, and library/CLI agreement."""

import csv
import json
import shutil

import numpy as np
import pytest

from pneumonia.__main__ import main as cli_main
from pneumonia.model import load_model
from pneumonia.train import TrainConfig, train_model


def test_training_smoke_run_writes_a_loadable_model(films, tmp_path):
    config = TrainConfig(input_size=64, widths=(8, 8, 16), epochs=2, batch_size=2, val_fraction=0.3, seed=1)
    meta = train_model(films, tmp_path, config, log=lambda m: None)
    model, metadata = load_model(tmp_path)
    assert metadata.input_size == 64 and meta["training"]["epochs_run"] >= 1
    assert 0 < metadata.threshold < 1 and metadata.temperature > 0
    assert set(meta["metrics"]["validation"]) >= {"roc_auc", "accuracy", "sensitivity", "specificity", "ece"}


def test_training_with_equalization_records_it_with_the_weights(films, tmp_path):
    config = TrainConfig(input_size=64, widths=(8, 8, 16), epochs=1, batch_size=2, val_fraction=0.3, seed=1,
                         swa_epochs=0, clahe_clip=2.0)
    meta = train_model(films, tmp_path, config, log=lambda m: None)
    model, metadata = load_model(tmp_path)
    assert model.get_layer("equalize").clip_limit == 2.0
    assert "CLAHE, clip 2" in metadata.normalization and meta["training"]["config"]["clahe_clip"] == 2.0


def test_balanced_sampling_draws_both_classes_alike_from_an_imbalanced_split():
    from pneumonia.train import make_datasets

    films = np.arange(400).astype(np.uint8).reshape(400, 1, 1).repeat(4, 1).repeat(4, 2)
    labels = np.array([0] * 100 + [1] * 300)  # 1 : 3, like the training split's 1 : 2.9
    plain, _ = make_datasets(films, labels, films[:4], labels[:4],
                            TrainConfig(batch_size=8, augment=False, balanced_sampling=False))
    balanced, _ = make_datasets(films, labels, films[:4], labels[:4],
                                TrainConfig(batch_size=8, augment=False, balanced_sampling=True))
    epochs = [np.concatenate([y.numpy()[:, 0] for _, y in balanced]) for _ in range(3)]
    assert all(len(e) == 400 for e in epochs)  # as many batches per epoch as the plain pipeline
    assert 0.44 < np.mean(epochs) < 0.56
    assert np.concatenate([y.numpy()[:, 0] for _, y in plain]).mean() == pytest.approx(0.75)
    assert not np.array_equal(epochs[0], epochs[1])  # a fresh draw every epoch


def test_weight_averaging_run_averages_and_refits_batch_statistics(films, tmp_path):
    config = TrainConfig(input_size=64, widths=(8, 8, 16), epochs=3, batch_size=2, val_fraction=0.3, seed=1,
                         swa_epochs=2)
    meta = train_model(films, tmp_path, config, log=lambda m: None)
    assert meta["training"]["epochs_run"] == 3 and meta["training"]["config"]["swa_epochs"] == 2
    model, _ = load_model(tmp_path)
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_recomputed_batch_statistics_are_the_exact_mean_over_the_batches():
    import keras
    import tensorflow as tf

    from pneumonia.train import recompute_batch_statistics

    model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc, 1.0, (4, 3)).astype(np.float32) for loc in (0.0, 2.0, 10.0)]
    dataset = tf.data.Dataset.from_tensor_slices((np.concatenate(batches), np.zeros(12))).batch(4)
    recompute_batch_statistics(model, dataset)
    norm = model.layers[0]
    assert np.allclose(norm.moving_mean.numpy(), np.mean([b.mean(axis=0) for b in batches], axis=0), atol=1e-5)
    assert np.allclose(norm.moving_variance.numpy(), np.mean([b.var(axis=0) for b in batches], axis=0), atol=1e-4)
    assert norm.momentum == 0.99  # restored


def test_evaluate_writes_metrics_report_and_plots(films, tmp_path, predictor):
    code = cli_main(["evaluate", "--data", str(films), "--out", str(tmp_path), "--bootstrap", "50"])
    assert code == 0
    result = json.loads((tmp_path / "metrics.json").read_text())
    m = result["metrics"]
    assert m["n"] == 8 and sum(map(sum, m["confusion_matrix"])) == 8
    # Recompute accuracy independently from the library's own answers.
    labels = [0] * 4 + [1] * 4
    preds = [predictor.predict(p).label == "PNEUMONIA" for p in sorted(films.glob("*/*.jpeg"))]
    assert m["accuracy"] == pytest.approx(np.mean(np.array(preds) == np.array(labels)))
    for name in ("report.md", "confusion_matrix.png", "roc.png", "precision_recall.png", "reliability.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_batch_cli_reports_broken_files_and_goes_on(films, tmp_path, predictor):
    folder = tmp_path / "in"
    shutil.copytree(films, folder)
    (folder / "broken.jpeg").write_bytes(b"this is not a jpeg")
    (folder / "nested").mkdir()
    shutil.copy(next(films.glob("PNEUMONIA/*.jpeg")), folder / "nested" / "copy.jpeg")
    out = tmp_path / "out.csv"
    assert cli_main(["predict", str(folder), "--csv", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 10
    assert {"path", "label", "pneumonia_probability", "error"} <= set(rows[0])
    broken = [r for r in rows if r["path"].endswith("broken.jpeg")][0]
    assert broken["error"] and broken["label"] == "" and broken["pneumonia_probability"] == ""
    for row in rows:
        if not row["error"]:
            expected = predictor.predict(row["path"])
            assert row["label"] == expected.label
            assert float(row["pneumonia_probability"]) == pytest.approx(expected.pneumonia_probability, abs=1e-4)


def test_prediction_fields(predictor, example_paths):
    result = predictor.predict(example_paths[0], explain=True, max_overlay_side=512)
    assert result.label in ("NORMAL", "PNEUMONIA")
    assert set(result.probabilities) == {"NORMAL", "PNEUMONIA"}
    assert sum(result.probabilities.values()) == pytest.approx(1.0)
    assert max(result.overlay.size) == 512


@pytest.mark.parametrize("kind", ["path", "bytes", "pil", "array"])
def test_predict_accepts_every_input_kind(predictor, film_paths, kind):
    from PIL import Image

    path = film_paths[-1]
    source = {"path": lambda: path, "bytes": path.read_bytes, "pil": lambda: Image.open(path),
              "array": lambda: np.asarray(Image.open(path))}[kind]()
    assert predictor.predict(source).pneumonia_probability == pytest.approx(
        predictor.predict(path).pneumonia_probability, abs=1e-6)


def test_mixup_blends_films_and_labels_with_the_same_weight():
    import keras
    import tensorflow as tf

    from pneumonia.train import mix_pairs

    # Each film is a constant whose value is also its label, so a mixed film's value is the
    # blend its label must equal if both used the same weight and partner.
    values = np.array([0.0, 0.25, 0.5, 1.0], np.float32)
    images = tf.constant(np.broadcast_to(values[:, None, None, None], (4, 6, 6, 1)).copy())
    labels = tf.constant(values[:, None])
    mixed, mixed_labels = mix_pairs(images, labels, 0.4, keras.random.SeedGenerator(3))
    mixed, mixed_labels = mixed.numpy(), mixed_labels.numpy()
    assert np.allclose(mixed, mixed[:, :1, :1, :], atol=1e-6)  # still constant films
    assert np.allclose(mixed[:, 0, 0, 0], mixed_labels[:, 0], atol=1e-6)  # same weight, same partner
    assert mixed_labels.min() >= 0.0 and mixed_labels.max() <= 1.0
