"""Many films at once: archive limits, sorting and numbering (pneumonia.worklist), and the batched
path against the one-film path (Predictor.predict_items against Predictor.predict)."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pneumonia import worklist
from pneumonia.inference import FileResult, FilmItem, Prediction
from pneumonia.worklist import Limits, WorklistError, expand_inputs

ROOT = Path(__file__).resolve().parent.parent
SMALL = Limits(max_files=5, max_request_bytes=10_000, max_archive_members=4, max_archive_bytes=5_000,
               max_member_bytes=2_000)


def make_zip(path: Path, members: dict[str, bytes], level: int = 6) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def forge_sizes(path: Path, size: int) -> Path:
    """Rewrite every central-directory entry to claim ``size`` unpacked bytes (a forged bomb)."""
    data = bytearray(path.read_bytes())
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) >= 0:
        data[start + 24:start + 28] = struct.pack("<I", size)
        start += 4
    path.write_bytes(bytes(data))
    return path


def refusals(entries) -> dict[str, str]:
    return {entry.item.name: entry.refusal for entry in entries if entry.refusal}


@pytest.mark.parametrize("members, name, words", [
    ({"../evil.jpeg": b"x"}, "a.zip/../evil.jpeg", "leaves the archive"),
    ({"/etc/passwd": b"x"}, "a.zip//etc/passwd", "leaves the archive"),
    ({"sub\\..\\..\\evil.jpeg": b"x"}, "a.zip/sub\\..\\..\\evil.jpeg", "leaves the archive"),
    ({"inner.zip": b"PK\x03\x04"}, "a.zip/inner.zip", "archive inside an archive"),
    ({"inner.tar.gz": b"x"}, "a.zip/inner.tar.gz", "archive inside an archive"),
    ({"big.dcm": b"\0" * 3_000}, "a.zip/big.dcm", "more than the"),
])
def test_hostile_member_gets_its_sentence_and_the_rest_is_read(tmp_path, members, name, words):
    archive = make_zip(tmp_path / "a.zip", {**members, "film.jpeg": b"fine"})
    entries = expand_inputs([("a.zip", archive)], SMALL)
    assert refusals(entries) == {name: refusals(entries)[name]} and words in refusals(entries)[name]
    readable = [entry for entry in entries if not entry.refusal]
    assert [entry.item.name for entry in readable] == ["a.zip/film.jpeg"]
    assert readable[0].item.source() == b"fine"


@pytest.mark.parametrize("build, words", [
    (lambda p: make_zip(p, {f"f{i}.jpeg": b"x" for i in range(5)}), "holds 5 entries, more than the 4"),
    (lambda p: forge_sizes(make_zip(p, {"a.jpeg": b"x", "b.jpeg": b"y"}), 3_000), "would unpack to"),
    (lambda p: make_zip(p, {f"f{i}.jpeg": b"\0" * 1_900 for i in range(3)}), "would unpack to"),
    (lambda p: p.write_bytes(b"PK\x03\x04 not really") and p, "not a readable ZIP archive"),
])
def test_hostile_archive_is_refused_whole_from_its_directory(tmp_path, build, words):
    archive = build(tmp_path / "a.zip")
    entries = expand_inputs([("a.zip", archive)], SMALL)
    assert len(entries) == 1 and words in entries[0].refusal and entries[0].item.name == "a.zip"


def test_member_unpacking_past_its_declared_size_is_stopped_while_reading(tmp_path):
    """A directory claiming 100 bytes for a 1900-byte member (within the cap of 2000) unpacks no more
    than it claims: zipfile stops there, and the damaged member is refused in a sentence."""
    archive = forge_sizes(make_zip(tmp_path / "a.zip", {"a.jpeg": b"\0" * 1_900}), 100)
    (entry,) = expand_inputs([("a.zip", archive)], SMALL)
    with pytest.raises(worklist.InvalidImageError, match="could not be unpacked"):
        entry.item.source()


def test_nested_archive_under_another_name_is_refused_when_read(tmp_path):
    inner = make_zip(tmp_path / "inner.zip", {"film.jpeg": b"x"}).read_bytes()
    archive = make_zip(tmp_path / "a.zip", {"film.jpeg": inner})
    (entry,) = expand_inputs([("a.zip", archive)], SMALL)
    with pytest.raises(worklist.InvalidImageError, match="archive inside an archive"):
        entry.item.source()


@pytest.mark.parametrize("count, size, words", [
    (6, 10, "holds 6 films, more than the 5"),
    (2, 6_000, "more than the 0 MB"),  # 12 kB over a 10 kB cap: the sentence rounds to MB
])
def test_request_over_its_limits_is_refused_before_reading(tmp_path, count, size, words):
    files = []
    for i in range(count):
        path = tmp_path / f"f{i}.jpeg"
        path.write_bytes(b"\0" * size)
        files.append((path.name, path))
    with pytest.raises(WorklistError, match=words):
        expand_inputs(files, SMALL)


def test_folders_hidden_files_and_resource_forks_are_skipped(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"dir/": b"", ".hidden.jpeg": b"x", "__MACOSX/._a.jpeg": b"x",
                                            "dir/a.jpeg": b"x"})
    assert [entry.item.name for entry in expand_inputs([("a.zip", archive)], SMALL)] == ["a.zip/dir/a.jpeg"]


def test_numbers_replace_names_everywhere_but_keep_the_extension(tmp_path):
    film = tmp_path / "Doe_Jane.DCM"
    film.write_bytes(b"x")
    archive = make_zip(tmp_path / "Roe_Richard.zip", {"../Roe.jpeg": b"x", "Roe2.png": b"y"})
    entries = worklist.number_entries(expand_inputs([("Doe_Jane.DCM", film), ("Roe_Richard.zip", archive)], SMALL))
    assert [entry.item.name for entry in entries] == ["film-001.dcm", "film-002.jpeg", "film-003.png"]
    text = " ".join(entry.refusal for entry in entries)
    assert "film-002.jpeg" in text and "Roe" not in text and "Doe" not in text
    assert entries[0].item.source() == b"x"  # read by a reader that names no file


def result(name: str, label: str | None, p: float = 0.0) -> FileResult:
    if label is None:
        return FileResult(name, None, f"{name} is broken.")
    return FileResult(name, Prediction(label=label, probabilities={"NORMAL": 1 - p, "PNEUMONIA": p},
                                       threshold=0.4, logit=0.0), "")


@pytest.mark.parametrize("given, expected", [
    ([("a", "NORMAL", 0.1), ("b", "PNEUMONIA", 0.9), ("c", "NORMAL", 0.3)], ["b", "c", "a"]),
    ([("e", None), ("u", "UNKNOWN", 0.99), ("n", "NORMAL", 0.01)], ["n", "u", "e"]),
    ([("e1", None), ("e2", None), ("x", "PNEUMONIA", 0.5), ("y", "PNEUMONIA", 0.5)], ["x", "y", "e1", "e2"]),
])
def test_most_suspicious_first_then_unknown_then_unreadable(given, expected):
    assert [r.path for r in worklist.sort_results([result(*args) for args in given])] == expected


@pytest.mark.parametrize("args, row", [
    (("a.jpeg", "PNEUMONIA", 0.91234), [3, "a.jpeg", "PNEUMONIA", 0.912, "", "no", ""]),
    (("b.png", None), [3, "b.png", "unreadable", None, "", "", "b.png is broken."]),
])
def test_table_row(args, row):
    assert worklist.to_table_row(3, result(*args)) == row


def test_csv_has_the_batch_columns_and_one_row_per_result():
    text = worklist.format_csv([result("a.jpeg", "PNEUMONIA", 0.75), result("b.png", None)])
    lines = text.splitlines()
    assert lines[0] == ",".join(worklist.CSV_COLUMNS)
    assert lines[1].startswith("a.jpeg,PNEUMONIA,0.75,0.25,0.4,True,")
    assert lines[2] == "b.png" + "," * (len(worklist.CSV_COLUMNS) - 1) + "b.png is broken."


# ---- the batched path is the one-film path -----------------------------------------------------

@pytest.mark.parametrize("explain", [False, True])
def test_items_in_batches_get_the_verdicts_of_single_films(predictor, example_paths, tmp_path, explain):
    archive = make_zip(tmp_path / "films.zip", {"sub/a.jpeg": example_paths[0].read_bytes(),
                                                "b.jpeg": example_paths[-1].read_bytes()})
    entries = expand_inputs([(p.name, p) for p in example_paths[:3]] + [("films.zip", archive)]
                            + [("bytes.jpeg", example_paths[-2])], worklist.APP_LIMITS)
    items = [entry.item for entry in entries] + [FilmItem("raw.jpeg", example_paths[4].read_bytes()),
                                                   FilmItem("empty.png", b"")]
    results = list(predictor.predict_items(items, batch_size=2, explain=explain))
    sources = example_paths[:3] + [example_paths[0], example_paths[-1], example_paths[-2], example_paths[4]]
    assert [r.path for r in results] == [item.name for item in items]
    for got, source in zip(results, sources):
        alone = predictor.predict(source, explain=explain)
        assert got.error == "" and got.prediction.to_dict() == alone.to_dict()
        if explain:
            np.testing.assert_allclose(got.prediction.heatmap, alone.heatmap, atol=1e-5)
            assert got.prediction.overlay.size == alone.overlay.size
    assert results[-1].prediction is None and results[-1].error == "empty.png is empty (0 bytes)."


def test_run_worklist_sorts_and_remembers_where_each_film_lies(predictor, example_paths, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a film")
    archive = make_zip(tmp_path / "films.zip", {"x.jpeg": example_paths[-1].read_bytes()})
    files = [(text.name, text), (example_paths[0].name, example_paths[0]), ("films.zip", archive)]
    done = worklist.run_worklist(predictor, files)
    assert [r.path for r in done.results] == ["films.zip/x.jpeg", example_paths[0].name, "notes.txt"]
    assert done.origins == [(str(archive), "x.jpeg"), (str(example_paths[0]), ""), (str(text), "")]
    assert worklist.read_origin(done.origins[0]) == example_paths[-1].read_bytes()


def test_cli_reads_archives_like_folders(tmp_path, example_paths):
    import csv

    from pneumonia.__main__ import main

    make_zip(tmp_path / "films.zip", {"a.jpeg": example_paths[0].read_bytes(), "../b.jpeg": b"x"})
    out = tmp_path / "out.csv"
    assert main(["predict", str(tmp_path / "films.zip"), "--csv", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [Path(row["path"]).name for row in rows] == ["a.jpeg", "b.jpeg"]
    assert rows[0]["label"] == "NORMAL" and "leaves the archive" in rows[1]["error"]
