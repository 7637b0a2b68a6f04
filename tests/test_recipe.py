"""The training recipe against independent computations: (source, class) sampling, soft targets,
box masks (rasterised, moved with the film, pooled to the map's cells), the box loss, the training
network's evidence output, the SIIM split and the CLI derived from the config."""

import argparse
import dataclasses

import numpy as np
import pytest

from pneumonia.data import (SIIM_TEST_FRACTION, Record, list_siim_records, parse_boxes, split_siim_records)
from pneumonia.recipe import (box_loss, build_training_model, cell_shares, make_datasets, pool_mask,
                              rasterise_boxes, training_targets)
from pneumonia.train import TrainConfig, add_arguments


def test_cell_shares_balance_the_classes_within_each_source():
    shares = cell_shares({"kermany": 0.35, "nih": 0.10, "siim": 0.55})
    assert sum(shares.values()) == pytest.approx(1.0)
    for source, share in (("kermany", 0.35), ("nih", 0.10), ("siim", 0.55)):
        assert shares[(source, 0)] == shares[(source, 1)] == pytest.approx(share / 2)
    assert cell_shares({"a": 2.0, "b": 2.0})[("a", 1)] == pytest.approx(0.25)  # normalised


def test_unverified_pneumonia_labels_get_the_soft_target():
    records = [Record(path=None, label=0, patient="a"), Record(path=None, label=1, patient="b"),
               Record(path=None, label=1, patient="c", population="adult", verified=False, source="nih"),
               Record(path=None, label=0, patient="d", population="adult", source="siim")]
    assert training_targets(records, 0.7).tolist() == pytest.approx([0.0, 1.0, 0.7, 0.0])


def test_sampling_draws_the_cells_in_their_shares_whatever_their_sizes():
    # Cell sizes far from the shares, like the real data; each film's value encodes its cell.
    sizes = {("kermany", 0): 300, ("kermany", 1): 900, ("nih", 0): 90, ("nih", 1): 30, ("siim", 0): 40,
             ("siim", 1): 100}
    records, values = [], []
    for cell, ((source, label), n) in enumerate(sizes.items()):
        records += [Record(path=None, label=label, patient=f"{source}{label}{i}", source=source,
                           population="child" if source == "kermany" else "adult", verified=source != "nih")
                    for i in range(n)]
        values += [cell] * n
    films = np.array(values, np.uint8).reshape(-1, 1, 1).repeat(2, 1).repeat(2, 2)
    masks = np.zeros((len(films), 1, 1), np.uint8)
    config = TrainConfig(batch_size=16, augment=False, kermany_share=0.35, nih_share=0.1, siim_share=0.55,
                         unverified_target=0.7, films_per_epoch=800)
    train, _ = make_datasets(films, masks, records, films[:4], masks[:4], np.zeros(4), config, cells=1)
    drawn, targets = [], []
    for _ in range(3):  # three epochs, each a fresh draw
        epoch = [(np.round(x.numpy()[:, 0, 0, 0] * 255).astype(int), y["logit"].numpy()[:, 0]) for x, y in train]
        assert sum(len(d) for d, _ in epoch) == 800  # films_per_epoch, in whole batches
        drawn += [d for d, _ in epoch]
        targets += [t for _, t in epoch]
    drawn, targets = np.concatenate(drawn), np.concatenate(targets)
    frequencies = np.bincount(drawn, minlength=6) / len(drawn)
    expected = cell_shares({"kermany": 0.35, "nih": 0.1, "siim": 0.55})
    assert np.allclose(frequencies, [expected[k] for k in sizes], atol=0.03)
    assert np.allclose(targets[drawn == 3], 0.7) and np.allclose(targets[drawn == 5], 1.0)


@pytest.mark.parametrize("frame", [(256, 256), (512, 384)])
def test_boxes_are_rasterised_on_the_squashed_square(frame):
    width, height = frame
    box = (width // 4, height // 2, width // 4, height // 4)  # x in [1/4, 1/2), y in [1/2, 3/4)
    mask = rasterise_boxes([box], frame, side=8)
    expected = np.zeros((8, 8), np.uint8)
    expected[4:6, 2:4] = 1
    np.testing.assert_array_equal(mask, expected)
    assert rasterise_boxes([], frame, side=8).sum() == 0


def test_manifest_boxes_parse_to_whole_pixels():
    assert parse_boxes("-") == ()
    assert parse_boxes("47 43 62 141;135 43 66 129") == ((47, 43, 62, 141), (135, 43, 66, 129))
    assert parse_boxes("1.6 2.4 10 0") == ()  # no area


def test_the_box_mask_moves_with_the_film_under_augmentation():
    """A bright square and its box: after rotation, zoom and shift the mask still covers the square."""
    film = np.zeros((1, 64, 64), np.uint8)
    film[0, 20:36, 36:52] = 255
    mask = np.zeros((1, 16, 16), np.uint8)
    mask[0, 5:9, 9:13] = 1  # the same square at a quarter of the side
    records = [Record(path=None, label=1, patient="p", source="siim", population="adult")]
    config = TrainConfig(batch_size=8, augment=True, films_per_epoch=8, seed=3)
    train, _ = make_datasets(film, mask, records, film, mask, np.ones(1), config, cells=4)
    x, y = next(iter(train))
    bright = x.numpy()[..., 0] > 0.5
    cover = y["evidence"].numpy()  # (8, 4, 4): the mask pooled to 16-px cells
    for image, cells in zip(bright, cover):
        # Where the square's pixels are, the mask's cells must be (cell of each bright pixel covered).
        rows, cols = np.nonzero(image)
        assert rows.size
        assert cells[rows // 16, cols // 16].min() > 0


def test_pooled_mask_is_each_cells_covered_fraction():
    mask = np.zeros((1, 8, 8, 1), np.float32)
    mask[0, :2, :3] = 1.0
    pooled = pool_mask(mask, 2).numpy()
    np.testing.assert_allclose(pooled[0], [[6 / 16, 0], [0, 0]])


def test_box_loss_is_minus_log_of_the_evidence_share_inside_the_boxes_over_boxed_films():
    rng = np.random.default_rng(0)
    evidence = rng.normal(0, 2, (4, 3, 3)).astype(np.float32)
    cover = np.zeros((4, 3, 3), np.float32)
    cover[0, 0, :2] = [1.0, 0.5]
    cover[2, 2, 2] = 1.0  # films 1 and 3 have no box
    got = np.asarray(box_loss(cover, evidence))
    expected_terms = []
    for e, c in zip(evidence, cover):
        if c.max() == 0:
            continue
        share = np.exp(e) / np.exp(e).sum()
        expected_terms.append(-np.log((share * c).sum()))
    assert got[1] == got[3] == 0.0
    assert got.mean() == pytest.approx(np.mean(expected_terms), rel=1e-5)
    assert np.asarray(box_loss(np.zeros_like(cover), evidence)).sum() == 0.0


def test_training_network_outputs_the_evidence_map_whose_mean_is_the_logit():
    from pneumonia.model import build_model

    model = build_model(64, head_width=8, dropout=0.0, seed=2)
    training = build_training_model(model, "last_conv")
    batch = np.random.default_rng(1).random((2, 64, 64, 1)).astype(np.float32)
    out = training(batch, training=False)
    evidence, logit = np.asarray(out["evidence"]), np.asarray(out["logit"])[:, 0]
    conv = np.asarray(__import__("keras").Model(model.inputs, model.get_layer("last_conv").output)(batch))
    kernel, bias = model.layers[-1].get_weights()
    np.testing.assert_allclose(evidence, np.einsum("nhwc,c->nhw", conv, kernel[:, 0]), atol=1e-5)
    np.testing.assert_allclose(evidence.mean(axis=(1, 2)) + bias[0], logit, atol=1e-5)
    assert [id(w) for w in training.weights] == [id(w) for w in model.weights]  # the same variables


def test_siim_split_is_by_study_and_fixed(siim_folder):
    records = list_siim_records(siim_folder)
    assert len(records) == 8 and {r.source for r in records} == {"siim"} and all(r.verified for r in records)
    assert all(bool(r.boxes) == (r.label == 1) for r in records)
    development, test = split_siim_records(records)
    assert {r.patient for r in development}.isdisjoint({r.patient for r in test})
    assert split_siim_records(list_siim_records(siim_folder)) == (development, test)


def test_real_siim_test_split_is_a_fifth_of_the_studies_and_never_in_training(shared_data):
    from pneumonia.train import split_records

    siim = shared_data.parent / "adult_siim"
    if not (siim / "MANIFEST.tsv").is_file():
        pytest.skip(f"SIIM films not found at {siim}; CI provides them")
    records = list_siim_records(siim)
    development, test = split_siim_records(records)
    assert len(records) == 5126 and len(test) == pytest.approx(SIIM_TEST_FRACTION * len(records), rel=0.02)
    assert {r.patient for r in development}.isdisjoint({r.patient for r in test})
    train, val = split_records(shared_data, TrainConfig(), None, siim)
    siim_train = {r.patient for r in train if r.source == "siim"}
    siim_val = {r.patient for r in val if r.source == "siim"}
    assert siim_train.isdisjoint(siim_val) and (siim_train | siim_val).isdisjoint({r.patient for r in test})


def test_every_config_field_is_a_train_flag_with_its_default():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data", "x"])
    for field in dataclasses.fields(TrainConfig):
        assert getattr(args, field.name) == field.default, field.name
    changed = parser.parse_args(["--data", "x", "--box-weight", "0.5", "--no-freeze-batch-norm", "--epochs", "3"])
    assert (changed.box_weight, changed.freeze_batch_norm, changed.epochs) == (0.5, False, 3)
