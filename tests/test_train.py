"""What training applies, each piece against an independent computation: the intensity and geometric
augmentations, weight averaging with batch-norm recomputation, the splits, and a smoke run on both
populations (the sampling, soft targets, box masks and box loss: tests/test_recipe.py)."""

import csv
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage

from pneumonia.data import Record, list_adult_records, split_adult_records
from pneumonia.model import load_model, update_metadata
from pneumonia.recipe import adjust_intensity, augment_batch, build_augmenter, gaussian_blur
from pneumonia.train import (THRESHOLD_RULE, TrainConfig, config_from_metadata, describe_data, describe_weights,
                             make_weight_averager, recalibrate_model, recompute_batch_statistics, split_records,
                             train_model)


@pytest.fixture
def ramp_films():
    """Two 24 x 24 films: a diagonal ramp and a bright square on black, ``float32 (2, 24, 24, 1)``."""
    ramp = np.add.outer(np.arange(24), np.arange(24)).astype(np.float32) / 46.0
    square = np.zeros((24, 24), np.float32)
    square[8:16, 5:12] = 0.9
    return np.stack([ramp, square])[..., None]


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_gaussian_blur_equals_scipy_with_mirrored_borders(ramp_films, sigma):
    got = gaussian_blur(ramp_films, sigma).numpy()
    # tf's REFLECT padding leaves the edge pixel out, as scipy's "mirror" does; radius round(3 sigma).
    expected = np.stack([ndimage.gaussian_filter(f[..., 0], sigma, mode="mirror", truncate=int(3 * sigma + 0.5) / sigma)
                         for f in ramp_films])[..., None]
    assert np.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("low,high,log_gamma,blur", [(0.0, 1.0, 0.0, 0.0), (0.1, 0.9, 0.3, 0.8), (0.05, 0.95, -0.4, -0.6)])
def test_adjust_intensity_follows_its_formula(ramp_films, low, high, log_gamma, blur):
    noise = np.random.default_rng(0).normal(0, 0.02, ramp_films.shape).astype(np.float32)
    full = lambda v: np.full((2, 1, 1, 1), v, np.float32)  # noqa: E731
    got = adjust_intensity(ramp_films, full(low), full(high), full(log_gamma), full(blur), noise).numpy()
    x = np.clip((ramp_films - low) / (high - low), 0, 1)
    x = (x + 1e-6) ** np.exp(log_gamma)
    blurred = np.stack([ndimage.gaussian_filter(f[..., 0], 2.0, mode="mirror", truncate=3.0) for f in x])[..., None]
    expected = np.clip(x + blur * (blurred - x) + noise, 0, 1)
    assert np.allclose(got, expected, atol=1e-5)


def test_augment_batch_draws_its_own_change_for_every_film_and_stays_in_range():
    import keras

    films = np.full((6, 16, 16, 1), 0.5, np.float32)
    out = augment_batch(films, keras.random.SeedGenerator(1)).numpy()
    assert out.min() >= 0.0 and out.max() <= 1.0
    means = out.mean(axis=(1, 2, 3))
    assert len(np.unique(np.round(means, 4))) == 6  # six films, six different exposures
    again = augment_batch(films, keras.random.SeedGenerator(1)).numpy()
    assert np.array_equal(out, again)  # reproducible from the seed


def test_geometric_augmentation_never_flips_left_and_right():
    """A blob on the film's right side (the patient's left) stays there under rotation, zoom and shift."""
    film = np.zeros((1, 64, 64, 1), np.float32)
    film[0, 26:38, 44:54] = 1.0
    augmenter = build_augmenter(seed=3)
    for _ in range(20):
        out = augmenter(np.repeat(film, 8, axis=0), training=True).numpy()[..., 0]
        for image in out:
            cols = np.nonzero(image.sum(axis=0) > 0.5)[0]
            assert cols.size and cols.mean() > 36  # the centre column is 32


def test_weight_averager_returns_the_mean_of_the_epochs_in_its_window():
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    averager = make_weight_averager(start=2)
    averager.set_model(model)
    seen = []
    for epoch in range(5):
        weights = [np.full(w.shape, epoch + 1.0, np.float32) for w in model.get_weights()]
        model.set_weights(weights)
        averager.on_epoch_end(epoch)
        if epoch >= 2:
            seen.append(weights)
    average = averager.average()
    for i, w in enumerate(average):
        assert np.allclose(w, np.mean([s[i] for s in seen], axis=0))  # epochs 3-5: mean 4.0
    assert np.allclose(average[0], 4.0)


def test_recomputed_batch_statistics_are_the_exact_mean_and_leave_frozen_layers_alone():
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(name="trained"),
                              keras.layers.BatchNormalization(name="frozen")])
    model.get_layer("frozen").trainable = False
    frozen_before = [w.copy() for w in model.get_layer("frozen").get_weights()]
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc, 1.0, (4, 3)).astype(np.float32) for loc in (0.0, 2.0, 10.0)]
    dataset = tf.data.Dataset.from_tensor_slices((np.concatenate(batches), np.zeros(12))).batch(4)
    recompute_batch_statistics(model, dataset)
    norm = model.get_layer("trained")
    assert np.allclose(norm.moving_mean.numpy(), np.mean([b.mean(axis=0) for b in batches], axis=0), atol=1e-5)
    assert np.allclose(norm.moving_variance.numpy(), np.mean([b.var(axis=0) for b in batches], axis=0), atol=1e-4)
    assert norm.momentum == 0.99  # restored
    assert all(np.array_equal(a, b) for a, b in zip(frozen_before, model.get_layer("frozen").get_weights()))


@pytest.fixture
def adult_folder(films, tmp_path):
    """A tiny ``adult_nih``-like folder: 6 patients, the small films under NIH-style names, with a
    manifest giving one boxed pneumonia patient, one with only a text-mined label, normals."""
    root = tmp_path / "adult"
    rows = []
    sources = sorted(films.glob("NORMAL/*.jpeg")) + sorted(films.glob("PNEUMONIA/*.jpeg"))
    plan = [("NORMAL", "1", "-", "No Finding"), ("NORMAL", "2", "-", "No Finding"), ("NORMAL", "3", "-", "No Finding"),
            ("NORMAL", "4", "-", "No Finding"), ("PNEUMONIA", "5", "10 20 30 40", "box"),
            ("PNEUMONIA", "5", "-", "text-mined: Pneumonia (unverified)"),
            ("PNEUMONIA", "6", "-", "text-mined: Pneumonia (unverified)"),
            ("PNEUMONIA", "7", "-", "text-mined: Pneumonia (unverified)")]
    for i, (source, (label, patient, box, how)) in enumerate(zip(sources, plan)):
        (root / label).mkdir(parents=True, exist_ok=True)
        name = f"{label}/{int(patient):08d}_{i:03d}.jpeg"
        shutil.copy(source, root / name)
        rows.append({"file": name, "label": label, "label_source": f"NIH {how}", "patient": patient, "age": "40",
                     "sex": "F", "view": "PA", "nih_findings": "-", "rsna_reread": "-", "pneumonia_box_xywh": box})
    with open(root / "MANIFEST.tsv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_adult_test_set_holds_the_boxed_films_and_never_their_patients_other_films(adult_folder):
    records = list_adult_records(adult_folder)
    development, test = split_adult_records(records)
    boxed = [r for r in records if r.boxes]
    assert len(boxed) == 1 and boxed[0] in test and boxed[0].boxes == ((10, 20, 30, 40),)
    assert not any(r.patient == boxed[0].patient for r in development)  # patient 5's text-mined film: nowhere
    assert not any(r.patient == boxed[0].patient and not r.boxes for r in test)
    assert {r.patient for r in development}.isdisjoint({r.patient for r in test})
    assert all(not r.verified for r in records if r.label == 1 and not r.boxes)
    assert {r.source for r in records} == {"nih"}


def test_real_adult_split_keeps_patients_apart(shared_data):
    adult = shared_data.parent / "adult_nih"
    if not (adult / "MANIFEST.tsv").is_file():
        pytest.skip(f"adult films not found at {adult}; CI provides them")
    development, test = split_adult_records(list_adult_records(adult))
    assert sum(bool(r.boxes) for r in test) == 21 and all(r.boxes or r.label == 0 for r in test)
    train, val = split_records(shared_data, TrainConfig(), adult)
    adult_train = {r.patient for r in train if r.population == "adult"}
    adult_val = {r.patient for r in val if r.population == "adult"}
    assert adult_train.isdisjoint(adult_val) and (adult_train | adult_val).isdisjoint({r.patient for r in test})
    assert {r.path for r in train + val}.isdisjoint({r.path for r in test})


def test_split_depends_on_the_split_seed_only(films):
    """Runs with other weight seeds share the validation split; another split seed changes it."""

    def val_names(**kw):
        _, val = split_records(films, TrainConfig(val_fraction=0.3, **kw))
        return sorted(r.path.name for r in val)

    assert val_names(seed=1) == val_names(seed=7)
    assert len({tuple(val_names(split_seed=s)) for s in range(6)}) > 1


def test_config_from_metadata_reads_the_stored_recipe_and_ignores_retired_fields():
    stored = SimpleNamespace(training={"config": {"seed": 7, "split_seed": 3, "widths": [8, 16], "clahe_clip": 2.0}})
    config = config_from_metadata(stored)
    assert config.seed == 7 and config.split_seed == 3 and not hasattr(config, "widths")


def test_data_hash_changes_with_the_films_and_their_labels(films):
    records = split_records(films, TrainConfig(val_fraction=0.3))[0]
    relabelled = [Record(r.path, 1 - r.label, r.patient) if i == 0 else r for i, r in enumerate(records)]
    assert describe_data(records) == describe_data(list(reversed(records)))
    assert describe_data(records) != describe_data(relabelled) != describe_data(records[1:])


def test_weights_hash_tells_apart_weights_that_differ_by_one_value():
    weights = [np.zeros((3, 3), np.float32), np.ones(4, np.float32)]
    changed = [weights[0].copy(), weights[1].copy()]
    changed[1][2] = np.nextafter(np.float32(1), np.float32(2))
    assert describe_weights(weights) == describe_weights([w.copy() for w in weights])
    assert describe_weights(weights) != describe_weights(changed)


def test_training_smoke_run_on_three_sources_writes_a_loadable_model(films, adult_folder, siim_folder, tmp_path):
    config = TrainConfig(input_size=64, head_width=8, epochs=2, swa_epochs=1, batch_size=4, val_fraction=0.3,
                         adult_val_fraction=0.4, siim_val_fraction=0.4, seed=1, limit=0)
    meta = train_model(films, tmp_path, config, adult_dir=adult_folder, run_name="smoke", log=lambda m: None,
                       siim_dir=siim_folder)
    assert all(meta["training"]["train_films_by_source"][s] > 0 for s in ("kermany", "nih", "siim"))
    assert meta["training"]["boxed_train_films"] > 0
    model, metadata = load_model(tmp_path)
    assert metadata.input_size == 64 and meta["training"]["epochs_run"] == 2
    assert metadata.version.startswith("smoke-mnv2-") and f"-d{meta['training']['data_hash']}-w" in metadata.version
    assert metadata.version.endswith(describe_weights(model.get_weights()))
    assert set(metadata.populations) >= {"child", "adult", "probe"}
    for population in ("child", "adult"):
        assert 0 < metadata.populations[population]["threshold"] < 1
        assert metadata.populations[population]["temperature"] > 0
        assert {"roc_auc", "specificity", "ece"} <= set(meta["metrics"]["validation"][population])
    assert (tmp_path / "population.npz").is_file() and (tmp_path / "ood.npz").is_file()
    assert meta["training"]["pretrained"] is None  # tests start from random weights
    assert meta["training"]["operating_points"] == THRESHOLD_RULE

    # Refitting the operating points of the saved model on the same split gives training's own
    # values (same rule, same films, the network reloaded from its file), under a new identity.
    meta["metrics"]["test"] = {"accuracy": 0.5}  # as evaluate --record would have left it
    update_metadata(tmp_path, metrics=meta["metrics"])
    refit = recalibrate_model(films, tmp_path, adult_folder, run_name="smoke2", log=lambda m: None,
                              siim_dir=siim_folder)
    assert refit["version"] == "smoke2-" + metadata.version.split("-", 1)[1]
    for population in ("child", "adult"):
        for key in ("temperature", "threshold"):
            assert refit["populations"][population][key] == pytest.approx(metadata.populations[population][key],
                                                                          abs=2e-4)
    assert refit["populations"]["probe"] == metadata.populations["probe"]
    assert set(refit["metrics"]) == {"validation"}  # test figures of the old operating points are dropped
    assert refit["training"]["operating_points"]["from_version"] == metadata.version
    assert describe_weights(load_model(tmp_path)[0].get_weights()) == describe_weights(model.get_weights())


def test_calibrate_command_reports_a_missing_model_in_one_line(films, tmp_path, capsys):
    from pneumonia.__main__ import main

    code = main(["calibrate", "--data", str(films), "--model", str(tmp_path / "absent"), "--run-name", "x"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
