"""README's code blocks run as written, from the repository root, and its label counts are the recorded ones.

Python blocks run verbatim in a child process (the client example against ``python app.py`` on
127.0.0.1:7860, as the block says). Shell blocks are taken command by command: the batch
``predict`` runs verbatim; the others (training for half an hour, installing packages, serving,
this very test suite) are checked without running: every ``python -m pneumonia`` command parses
with the real argument parser and names folders that exist, every ``pip install -r`` file exists,
``python app.py`` answers ``--help``. A command of another kind fails the test, so a new block
cannot go unchecked. Files a block writes in the tree are removed afterwards.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README, flags=re.S | re.M)
DATA = ROOT.parent / "shared" / "data"


def run_in_root(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``args`` from the repository root, removing whatever new files it leaves at the top level."""
    before = set(ROOT.iterdir())
    try:
        return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    finally:
        for path in set(ROOT.iterdir()) - before:
            path.unlink() if path.is_file() else None


def shell_commands() -> list[str]:
    """Every command of README's bash blocks, comments dropped, ``&&`` chains split."""
    commands = []
    for language, body in BLOCKS:
        if language != "bash":
            continue
        for line in body.splitlines():
            line = line.split("   #")[0].split("  #")[0].strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


PYTHON_BLOCKS = [body for language, body in BLOCKS if language == "python"]


def test_readme_has_the_blocks_this_test_knows():
    assert {language for language, _ in BLOCKS} <= {"bash", "python", "text"}
    assert len(PYTHON_BLOCKS) >= 2 and shell_commands()


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_block_runs_as_written(index):
    block = PYTHON_BLOCKS[index]
    server = None
    if "Client(" in block:
        from benchmarks.app_process import AppProcess

        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", 7860)) == 0:
                pytest.skip("port 7860, which the client example names, is taken by another program")
        server = AppProcess(port=7860).__enter__()
    try:
        result = run_in_root([sys.executable, "-c", block])
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip()  # every block prints what it shows in its comment
    if "/predict_batch" in block:
        assert "'verdict'" in result.stdout and "pneumonia_probability" in result.stdout  # the table, then the CSV
    elif "client.predict" in block:
        assert "'label': 'PNEUMONIA'" in result.stdout and "'population': 'child'" in result.stdout
    else:
        assert result.stdout.split()[0] == "PNEUMONIA"


def check_shell_command(command: str) -> None:
    """Run or check one README shell command (see the module docstring)."""
    words = shlex.split(command)
    if words[:3] == ["python", "-m", "pneumonia"]:
        from pneumonia.__main__ import build_parser

        args = build_parser().parse_args(words[3:])
        for name in ("data", "adult", "siim", "model", "paths", "without_siim", "without_nih"):
            for value in (getattr(args, name, None) or []) if name == "paths" else [getattr(args, name, None)]:
                if value is None:
                    continue
                if value.startswith("../shared") and not DATA.is_dir():
                    pytest.skip(f"the dataset is not at {DATA}")
                assert (ROOT / value).exists(), f"{command}: {value} does not exist"
        if args.command == "predict":
            result = run_in_root([sys.executable, *words[1:]])
            assert result.returncode == 0, result.stderr[-3000:]
    elif words[:3] == ["pip", "install", "-r"]:
        assert (ROOT / words[3]).is_file(), command
    elif words[:2] == ["python", "app.py"]:
        result = run_in_root([sys.executable, "app.py", *words[2:], "--help"], timeout=120)
        assert result.returncode == 0 and "--share" in result.stdout, result.stderr[-2000:]
    elif words == ["python", "-m", "pytest", "-q", "-rs"]:
        assert (ROOT / "pytest.ini").is_file()  # this suite
    elif words in (["python3.11", "-m", "venv", ".venv"], [".", ".venv/bin/activate"]):
        pass  # the environment to run all of this in
    else:
        pytest.fail(f"README command this test does not know how to check: {command}")


@pytest.mark.parametrize("command", shell_commands())
def test_shell_command_is_runnable_as_written(command):
    check_shell_command(command)


def test_the_dicom_example_holds_the_bundled_film():
    import numpy as np
    from PIL import Image

    from pneumonia.preprocessing import read_image

    film = read_image(ROOT / "tests" / "data" / "film.dcm")
    source = np.asarray(Image.open(ROOT / "examples" / "PNEUMONIA" / "person1251_bacteria_3208.jpeg").convert("L"))
    assert np.array_equal(np.round(film * 255).astype(np.uint8), source)


def test_the_adult_label_counts_are_the_recorded_ones(predictor, shared_data):
    """README's 111 (training split) and 151 (with the validation split's) text-mined adult labels:
    the first is what metadata.json records; both are what the model's split holds."""
    from pneumonia.train import config_from_metadata, split_records

    recorded = int(predictor.metadata.training["unverified_labels"].split()[0])
    adult = shared_data.parent / "adult_nih"
    train, val = split_records(shared_data, config_from_metadata(predictor.metadata), adult)
    count = {name: sum(1 for r in records if r.population == "adult" and r.label == 1 and not r.verified)
             for name, records in (("train", train), ("val", val))}
    assert count["train"] == recorded
    assert f"The {recorded} text-mined adult pneumonia labels of the training" in README
    assert f"{count['val']} more lie in the validation split, {recorded + count['val']} in all" in README
    assert f"Its {recorded + count['val']} adult pneumonia labels\n  ({recorded} training, {count['val']} validation)" in README
