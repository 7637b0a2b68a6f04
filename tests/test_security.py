"""What the running app keeps, logs and serves, and how it refuses to start.

These run ``python app.py`` as a subprocess on a free loopback port (the real entry point, with its
private temporary folder and size limit), over the tiny untrained model: none of this depends on
what the network answers.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import app
from benchmarks.app_process import AppProcess

ROOT = Path(__file__).resolve().parent.parent
# Patient details planted in a DICOM upload; none may surface in logs, replies or returned files.
SECRETS = ("Doe^Jane", "Jane", "PID-0042-XYZ", "19700101", "ACC-777-SECRET", "Saint Example Hospital")


def upload(url: str, name: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{url}/gradio_api/upload", files={"files": (name, data)}, timeout=120)


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def make_dicom(path: Path, film: Path) -> Path:
    """Write ``film`` as a DICOM carrying made-up patient details in its header."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    pixels = np.asarray(Image.open(film).convert("L"), dtype=np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = SECRETS[0], SECRETS[2], SECRETS[3]
    ds.AccessionNumber, ds.InstitutionName = SECRETS[4], SECRETS[5]
    ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "CR", "MONOCHROME2", 1
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    """One app for the whole module: its URL, process and log file."""
    log_path = tmp_path_factory.mktemp("log") / "app.log"
    # As `python app.py` runs on a workstation: no GRADIO_SERVER_NAME.
    with AppProcess(tiny_model_dir, log_path, env={"GRADIO_SERVER_NAME": None}) as served_app:
        yield served_app.url, served_app.process, log_path


def test_start_up_prints_one_line_with_the_projects_share_hint(served):
    """Gradio's own hint ("set share=True in launch()") is not how this app is run."""
    import time

    url, _, log_path = served
    deadline = time.monotonic() + 60
    while "Serving on" not in log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = log_path.read_text()
    lines = [line for line in log.splitlines() if "Serving on" in line]
    assert len(lines) == 1, log
    assert lines[0].startswith(f"Serving on {url}") and lines[0].endswith("run: python app.py --share")
    assert "share=True" not in log and "Running on local URL" not in log


# ---- serving only what it should -------------------------------------------------------------

OUTSIDE = [
    "/etc/passwd",
    "/etc/hostname",
    str(ROOT / "app.py"),
    str(ROOT / "pneumonia" / "inference.py"),
    str(ROOT / "requirements.txt"),
    str(ROOT / "model" / "metadata.json"),
    str(ROOT / "examples" / ".." / "app.py"),
    "app.py",
    "../model/metadata.json",
    "../../../../etc/passwd",
    "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    str(Path(tempfile.gettempdir()) / ".." / "etc" / "passwd"),
]


@pytest.mark.parametrize("prefix", ["/file=", "/gradio_api/file="])
@pytest.mark.parametrize("target", OUTSIDE)
def test_files_outside_the_app_are_refused(served, prefix, target):
    url, _, _ = served
    response = httpx.get(url + prefix + target, timeout=30)
    assert response.status_code in (400, 403, 404, 405), (target, response.status_code)
    assert "root:" not in response.text and "def build_demo" not in response.text


def test_only_the_public_example_films_are_served_from_the_repository(served):
    url, _, _ = served
    ok = httpx.get(f"{url}/gradio_api/file={ROOT / 'examples' / 'NORMAL' / 'IM-0243-0001.jpeg'}", timeout=30)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("image/")
    assert "allowed_paths" not in (ROOT / "app.py").read_text()


# ---- upload limit -----------------------------------------------------------------------------

def test_oversized_upload_is_refused_with_a_clear_message(served):
    url, _, _ = served
    limit = int(app.MAX_FILE_SIZE.removesuffix("mb")) * 1024 * 1024
    response = upload(url, "huge.dcm", b"\0" * (limit + 1))
    assert response.status_code == 413
    assert "maximum allowed size" in response.text


def test_upload_within_the_limit_is_accepted(served):
    url, _, _ = served
    response = upload(url, "film.jpeg", (ROOT / "examples" / "NORMAL" / "IM-0243-0001.jpeg").read_bytes())
    assert response.status_code == 200 and len(response.json()) == 1


# ---- privacy ----------------------------------------------------------------------------------

def test_no_patient_details_in_logs_replies_or_returned_files(served, example_paths, tmp_path):
    from gradio_client import Client, handle_file

    url, _, log_path = served
    client = Client(url, verbose=False)
    dicom = make_dicom(tmp_path / "Doe_Jane_1970", example_paths[0])  # PACS exports often lack .dcm
    broken = tmp_path / "Doe_Jane_broken.dcm"
    broken.write_bytes(dicom.read_bytes()[:600])  # header intact, pixels cut off

    label, overlay_path, verdict = client.predict(handle_file(str(dicom)), api_name="/predict")
    with pytest.raises(Exception) as refused:
        client.predict(handle_file(str(broken)), api_name="/predict")

    replies = json.dumps([label, verdict]) + str(refused.value)
    overlay_bytes = Path(overlay_path).read_bytes()
    with Image.open(io.BytesIO(overlay_bytes)) as overlay:
        assert not overlay.getexif() and "comment" not in overlay.info and "icc_profile" not in overlay.info
    time.sleep(1)  # let the server flush its log
    log = log_path.read_text(errors="replace")
    for secret in SECRETS + ("Doe_Jane",):
        assert secret not in replies, secret
        assert secret.encode() not in overlay_bytes, secret
        assert secret not in log, secret
    assert "Traceback" not in log and "PixelData" not in log


def test_preview_carries_no_metadata(example_paths, tmp_path):
    from pneumonia.inference import make_preview

    preview = make_preview(make_dicom(tmp_path / "film.dcm", example_paths[0]).read_bytes())
    buffer = io.BytesIO()
    preview.save(buffer, format="PNG")
    assert not preview.info and not preview.getexif()
    assert not any(secret.encode() in buffer.getvalue() for secret in SECRETS)


def test_uploads_age_out_and_the_temp_folder_goes_at_exit(tiny_model_dir, example_paths, tmp_path):
    """With a 2 s lifetime every upload, preview and overlay is deleted; at exit the folder is."""
    from gradio_client import Client, handle_file

    with AppProcess(tiny_model_dir, tmp_path / "app.log", env={"PNEUMONIA_CACHE_TTL_S": "2"}) as served_app:
        url, process = served_app.url, served_app.process
        stored = upload(url, "Doe_Jane.jpeg", example_paths[0].read_bytes()).json()[0]
        temp_dir = Path(stored).parent.parent
        assert temp_dir.name.startswith("pneumonia-app-") and temp_dir.parent == Path(tempfile.gettempdir())
        assert temp_dir.stat().st_mode & 0o077 == 0, "temporary folder readable by other users"
        Client(url, verbose=False).predict(handle_file(str(example_paths[1])), api_name="/predict")
        assert files_under(temp_dir), "nothing was written: the test would prove nothing"
        for _ in range(240):  # deletion runs every TTL seconds; wait for it, bounded
            if not files_under(temp_dir):
                break
            time.sleep(0.5)
        assert not files_under(temp_dir), files_under(temp_dir)
    assert process.returncode == 0
    assert not temp_dir.exists()


# ---- start-up -----------------------------------------------------------------------------------

def _start(model_dir: Path, **env) -> tuple[int, str]:
    """``python app.py`` run until it gives up: its exit code and output."""
    return AppProcess(model_dir, env=env).run_to_exit(timeout=300)


def _broken_model(kind: str, tiny_model_dir: Path, folder: Path) -> Path:
    if kind == "missing folder":
        return folder / "nowhere"
    shutil.copytree(tiny_model_dir, folder, dirs_exist_ok=True)
    metadata = folder / "metadata.json"
    if kind == "no metadata":
        metadata.unlink()
    elif kind == "metadata not JSON":
        metadata.write_text("{ this is not json")
    elif kind == "no model file":
        (folder / "pneumonia_cnn.keras").unlink()
    elif kind == "corrupt model file":
        (folder / "pneumonia_cnn.keras").write_bytes(b"PK\x03\x04 truncated archive")
    elif kind == "input size disagrees":
        data = json.loads(metadata.read_text())
        metadata.write_text(json.dumps({**data, "input_size": data["input_size"] * 2}))
    elif kind == "three classes":
        data = json.loads(metadata.read_text())
        metadata.write_text(json.dumps({**data, "class_names": ["NORMAL", "PNEUMONIA", "TB"]}))
    return folder


@pytest.mark.parametrize("kind", ["missing folder", "no metadata", "metadata not JSON", "no model file",
                                  "corrupt model file", "input size disagrees", "three classes"])
def test_broken_model_stops_start_up_with_one_sentence(kind, tiny_model_dir, tmp_path):
    code, output = _start(_broken_model(kind, tiny_model_dir, tmp_path / "model"))
    assert code != 0
    assert "Traceback" not in output and "Running on" not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith("Cannot start: ") and last.endswith("."), last
    assert sum("Cannot start" in line for line in output.splitlines()) == 1


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses a socket LISTENs on at ``port`` on this machine (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
def test_app_listens_on_loopback_only_by_default(served):
    url, _, _ = served
    assert listening_addresses(int(url.rsplit(":", 1)[1])) == {"127.0.0.1"}


def test_default_address_is_this_machine_and_a_space_can_widen_it():
    from pneumonia.serving import read_address

    assert read_address({}) == ("127.0.0.1", 7860)
    assert read_address({"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7861"}) == ("0.0.0.0", 7861)


# A model folder that does not exist: a start-up that got as far as loading the model would say so.
@pytest.mark.parametrize("port", ["abc", "0", "70000", "78 60", "-1"])
def test_bad_port_is_refused_in_one_sentence_before_the_model_loads(port, tmp_path):
    code, output = _start(tmp_path / "no-model", GRADIO_SERVER_PORT=port)
    assert code != 0 and "Traceback" not in output
    assert output.strip().splitlines() == [
        f"Cannot start: GRADIO_SERVER_PORT must be a port number from 1 to 65535, not {port.strip()!r}."]


def test_busy_port_is_reported_before_the_model_loads(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        code, output = _start(tmp_path / "no-model", GRADIO_SERVER_PORT=str(port))
    assert code != 0 and "Traceback" not in output
    assert output.strip().splitlines() == [
        f"Cannot start: port {port} on 127.0.0.1 is already in use; set GRADIO_SERVER_PORT to another port."]
