"""Many films at once: expand files, folders and ZIP archives within limits, classify them in
batches, sort them most suspicious first and write the CSV; used by the batch CLI
(``python -m pneumonia predict``) and the app's Worklist tab alike.

What a request may hold (:class:`Limits`, the app's defaults below; the CLI lifts the per-request
caps, never the archive ones):

- at most :data:`MAX_FILES` films and :data:`MAX_REQUEST_BYTES` bytes (files as uploaded, plus
  archives as unpacked), checked before any film is read;
- per ZIP archive: at most :data:`MAX_ARCHIVE_MEMBERS` members and :data:`MAX_ARCHIVE_BYTES`
  unpacked (a zip bomb is refused from its directory, before anything is unpacked); each member at
  most :data:`MAX_MEMBER_BYTES` (also enforced while it is read, whatever the directory claims);
  no member whose path is absolute or climbs out with ``..``; no archive inside an archive; no
  encrypted member.

Each limit is one sentence saying what was refused and what to do. A refused request raises
:class:`WorklistError`; a refused archive or member gets an error row, and the other films go on.
Archives are read in memory, member by member, when their batch is decoded: nothing is extracted
to disk. No file name is ever logged.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, NamedTuple, Optional, Sequence, TextIO

from pneumonia.errors import InvalidImageError, PneumoniaError
from pneumonia.inference import UNKNOWN, VERDICT_FIELDS, FileResult, FilmItem, Predictor

# One row per file: the verdict of Prediction.to_dict() between the path and two batch fields
# (the probabilities are empty for UNKNOWN rows and every verdict field for unreadable files).
CSV_COLUMNS = ("path", *VERDICT_FIELDS, "chest_xray_distance", "error")
# The worklist table's columns (the app shows these; the CSV holds CSV_COLUMNS).
TABLE_COLUMNS = ("#", "file", "verdict", "P(pneumonia)", "population", "caution", "reason or error")

MB = 1024 * 1024
MAX_FILES = 500  # films per request (a morning's portable films, a teaching file)
MAX_REQUEST_BYTES = 400 * MB  # per request: uploads as sent plus archives as unpacked
MAX_ARCHIVE_MEMBERS = 1000  # entries in one archive's directory, folders included
MAX_ARCHIVE_BYTES = 400 * MB  # one archive, unpacked
MAX_MEMBER_BYTES = 40 * MB  # one member, unpacked: the app's single-upload limit
ARCHIVE_SUFFIXES = (".zip",)
# Archive formats that are refused inside an archive (and are not films anywhere).
NESTED_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".jar")
ZIP_MAGIC = b"PK\x03\x04"


class WorklistError(PneumoniaError):
    """A whole request is refused (too many films or bytes); the message is one sentence."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """How much one request may hold; ``None`` lifts a per-request cap (the CLI's folders).

    Attributes:
        max_files: films per request (archive members counted one by one).
        max_request_bytes: bytes per request, files as given plus archives as unpacked.
        max_archive_members: entries in one archive.
        max_archive_bytes: one archive's unpacked size, from its directory.
        max_member_bytes: one member's unpacked size (also enforced while reading).
    """

    max_files: Optional[int] = MAX_FILES
    max_request_bytes: Optional[int] = MAX_REQUEST_BYTES
    max_archive_members: int = MAX_ARCHIVE_MEMBERS
    max_archive_bytes: int = MAX_ARCHIVE_BYTES
    max_member_bytes: int = MAX_MEMBER_BYTES


APP_LIMITS = Limits()
CLI_LIMITS = Limits(max_files=None, max_request_bytes=None)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row to be: a film to classify, or a file refused before reading.

    Attributes:
        item: the film (:class:`pneumonia.inference.FilmItem`).
        refusal: a sentence when the file (or archive) was refused by a limit, else ``""``.
        size: bytes it will cost to read (uploads as sent, members as unpacked).
        origin: where to read the film again: ``(file on disk, archive member or "")``.
    """

    item: FilmItem
    refusal: str = ""
    size: int = 0
    origin: tuple[str, str] = ("", "")


def describe_limits(limits: Limits = APP_LIMITS) -> str:
    """The limits in one paragraph of plain text (shown in the page and the README)."""
    per_request = []
    if limits.max_files is not None:
        per_request.append(f"{limits.max_files} films")
    if limits.max_request_bytes is not None:
        per_request.append(f"{limits.max_request_bytes // MB} MB")
    head = f"Up to {' and '.join(per_request)} per request. " if per_request else ""
    return (f"{head}ZIP archives: at most {limits.max_archive_members} entries and "
            f"{limits.max_archive_bytes // MB} MB unpacked, each film at most {limits.max_member_bytes // MB} MB; "
            "no archives inside archives, no encrypted or absolute or '..' paths.")


def collect_files(inputs: Sequence[str]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of files, hidden files skipped.

    A path that does not exist is kept, so it gets its own row with an error.
    """
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")))
        else:
            files.append(path)
    return files


def is_archive(name: str) -> bool:
    """Whether a file is opened as an archive (by its name: ``.zip``)."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def escapes_archive(name: str) -> bool:
    """Whether an archive member's path is absolute or climbs out of the archive (``..``, a drive)."""
    normal = name.replace("\\", "/")
    return (normal.startswith("/") or (len(normal) > 1 and normal[1] == ":")
            or ".." in PurePosixPath(normal).parts)


def expand_archive(path: Path, shown: str, limits: Limits) -> list[Entry]:
    """The films inside a ZIP archive, each read lazily from it, or one refusal row for the archive.

    Folders, hidden files and macOS resource forks (``__MACOSX/``) are skipped; members that are
    themselves archives, encrypted, too large, or whose paths escape the archive get refusal rows.

    Args:
        path: the archive on disk.
        shown: what to call it in rows and sentences (e.g. the uploaded file's name).
        limits: the caps.

    Returns:
        One :class:`Entry` per member film, named ``"{shown}/{member path}"``.
    """
    try:
        archive = zipfile.ZipFile(path)
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return [refuse(shown, f"{shown} is not a readable ZIP archive.")]
    if len(members) > limits.max_archive_members:
        return [refuse(shown, f"{shown} holds {len(members)} entries, more than the {limits.max_archive_members} "
                              "an archive may hold; split it into smaller archives.")]
    unpacked = sum(member.file_size for member in members)
    if unpacked > limits.max_archive_bytes:
        return [refuse(shown, f"{shown} would unpack to {unpacked / MB:,.0f} MB, more than the "
                              f"{limits.max_archive_bytes // MB} MB an archive may hold; it was not unpacked.")]
    entries = []
    for member in members:
        name = member.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if member.is_dir() or not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts if p != ".."):
            continue
        label = f"{shown}/{name}"
        if escapes_archive(name):
            entries.append(refuse(label, f"{label}: its path leaves the archive (absolute or '..'), so it was "
                                         "not opened."))
        elif name.lower().endswith(NESTED_SUFFIXES):
            entries.append(refuse(label, f"{label} is an archive inside an archive; these are not opened. "
                                         "Unpack it and upload its films or a single archive of them."))
        elif member.flag_bits & 0x1:
            entries.append(refuse(label, f"{label} is encrypted; upload it unencrypted."))
        elif member.file_size > limits.max_member_bytes:
            entries.append(refuse(label, f"{label} would unpack to {member.file_size / MB:,.0f} MB, more than the "
                                         f"{limits.max_member_bytes // MB} MB a film may hold."))
        else:
            entries.append(Entry(FilmItem(label, make_member_reader(archive, member, limits.max_member_bytes)),
                                 size=member.file_size, origin=(str(path), name)))
    return entries


def make_member_reader(archive: zipfile.ZipFile, member: zipfile.ZipInfo, max_bytes: int) -> Callable[[], bytes]:
    """A callable reading one member's bytes, refusing more than ``max_bytes`` and nested archives.

    The cap holds while reading, whatever the directory claimed (a forged size cannot unpack
    more). Safe to call from several threads (``zipfile`` serialises reads of one archive). Its
    sentences name no file (the row does), so they hold under :func:`number_entries` too.

    Raises (when called):
        InvalidImageError: too large, damaged, or itself an archive, in a sentence.
    """
    def read() -> bytes:
        try:
            with archive.open(member) as stream:
                data = stream.read(max_bytes + 1)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError):
            raise InvalidImageError("This archive member could not be unpacked (the archive is damaged or uses "
                                    "an unsupported compression).") from None
        if len(data) > max_bytes:
            raise InvalidImageError(f"This archive member unpacks to more than the {max_bytes // MB} MB a film "
                                    "may hold.")
        if data.startswith(ZIP_MAGIC):
            raise InvalidImageError("This archive member is an archive inside an archive; these are not opened. "
                                    "Unpack it and upload its films or a single archive of them.")
        return data

    return read


def refuse(name: str, sentence: str) -> Entry:
    """An entry that is not read: its row carries ``sentence`` as the error."""
    return Entry(FilmItem(name, b""), refusal=sentence)


def expand_inputs(files: Sequence[tuple[str, Path]], limits: Limits = APP_LIMITS) -> list[Entry]:
    """Files and ZIP archives (and, for the CLI, folders already expanded) into rows, within limits.

    Args:
        files: ``(name to show, path on disk)`` per file, in the order given.
        limits: the caps.

    Returns:
        One :class:`Entry` per film (archives expanded in place), in order.

    Raises:
        WorklistError: more films or bytes than ``limits`` allow, in one sentence; nothing was read.
    """
    entries: list[Entry] = []
    for shown, path in files:
        path = Path(path)
        if is_archive(shown) and path.is_file():
            entries.extend(expand_archive(path, shown, limits))
        else:
            try:
                size = path.stat().st_size
            except OSError:
                size = 0
            entries.append(Entry(FilmItem(shown, path), size=size, origin=(str(path), "")))
    if limits.max_files is not None and len(entries) > limits.max_files:
        raise WorklistError(f"This request holds {len(entries)} films, more than the {limits.max_files} one request "
                            "may hold; send them in smaller groups.")
    total = sum(entry.size for entry in entries)
    if limits.max_request_bytes is not None and total > limits.max_request_bytes:
        raise WorklistError(f"This request holds {total / MB:,.0f} MB of films, more than the "
                            f"{limits.max_request_bytes // MB} MB one request may hold; send them in smaller groups.")
    return entries


def name_uploads(uploads: Optional[Sequence]) -> list[tuple[str, Path]]:
    """``(name to show, path on disk)`` per uploaded file, from Gradio's file descriptions.

    Args:
        uploads: ``{"path": stored path, "orig_name": uploaded name, ...}`` per file (a Gradio
            ``FileData`` dumped), or plain paths; ``None`` for none.

    Returns:
        The uploaded file's own name (its last part only), else the stored file's name, with the path.
    """
    named = []
    for upload in uploads or []:
        if isinstance(upload, dict):
            path, name = Path(upload["path"]), upload.get("orig_name") or ""
        else:
            path, name = Path(upload), ""
        named.append((PurePosixPath(str(name).replace("\\", "/")).name or path.name, path))
    return named


def number_entries(entries: Sequence[Entry]) -> list[Entry]:
    """The entries renamed ``film-001.dcm``, ``film-002.jpeg`` ... in order: the file's extension
    is kept (it tells DICOM apart), every other part of its name (often a patient's) is dropped,
    from the rows, the sentences and the CSV alike."""
    width = max(3, len(str(len(entries))))
    renamed = []
    for number, entry in enumerate(entries, 1):
        suffix = PurePosixPath(entry.item.name).suffix.lower()
        suffix = suffix if suffix[1:].isalnum() and len(suffix) <= 6 else ""
        name = f"film-{number:0{width}d}{suffix}"
        refusal = entry.refusal.replace(entry.item.name, name) if entry.refusal else ""
        source = entry.item.source
        if not callable(source) and not isinstance(source, (bytes, bytearray)):
            source = make_file_reader(Path(source))  # read_film would name the file by its path
        renamed.append(dataclasses.replace(entry, item=FilmItem(name, source), refusal=refusal))
    return renamed


def make_file_reader(path: Path) -> Callable[[], bytes]:
    """A callable reading a file's bytes whose sentences name no file (for :func:`number_entries`).

    Raises (when called):
        InvalidImageError: the file cannot be read.
    """
    def read() -> bytes:
        try:
            return path.read_bytes()
        except OSError:
            raise InvalidImageError("This file could not be read (missing, a folder, or not readable).") from None

    return read


def run_entries(predictor: Predictor, entries: Sequence[Entry], batch_size: int = 64,
                progress: Optional[Callable[[int, int], None]] = None) -> Iterator[FileResult]:
    """Classify the entries in batches (:meth:`Predictor.predict_items`); refused ones give their
    refusal as the error. One result per entry, in order.

    Args:
        predictor: the loaded model.
        entries: from :func:`expand_inputs`.
        batch_size: films per network pass.
        progress: called with ``(done, total)`` after each result.
    """
    readable = [entry.item for entry in entries if not entry.refusal]
    results = predictor.predict_items(readable, batch_size=batch_size)
    for done, entry in enumerate(entries, 1):
        result = FileResult(entry.item.name, None, entry.refusal) if entry.refusal else next(results)
        if progress is not None:
            progress(done, len(entries))
        yield result


class Worklist(NamedTuple):
    """A classified request, most suspicious first.

    Attributes:
        results: one :class:`pneumonia.inference.FileResult` per film, sorted (:func:`rank_result`).
        origins: per result, where to read its film again (:func:`read_origin`).
    """

    results: list[FileResult]
    origins: list[tuple[str, str]]


def run_worklist(predictor: Predictor, files: Sequence[tuple[str, Path]], numbered: bool = False,
                 limits: Limits = APP_LIMITS, batch_size: int = 32,
                 progress: Optional[Callable[[int, int], None]] = None) -> Worklist:
    """Expand, classify and sort one request: what the app's Worklist tab and ``/predict_batch`` run.

    Args:
        predictor: the loaded model.
        files: ``(name to show, path on disk)`` per uploaded file.
        numbered: replace file names with numbers (:func:`number_entries`).
        limits: the caps (:data:`APP_LIMITS`).
        batch_size: films per network pass.
        progress: called with ``(done, total)`` as films are read.

    Raises:
        WorklistError: the request holds more films or bytes than ``limits`` allow.
    """
    entries = expand_inputs(files, limits)
    if numbered:
        entries = number_entries(entries)
    results = list(run_entries(predictor, entries, batch_size, progress))
    order = sorted(range(len(results)), key=lambda i: rank_result(results[i]))
    return Worklist([results[i] for i in order], [entries[i].origin for i in order])


def read_origin(origin: tuple[str, str], limits: Limits = APP_LIMITS) -> Path | bytes:
    """A worklist film again, to open it on its own: its path, or an archive member's bytes.

    Raises:
        InvalidImageError: the archive or member can no longer be read, in a sentence.
    """
    path, member = origin
    if not member:
        return Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            return make_member_reader(archive, archive.getinfo(member), limits.max_member_bytes)()
    except (zipfile.BadZipFile, OSError, KeyError):
        raise InvalidImageError("This film's archive is no longer available; upload it again.") from None


def rank_result(result: FileResult) -> tuple:
    """Sort key, most suspicious first: diagnoses by calibrated P(pneumonia) descending, then
    UNKNOWN, then unreadable files (ties keep their order under a stable sort)."""
    if result.prediction is None:
        return (2, 0.0)
    if result.prediction.label == UNKNOWN:
        return (1, 0.0)
    return (0, -result.prediction.pneumonia_probability)


def sort_results(results: Iterable[FileResult]) -> list[FileResult]:
    """The results most suspicious first (:func:`rank_result`), ties in their given order."""
    return sorted(results, key=rank_result)


def write_csv(results: Iterable[FileResult], out: TextIO) -> int:
    """Write the batch CSV: a header of :data:`CSV_COLUMNS`, then one row per result
    (:meth:`pneumonia.inference.FileResult.to_row`). The one serialisation of a batch.

    Returns:
        The number of rows written.
    """
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    count = 0
    for result in results:
        writer.writerow(result.to_row())
        count += 1
    return count


def format_csv(results: Iterable[FileResult]) -> str:
    """:func:`write_csv` into a string."""
    buffer = io.StringIO(newline="")
    write_csv(results, buffer)
    return buffer.getvalue()


def to_table_row(number: int, result: FileResult) -> list:
    """One row of the worklist table (:data:`TABLE_COLUMNS`): number, file, verdict, calibrated
    P(pneumonia) (rounded to 3 places; empty for UNKNOWN and errors), population, caution yes/no,
    and the UNKNOWN reason or the error."""
    if result.prediction is None:
        return [number, result.path, "unreadable", None, "", "", result.error]
    verdict = result.prediction.to_dict()
    probability = verdict["pneumonia_probability"]
    return [number, result.path, verdict["label"], None if probability is None else round(probability, 3),
            verdict["population"] or "", "yes" if verdict["caution"] else "no", verdict["reason"] or ""]


def summarise_results(results: Sequence[FileResult]) -> str:
    """One line counting the verdicts, e.g. ``12 films: 5 PNEUMONIA, 4 NORMAL, 1 UNKNOWN, 2 unreadable.``"""
    counts: dict[str, int] = {}
    for result in results:
        key = result.prediction.label if result.prediction is not None else "unreadable"
        counts[key] = counts.get(key, 0) + 1
    order = sorted(counts, key=lambda k: (k == "unreadable", k == UNKNOWN, k))
    parts = ", ".join(f"{counts[key]} {key}" for key in order)
    return f"{len(results)} film{'s' if len(results) != 1 else ''}: {parts}." if results else "No films."


# The Worklist tab's text (the page shows it above the upload).
INTRO = ("### Worklist: many films at once\n"
         "Drop images, DICOM files or `.zip` archives of them. Every film gets one row, **most suspicious "
         "first** (highest calibrated probability of pneumonia), then the uploads that are not frontal chest "
         "films (UNKNOWN), then the files that could not be read, each with its sentence. Select a row to see "
         "that film's heatmap, verdict and notes, and its PDF report. The CSV has the batch command's "
         "columns (`python -m pneumonia predict`).\n\n"
         f"**Limits.** {describe_limits()}\n\n"
         "**File names** are often patients' names: they are shown only to you, in this page, never logged, and "
         "go wherever you take the CSV. Tick *Replace file names with numbers* to call the films `film-001`, "
         "`film-002` ... in upload order, in the table, the CSV and the sentences alike (the extension is kept). "
         "PDF reports never carry a file name.")
API_DESCRIPTION = ("Classify many films (images, DICOM files, .zip archives of them). Returns the table, most "
                   "suspicious first (columns: " + ", ".join(TABLE_COLUMNS) + "), and the CSV with the batch "
                   "command's columns. A second input replaces file names with numbers. A request over the "
                   "limits raises an error saying which.")
