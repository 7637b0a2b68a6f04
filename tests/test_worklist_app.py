"""The worklist through the public endpoint ``/predict_batch`` (gradio_client), against the batch
CLI on the same files; hostile archives; what the running app keeps and logs; the PDF report.

The endpoint tests serve the app in this process (as tests/test_app.py does); the retention test
runs ``python app.py`` over the tiny model, as tests/test_security.py does.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import time
import zlib
from pathlib import Path

import pytest

from pneumonia import worklist
from benchmarks.app_process import AppProcess
from test_app import serve
from test_security import SECRETS, files_under, make_dicom

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from test_worklist import forge_sizes, make_zip  # noqa: E402


@pytest.fixture(scope="module")
def client(predictor, tmp_path_factory):
    with serve(predictor, tmp_path_factory.mktemp("gradio")) as local_url:
        yield Client(local_url, verbose=False)


def predict_batch(client, paths, numbered=False):
    """``(table rows as dicts, CSV rows as dicts)`` from ``/predict_batch``."""
    table, csv_path = client.predict([handle_file(str(p)) for p in paths], numbered, api_name="/predict_batch")
    rows = [dict(zip(table["headers"], row)) for row in table["data"]]
    return rows, list(csv.DictReader(io.StringIO(Path(csv_path).read_text())))


@pytest.fixture(scope="module")
def broken_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("broken")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("Not a film at all.\n")
    return [folder / "empty.png", folder / "notes.txt"]


def test_examples_and_broken_files_give_one_row_each_as_the_cli_does(client, example_paths, broken_files, tmp_path):
    from pneumonia.__main__ import main

    files = example_paths + broken_files
    table, rows = predict_batch(client, files)
    out = tmp_path / "cli.csv"
    assert main(["predict", *map(str, files), "--csv", str(out), "--quiet"]) == 0
    cli = {Path(row["path"]).name: row for row in csv.DictReader(out.open())}

    assert len(table) == len(rows) == len(files) == len(cli)
    assert [row["file"] for row in table] == [row["path"] for row in rows]  # table and CSV in one order
    for row in rows:  # same columns and values as the command, but the path (the uploaded name)
        expected = cli[row["path"]]
        assert {k: v for k, v in row.items() if k != "path"} == {k: v for k, v in expected.items() if k != "path"}
    errors = [row for row in table if row["verdict"] == "unreadable"]
    assert {row["file"] for row in errors} == {"empty.png", "notes.txt"}
    assert all(row["reason or error"].startswith(row["file"]) for row in errors)
    # Most suspicious first: the CLI's probabilities in descending order, then the unreadable files.
    expected_order = sorted((name for name in cli if cli[name]["label"]),
                            key=lambda name: -float(cli[name]["pneumonia_probability"]))
    assert [row["file"] for row in table[:len(expected_order)]] == expected_order
    assert [row["verdict"] for row in table[len(expected_order):]] == ["unreadable"] * 2
    assert [row["#"] for row in table] == list(range(1, len(files) + 1))


def test_numbers_replace_the_names_in_the_table_and_the_csv(client, example_paths, broken_files):
    table, rows = predict_batch(client, [example_paths[0], broken_files[1]], numbered=True)
    assert sorted(row["file"] for row in table) == ["film-001.jpeg", "film-002.txt"]
    text = repr(table) + repr(rows)
    assert example_paths[0].stem not in text and "notes" not in text


def hostile_archives(folder: Path, film: bytes) -> dict[str, tuple[Path, str]]:
    """Archive kind -> (archive, words its row must hold)."""
    bomb = folder / "bomb.zip"
    with zipfile_writer(bomb) as archive:  # 45 MB of zeros unpack from ~45 kB: over the 40 MB per film
        archive.writestr("film.dcm", b"\0" * (worklist.MAX_MEMBER_BYTES + 5 * worklist.MB))
    return {
        "traversal": (make_zip(folder / "traversal.zip", {"../../etc/evil.jpeg": film}), "leaves the archive"),
        "bomb": (bomb, "more than the 40 MB a film may hold"),
        "forged bomb": (forge_sizes(make_zip(folder / "forged.zip", {"a.jpeg": film}), 2**32 - 1),
                        "would unpack to"),
        "nested": (make_zip(folder / "nested.zip", {"inner.zip": make_zip(folder / "inner.zip", {"a.jpeg": film})
                                                    .read_bytes()}), "archive inside an archive"),
        "too many entries": (make_zip(folder / "many.zip", {f"f{i}.jpeg": b"x" for i in
                                                            range(worklist.MAX_ARCHIVE_MEMBERS + 1)}),
                             f"more than the {worklist.MAX_ARCHIVE_MEMBERS}"),
    }


def zipfile_writer(path: Path):
    import zipfile

    return zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, example_paths):
    return hostile_archives(tmp_path_factory.mktemp("hostile"), example_paths[0].read_bytes())


@pytest.mark.parametrize("kind", ["traversal", "bomb", "forged bomb", "nested", "too many entries"])
def test_hostile_archive_gets_its_message_and_the_server_stays_up(client, hostile, example_paths, kind):
    archive, words = hostile[kind]
    table, _ = predict_batch(client, [archive, example_paths[-1]])
    assert table[0]["file"] == example_paths[-1].name and table[0]["verdict"] == "PNEUMONIA"
    refused = [row for row in table if row["verdict"] == "unreadable"]
    assert refused and all(words in row["reason or error"] for row in refused), refused
    again, _ = predict_batch(client, [example_paths[0]])  # still serving
    assert again[0]["verdict"] == "NORMAL"


def test_too_many_films_in_one_request_is_refused_in_a_sentence(client, tmp_path, example_paths):
    archive = make_zip(tmp_path / "many.zip", {f"f{i}.jpeg": b"x" for i in range(worklist.MAX_FILES + 1)})
    with pytest.raises(Exception, match=f"more than the {worklist.MAX_FILES} one request may hold"):
        predict_batch(client, [archive])
    assert predict_batch(client, [example_paths[0]])[0][0]["verdict"] == "NORMAL"


def test_worklist_keeps_nothing_and_logs_no_file_name(tiny_model_dir, example_paths, tmp_path):
    """With a 6 s lifetime, what /predict_batch received and wrote is deleted; names never reach the log.
    (Long enough that the files are still there when the answer comes back on a busy machine.)"""
    import httpx

    named = tmp_path / "Doe_Jane_1970.jpeg"
    named.write_bytes(example_paths[0].read_bytes())
    broken = tmp_path / "Doe_Jane_notes.txt"
    broken.write_text("x")
    archive = make_zip(tmp_path / "Doe_Jane_study.zip", {"Doe_Jane_2.jpeg": example_paths[1].read_bytes()})
    with AppProcess(tiny_model_dir, tmp_path / "app.log", env={"PNEUMONIA_CACHE_TTL_S": "6"}) as served_app:
        stored = httpx.post(f"{served_app.url}/gradio_api/upload", files={"files": ("probe.jpeg", b"x")},
                            timeout=120).json()[0]
        temp_dir = Path(stored).parent.parent
        table, rows = predict_batch(Client(served_app.url, verbose=False), [named, broken, archive])
        assert len(table) == len(rows) == 3
        assert any("Doe_Jane" in str(p) for p in files_under(temp_dir)), "nothing written: the test proves nothing"
        for _ in range(240):  # deletion runs every TTL seconds; wait for it, bounded
            if not files_under(temp_dir):
                break
            time.sleep(0.5)
        assert not files_under(temp_dir), files_under(temp_dir)
    assert not temp_dir.exists()
    log = (tmp_path / "app.log").read_text(errors="replace")
    assert "Doe_Jane" not in log and "Traceback" not in log


# ---- the PDF report ------------------------------------------------------------------------------

def pdf_text(data: bytes) -> str:
    """The text drawn on a PDF's pages (``(...) Tj`` strings of its Flate content streams), after
    checking it is a complete PDF file with one page."""
    assert data.startswith(b"%PDF-1.") and data.rstrip().endswith(b"%%EOF") and b"startxref" in data
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", data)) == 1
    parts = []
    for raw in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            content = zlib.decompress(raw)
        except zlib.error:
            continue
        for text in re.findall(rb"\(((?:\\.|[^\\)])*)\)\s*Tj", content, re.S):
            parts.append(re.sub(rb"\\(.)", rb"\1", text).decode("latin-1"))
    return " ".join(" ".join(parts).split())


def with_age(path: Path, age: str) -> Path:
    import pydicom

    dataset = pydicom.dcmread(path)
    dataset.PatientAge, dataset.PatientSex, dataset.StudyDescription = age, "F", "Doe family chest study"
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("film, expected", [
    ("example", ("PNEUMONIA", "Calibrated probability of pneumonia", "Operating threshold")),
    ("dicom", ("Age group (from the DICOM header): 18-64 years", "Caution: ")),
])
def test_pdf_report_opens_and_holds_no_dicom_tag_but_the_age_group(predictor, example_paths, tmp_path, film,
                                                                   expected):
    from pneumonia.inference import make_preview
    from pneumonia.report import render_report

    source = example_paths[-1] if film == "example" else with_age(make_dicom(tmp_path / "Doe.dcm", example_paths[-1]),
                                                                 "045Y")
    result = predictor.predict(source, explain=True)
    created = dt.datetime(2026, 12, 6, 5, 0, tzinfo=dt.timezone.utc)
    data = render_report(result.to_dict(), make_preview(result.image), result.overlay, predictor.metadata.version,
                         predictor.metadata.created, created)
    text = pdf_text(data)
    if result.caution:  # the caution's opening words, as the PDF writes them (first line of its paragraph)
        assert "Caution: " + result.caution[:40] in text, text
    for words in expected + ("Decision support only, not a diagnosis", predictor.metadata.version,
                             "Report made 2026-12-06 05:00 UTC", f"{result.threshold:.1%}"):
        assert words in text, (words, text)
    for secret in SECRETS + ("045Y", "Doe family chest study", "Doe.dcm", "MONOCHROME"):
        assert secret not in text, secret


def test_unknown_report_says_no_assessment_and_has_no_heatmap(predictor):
    import numpy as np
    from PIL import Image

    from pneumonia.report import render_report

    colour = np.zeros((256, 256, 3), np.uint8)
    colour[..., 0] = 200
    result = predictor.predict(colour, explain=True)
    assert result.label == "UNKNOWN"
    text = pdf_text(render_report(result.to_dict(), Image.fromarray(colour), None, "v-test"))
    assert "No pneumonia assessment is given (UNKNOWN)" in text and "No heatmap" in text
    assert "Calibrated probability of pneumonia:" not in text


def test_readme_example_runs_verbatim_from_the_repository_root(client, monkeypatch, capsys):
    """The README's /predict_batch example, run as written (only the address is this test's app)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "/predict_batch" in block]
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    exec(compile(code.replace('"http://127.0.0.1:7860/"', repr(client.src)), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "'PNEUMONIA'" in printed and "'NORMAL'" in printed and printed.count("\n") >= 6
    assert "path,label,pneumonia_probability" in printed
    first = [line for line in printed.splitlines() if line.startswith("[1, ")]
    assert first and "person1251_bacteria_3208.jpeg" in first[0], printed


def test_worklist_events_never_take_the_single_film_analysis_slots(predictor):
    import app

    demo = app.build_demo(predictor)
    fns = list(demo.fns.values())
    queues = {(fn.api_name or fn.name): (fn.concurrency_id, fn.concurrency_limit) for fn in fns}
    assert queues["predict"][0] == queues["show"][0] == "analysis"
    worklist_fns = [fn for fn in fns if fn.name in ("show_worklist", "predict_batch", "open_row")]
    assert len(worklist_fns) == 3
    for fn in worklist_fns:
        assert fn.concurrency_id.startswith("worklist") and fn.concurrency_limit == 1, fn.name
