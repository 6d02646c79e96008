"""``alignseries batch``: many resample/export jobs from a CSV manifest, run on Dask.

Each manifest row is one case, run by :func:`run_case` exactly as ``alignseries resample`` runs
(:func:`AlignSeriesLib.operations.resample_and_export`, the export job). Cases run on a Dask ``distributed``
cluster: a local one by default (one single-threaded worker process per core), or an existing one
(``--scheduler tcp://HOST:PORT``). Dask is imported here only, never by the core or the Slicer module.

Manifest columns (a header row, then one row per case):

============== ========================================================================================
input          DICOM folder or volume file to resample (relative to the manifest's folder if not absolute)
reference      DICOM folder or volume file whose grid the output takes (likewise)
output         relative to ``--output-dir``: a volume file, or a folder for DICOM when it ends in ``/``
transform      optional moving-to-fixed transform file (likewise relative to the manifest's folder)
labelmap       optional ``yes``/``no``: resample the input label-safe
png            optional folder, relative to ``--output-dir``, for one PNG per reference DICOM slice
interpolation  optional ``nearest``, ``linear`` (default) or ``cubic``
seg            optional DICOM SEG file, relative to ``--output-dir``, of the label map on a DICOM reference
labels         optional label table naming the SEG's segments (relative to the manifest's folder)
refine         optional ``rigid`` or ``affine``: first refine the transform (or the identity) by image
               intensity (:func:`AlignSeriesLib.operations.refine_transform`), write it beside the output as
               ``<output>.refined.h5``, and resample through it; the case's warnings include the refinement's
============== ========================================================================================

Robustness. A failing case is reported and never stops the others. Every output is written
atomically by the exporters; a case then writes a completion record
``DIR/.alignseries-batch/<case>.json`` (atomically too). A rerun skips the cases whose record says
done (with the same inputs and options, and every output still there), redoes the others, and
with ``--force`` redoes them all. The batch owns the outputs of a case once its record claims them:
an output that exists before the batch first ran its case is not replaced without ``--force``.
After Ctrl-C the local workers stop and the temporary files of unfinished cases are removed.

Every worker, and the process that runs the command, must see the input paths, the manifest's
folder and ``DIR`` at the same paths (a shared file system on a cluster).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from .choices import INTERPOLATIONS, REFINE_MODELS
from .errors import AlignSeriesError, OutputExistsError, one_line
from .files import remove_stale_temporaries, safe_name, write_text_atomic

logger = logging.getLogger(__name__)

#: Folder inside the output folder that holds one completion record per case.
RECORD_FOLDER = ".alignseries-batch"
REQUIRED_COLUMNS = ("input", "reference", "output")
OPTIONAL_COLUMNS = ("transform", "labelmap", "png", "interpolation", "seg", "labels", "refine")
_YES = ("yes", "y", "true", "1")
_NO = ("no", "n", "false", "0", "")
#: Seconds to wait for an existing cluster's scheduler to answer (``--scheduler``).
CONNECT_SECONDS = 30.0
#: Seconds to wait for at least one worker of an existing cluster (``--scheduler``).
WORKER_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class Case:
    """One manifest row: what to resample onto what, and where the outputs go.

    Attributes
    ----------
    row : int
        Line of the manifest (the header is line 1).
    input, reference : str
        Absolute paths (resolved against the manifest's folder).
    output : str
        Relative to the output folder, as the manifest gives it (a trailing ``/`` means DICOM).
    transform : str or None
        Absolute path.
    labelmap, interpolation, refine : str
        The manifest's text, checked when the case runs (a bad value fails that case only).
    png : str or None
        Folder relative to the output folder.
    """

    row: int
    input: str
    reference: str
    output: str
    transform: str | None = None
    labelmap: str = ""
    png: str | None = None
    interpolation: str = ""
    seg: str | None = None
    labels: str | None = None
    refine: str = ""

    @property
    def key(self) -> str:
        """A file name for the case's completion record, unique per output."""
        digest = hashlib.sha1(self.output.rstrip("/").encode("utf-8")).hexdigest()[:10]
        return f"{safe_name(self.output.strip('/').replace('/', '_'))[:80]}-{digest}"

    def spec(self) -> dict:
        """What defines the case's result (everything but its row)."""
        return {name: value for name, value in asdict(self).items() if name != "row"}


# -- the manifest ---------------------------------------------------------------------------------


def read_manifest(path) -> list[Case]:
    """The cases of a manifest, in its order.

    Raises
    ------
    AlignSeriesError
        If the manifest cannot be read, lacks a required column, names an unknown one, has no case,
        or gives an output that is absolute, leaves the output folder, or repeats another's.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            rows = list(csv.reader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise AlignSeriesError(f"manifest {path} cannot be read: {error}") from None
    if not rows:
        raise AlignSeriesError(f"manifest {path} is empty: expected a header row with {', '.join(REQUIRED_COLUMNS)}")
    header = [name.strip().lower() for name in rows[0]]
    _check_columns(path, header)
    folder = path.absolute().parent
    cases = [_case(folder, line, dict(zip(header, (cell.strip() for cell in cells), strict=False)))
             for line, cells in enumerate(rows[1:], start=2) if any(cell.strip() for cell in cells)]
    if not cases:
        raise AlignSeriesError(f"manifest {path} has a header but no case")
    _check_outputs(path, cases)
    return cases


def _check_columns(path: Path, header: list[str]) -> None:
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise AlignSeriesError(f"manifest {path} lacks the column(s) {', '.join(missing)} "
                               f"(header: {', '.join(header)})")
    unknown = [name for name in header if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise AlignSeriesError(f"manifest {path}: unknown column(s) {', '.join(unknown)}; known: "
                               f"{', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}")


def _case(folder: Path, line: int, cells: dict) -> Case:
    def resolved(name: str) -> str | None:
        text = cells.get(name) or ""
        return str(folder / text) if text else None

    return Case(line, resolved("input") or "", resolved("reference") or "", cells.get("output") or "",
                resolved("transform"), cells.get("labelmap") or "", cells.get("png") or None,
                cells.get("interpolation") or "", cells.get("seg") or None, resolved("labels"),
                cells.get("refine") or "")


def _check_outputs(path: Path, cases: list[Case]) -> None:
    """Every output and PNG folder is a new place inside the output folder, given to one case only."""
    owners: dict[str, int] = {}
    for case in cases:
        for column, text in (("output", case.output), ("png", case.png), ("seg", case.seg)):
            if text is None:
                continue
            relative = PurePosixPath(text.replace("\\", "/"))
            if not text or relative.is_absolute() or ".." in relative.parts or Path(text).is_absolute():
                raise AlignSeriesError(f"manifest {path} line {case.row}: {column} must be a path inside "
                                       f"--output-dir (relative, without '..'): {text!r}")
            normal = relative.as_posix().rstrip("/")
            if normal in owners:
                raise AlignSeriesError(f"manifest {path} line {case.row}: {column} {text!r} is also written by "
                                       f"line {owners[normal]}")
            owners[normal] = case.row


# -- one case (runs on a worker) ------------------------------------------------------------------


def run_case(case: Case, output_dir: str | Path, force: bool = False) -> dict:
    """Run one case as ``alignseries resample`` would, and write its completion record.

    Never raises for a problem of the case itself: the result says ``failed`` with one error line.

    Returns
    -------
    dict
        ``row``, ``input``, ``reference``, ``output``, ``status`` (``done`` or ``failed``),
        ``seconds``, ``outputs`` and ``extras`` (paths written), ``error`` (None or one line),
        ``warnings`` (``{"code", "message"}``), ``log`` (messages logged), ``worker`` and
        ``peak_memory_mib`` (the worker process's peak resident memory so far).
    """
    start = time.perf_counter()
    output_root = Path(output_dir)
    result = {"row": case.row, "input": case.input, "reference": case.reference, "output": case.output,
              "status": "failed", "seconds": None, "outputs": [], "extras": [], "error": None, "warnings": [],
              "log": []}
    claimed = False
    fingerprint = None
    with _collected_log() as messages:
        try:
            record_path = _record_path(output_root, case)
            previous = _read_record(record_path)
            claimed = force or bool(previous and previous.get("claimed"))
            options = _case_options(case)
            targets = _output_targets(case, output_root)
            _check_inside(output_root, targets)
            fingerprint = input_fingerprint(case)  # before the work: a change during it redoes the case next time
            _remove_leftovers(targets)
            if not claimed:
                _refuse_existing(targets)
            _write_record(record_path, {"status": "running", "claimed": True, "case": case.spec()})
            claimed = True
            result.update(_resample_and_export(case, targets, options, force=True))
            result["status"] = "done"
        except Exception as error:  # one case's failure never stops the others: it is reported instead
            logger.debug("case on line %d failed", case.row, exc_info=True)
            result["error"] = error_line(error)
    result.update(seconds=round(time.perf_counter() - start, 3), log=messages, worker=_worker_name(),
                  peak_memory_mib=peak_memory_mib())
    try:
        _write_record(_record_path(output_root, case), {**result, "claimed": claimed, "case": case.spec(),
                                                        "inputs": fingerprint})
    except Exception as error:  # run_case never raises: a case whose record cannot be kept is redone next time
        result["error"] = result["error"] or f"its completion record could not be written: {error_line(error)}"
        result["status"] = "failed"
    return result


def _check_inside(output_dir: Path, targets: dict) -> None:
    """Every output resolves inside the output folder, symlinks followed (the manifest check is lexical only)."""
    root = output_dir.resolve()
    for path in filter(None, (targets["output"], targets["png"], targets["refined"])):
        if not Path(path).resolve().is_relative_to(root):
            raise AlignSeriesError(f"{path} leads outside --output-dir {output_dir} (to {Path(path).resolve()}) "
                                   "through a symbolic link: not written")


def input_fingerprint(case: Case) -> str:
    """A digest of every input file of a case (size, modification time and first and last bytes of each).

    A DICOM folder counts every regular file under it; anything else (FIFOs, devices) is named, never opened.
    """
    digest = hashlib.sha256()
    for text in filter(None, (case.input, case.reference, case.transform)):
        for path in _files_under(Path(text)):
            digest.update(str(path).encode("utf-8", "surrogateescape"))
            try:
                status = path.stat()
                digest.update(f"{status.st_size}:{status.st_mtime_ns}:{stat.S_IFMT(status.st_mode)}".encode())
                if stat.S_ISREG(status.st_mode):
                    digest.update(_first_and_last_bytes(path, status.st_size))
            except OSError as error:  # unreadable now: the case itself will say so
                digest.update(type(error).__name__.encode())
    return digest.hexdigest()


#: Bytes read from each end of an input file for :func:`input_fingerprint`.
FINGERPRINT_SAMPLE_BYTES = 4096


def _files_under(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    return sorted(Path(folder) / name for folder, _, names in os.walk(path) for name in names)


def _first_and_last_bytes(path: Path, size: int) -> bytes:
    with open(path, "rb") as file:
        head = file.read(FINGERPRINT_SAMPLE_BYTES)
        file.seek(max(size - FINGERPRINT_SAMPLE_BYTES, 0))
        return head + file.read(FINGERPRINT_SAMPLE_BYTES)


def _case_options(case: Case) -> dict:
    """The export options of a case's text cells (:class:`~AlignSeriesLib.export_job.ExportOptions`' fields), or what
    is wrong with them."""
    interpolation = case.interpolation.lower() or "linear"
    if interpolation not in INTERPOLATIONS:
        raise AlignSeriesError(f"interpolation {case.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
    labelmap = case.labelmap.lower()
    if labelmap not in _YES + _NO:
        raise AlignSeriesError(f"labelmap {case.labelmap!r} is neither yes nor no")
    if not case.input or not case.reference:
        raise AlignSeriesError("the row gives no " + ("input" if not case.input else "reference"))
    if case.refine.lower() not in ("", *REFINE_MODELS):
        raise AlignSeriesError(f"refine {case.refine!r} is not one of {', '.join(REFINE_MODELS)} (or empty)")
    return {"interpolation": interpolation, "labelmap": True if labelmap in _YES else None}


def _output_targets(case: Case, output_dir: Path) -> dict:
    """Absolute output and PNG folder of a case (a DICOM output keeps its trailing ``/``)."""
    output = str(output_dir / case.output) + ("/" if case.output.endswith(("/", "\\")) else "")
    refined = str(output_dir / case.output.rstrip("/\\")) + ".refined.h5" if case.refine else None
    return {"output": output, "png": str(output_dir / case.png) if case.png else None,
            "seg": str(output_dir / case.seg) if case.seg else None, "refined": refined}


def _resample_and_export(case: Case, targets: dict, options: dict, *, force: bool) -> dict:
    """The case's outputs, made by the same use case as ``alignseries resample``."""
    from . import mrml, operations
    from .export_job import ExportOptions
    from .exports import ExportTargets

    mrml.capture_vtk_messages()
    scene = mrml.new_scene()  # the writers create the missing folders (and remove them if the case fails)
    try:
        refinement = _refine(scene, case, targets["refined"], force=force) if case.refine else None
        export = operations.resample_and_export(
            scene, case.input, case.reference,
            ExportTargets.for_output(targets["output"], png_folder=targets["png"], force=force, seg_file=targets["seg"],
                                     labels=operations.as_label_table(case.labels) if case.labels else None),
            ExportOptions(**options), transform=targets["refined"] if refinement else case.transform)
        warnings = (refinement.warnings if refinement else []) + list(export.warnings)
        return {"outputs": [str(path) for path in export.outputs],
                "extras": [str(path) for path in export.extras] + ([targets["refined"]] if refinement else []),
                "warnings": [warning.to_dict() for warning in warnings]}
    finally:
        scene.Clear(1)  # a worker runs many cases: free this one's voxels now


def _refine(scene, case: Case, path: str, *, force: bool):
    """Refine the case's transform (or the identity) by image intensity; write it to ``path``; its report."""
    import numpy as np

    from . import mrml, operations

    fixed = operations.load_one_volume(scene, case.reference, role="reference")
    moving = operations.load_one_volume(scene, case.input, role="input")
    initial = np.eye(4)
    if case.transform:
        node = operations.read_transform(scene, case.transform, moving_geometry=mrml.volume_geometry(moving),
                                         fixed_geometry=mrml.volume_geometry(fixed))
        initial = mrml.transform_to_parent_matrix(node)
    result = operations.refine_transform(scene, fixed, moving, initial, case.refine.lower(),
                                         mode="file" if case.transform else "identity")
    result.save(path, force=force)
    return result.refinement


def _refuse_existing(targets: dict) -> None:
    for path in filter(None, (targets["output"], targets["png"], targets["seg"], targets["refined"])):
        if Path(path).exists() and not (Path(path).is_dir() and not any(Path(path).iterdir())):
            raise OutputExistsError(f"{Path(path)} exists and was not written by this batch: not replaced "
                                    "(use --force to replace it)")


def _remove_leftovers(targets: dict, *, writers_stopped: bool = False) -> None:
    """Remove the temporary files and folders that an interrupted writer of these outputs left behind."""
    for path in filter(None, (targets["output"], targets["png"], targets["seg"], targets["refined"])):
        remove_stale_temporaries(path, writers_stopped=writers_stopped)


def error_line(error: BaseException) -> str:
    """One line about an error, as the command line's ``error:`` line gives it."""
    if isinstance(error, AlignSeriesError | OSError):
        return one_line(error)
    return one_line(f"internal error ({type(error).__name__}): {error}")


def peak_memory_mib() -> float | None:
    """Peak resident memory of this process so far, MiB (None where the platform does not tell)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _worker_name() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):  # not on a Dask worker
        return None


class _ListHandler(logging.Handler):
    """A logging handler that appends ``level: message`` lines (warnings and above) to a list."""

    def __init__(self, messages: list[str]):
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname.lower()}: {record.getMessage()}")


@contextlib.contextmanager
def _collected_log() -> Iterator[list[str]]:
    """Collect what AlignSeriesLib logs (warnings and above) during a case, instead of a worker's stderr."""
    messages: list[str] = []
    handler = _ListHandler(messages)
    package = logging.getLogger(__package__)
    propagate = package.propagate
    package.addHandler(handler)
    package.propagate = False
    try:
        yield messages
    finally:
        package.removeHandler(handler)
        package.propagate = propagate


# -- completion records ---------------------------------------------------------------------------


def _record_path(output_dir: Path, case: Case) -> Path:
    return Path(output_dir) / RECORD_FOLDER / f"{case.key}.json"


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=1) + "\n", force=True)


def finished_result(case: Case, output_dir: Path) -> dict | None:
    """The result of a case done earlier with the same inputs and options, whose outputs are all there."""
    record = _read_record(_record_path(output_dir, case))
    if not record or record.get("status") != "done" or record.get("case") != case.spec():
        return None
    if record.get("inputs") != input_fingerprint(case):  # an input changed since (same path, other content)
        return None
    written = list(record.get("outputs", [])) + list(record.get("extras", []))
    if not written or not all(Path(path).exists() for path in written):
        return None
    return {**{key: value for key, value in record.items() if key not in ("claimed", "case")}, "status": "skipped",
            "row": case.row}


# -- the whole batch ------------------------------------------------------------------------------


@dataclass
class Progress:
    """Counts for a progress display: cases done, failed and remaining, and cases per minute."""

    done: int
    failed: int
    remaining: int
    cases_per_minute: float


def run_batch(manifest, output_dir, *, workers: int | None = None, scheduler: str | None = None,
              force: bool = False, progress: Callable[[Progress], None] | None = None,
              on_cluster: Callable[[dict], None] | None = None, quiet: bool = True) -> dict:
    """Run every case of a manifest on Dask and return the summary.

    Parameters
    ----------
    manifest : str or Path
        CSV manifest (see the module's documentation).
    output_dir : str or Path
        Folder for every output; created when missing.
    workers : int, optional
        Worker processes of the local cluster (one thread each); the number of cores by default.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://HOST:PORT``) instead of a local cluster.
    force : bool
        Redo the cases done earlier and replace any existing output.
    progress : callable, optional
        Called with a :class:`Progress` after each case.
    on_cluster : callable, optional
        Called once the cluster is up, with ``{"scheduler", "workers", "dashboard"}``.
    quiet : bool
        Keep the local workers' own log (e.g. a heartbeat's ``CommClosedError`` at shutdown) off the terminal;
        every case's failure is in the summary anyway.

    Returns
    -------
    dict
        ``cases`` (one result per row, in the manifest's order; see :func:`run_case`, plus
        ``skipped`` status), counts ``done``, ``skipped``, ``failed``, ``seconds``, ``cases_per_minute``,
        ``workers``, ``scheduler``, ``dashboard`` and ``peak_memory_mib`` (largest over the cases run).
    """
    cases = read_manifest(manifest)
    output_dir = Path(output_dir).absolute()
    _prepare_output_dir(output_dir)
    start = time.perf_counter()
    results = {} if force else {case.row: result for case in cases
                                if (result := finished_result(case, output_dir)) is not None}
    pending = [case for case in cases if case.row not in results]
    cluster = {"scheduler": scheduler, "workers": 0, "dashboard": None}
    if pending:
        results |= _run_on_dask(pending, output_dir, force=force, workers=workers, scheduler=scheduler,
                                quiet=quiet, progress=progress, on_cluster=lambda info: (cluster.update(info),
                                                                            on_cluster and on_cluster(info)))
    seconds = time.perf_counter() - start
    ordered = [results[case.row] for case in cases]
    counts = {status: sum(result["status"] == status for result in ordered) for status in ("done", "skipped",
                                                                                            "failed")}
    peaks = [result["peak_memory_mib"] for result in ordered
             if result["status"] != "skipped" and result.get("peak_memory_mib") is not None]
    rate = round(60 * len(pending) / seconds, 2) if pending else None
    return {"manifest": str(manifest), "output_dir": str(output_dir), "cases": ordered, **counts,
            "seconds": round(seconds, 3), "cases_per_minute": rate,
            **cluster, "peak_memory_mib": max(peaks, default=None)}


def _prepare_output_dir(output_dir: Path) -> None:
    """Create the output folder and its record folder, or say in one line why they cannot be written."""
    try:
        (output_dir / RECORD_FOLDER).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir / RECORD_FOLDER):  # a file can be made there (as root too)
            pass
    except OSError as error:
        raise AlignSeriesError(f"--output-dir {output_dir} cannot be written: {error.strerror or error}") from None


def _run_on_dask(pending: list[Case], output_dir: Path, *, force: bool, workers: int | None, scheduler: str | None,
                 quiet: bool, progress, on_cluster) -> dict:
    """Submit every pending case to a Dask cluster and gather one result per case, failed ones included."""
    from distributed import as_completed

    results = {}
    try:
        with _dask_client(scheduler, min(workers or os.cpu_count() or 1, len(pending)), quiet=quiet) as client:
            on_cluster(_cluster_info(client, scheduler))
            futures = {client.submit(run_case, case, str(output_dir), force, key=f"alignseries-{case.key}",
                                     pure=False): case for case in pending}
            start = time.perf_counter()
            for future in as_completed(futures):
                case = futures[future]
                results[case.row] = _gathered(future, case)
                if progress is not None:
                    failed = sum(result["status"] == "failed" for result in results.values())
                    elapsed = max(time.perf_counter() - start, 1e-9)
                    progress(Progress(len(results) - failed, failed, len(pending) - len(results),
                                      60 * len(results) / elapsed))
    except KeyboardInterrupt:
        if scheduler is None:  # the local workers are gone: remove what their unfinished writers left
            for case in pending:
                if case.row not in results:
                    _remove_leftovers(_output_targets(case, output_dir), writers_stopped=True)
        raise
    return results


def _gathered(future, case: Case) -> dict:
    """The result of a case's future; a worker that died or was lost makes the case failed."""
    try:
        return future.result()
    except Exception as error:  # e.g. distributed's KilledWorker: the case, not the batch, failed
        return {"row": case.row, "input": case.input, "reference": case.reference, "output": case.output,
                "status": "failed", "seconds": None, "outputs": [], "extras": [], "error": _lost_case_line(error),
                "warnings": [], "log": [], "worker": None, "peak_memory_mib": None}


def _lost_case_line(error: BaseException) -> str:
    """Why a case has no result: its worker process died while running it (run_case itself never raises)."""
    if type(error).__name__ != "KilledWorker":
        return error_line(error)
    return ("the worker process running this case died: killed by the system (e.g. out of memory) or crashed in a "
            "C++ library; run it alone with `alignseries resample ... -v` to see why")


@contextlib.contextmanager
def _dask_client(scheduler: str | None, workers: int, *, quiet: bool = True):
    """A Dask client on an existing scheduler, or on a local cluster of single-threaded worker processes."""
    import dask
    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if scheduler:
            try:
                client = stack.enter_context(Client(scheduler, timeout=CONNECT_SECONDS))
            except OSError as error:
                raise AlignSeriesError(f"cannot reach the Dask scheduler {scheduler}: {error}") from None
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
            except TimeoutError:
                raise AlignSeriesError(f"the Dask scheduler {scheduler} has no worker (waited "
                                       f"{WORKER_WAIT_SECONDS:.0f} s): start some with `dask worker {scheduler} "
                                       "--nthreads 1`") from None
        else:  # a case that kills its worker (a crash in C++, the memory killer) would kill it again: run it once
            stack.enter_context(dask.config.set({"distributed.scheduler.allowed-failures": 0}))
            cluster = stack.enter_context(LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL if quiet else logging.WARNING))
            client = stack.enter_context(Client(cluster))
        yield client


def _cluster_info(client, scheduler: str | None) -> dict:
    info = client.scheduler_info()
    dashboard = client.dashboard_link if "dashboard" in info.get("services", {}) else None
    return {"scheduler": scheduler or info.get("address"), "workers": len(info.get("workers", {})),
            "dashboard": dashboard}


# -- for the command line ------------------------------------------------------------------------


def summary_text(summary: dict) -> str:
    """The summary for a person: one line per case, then the counts."""
    lines = []
    for result in summary["cases"]:
        seconds = f"{result['seconds']:.1f} s" if result.get("seconds") is not None else "-"
        detail = f": {result['error']}" if result["status"] == "failed" else ""
        lines.append(f"{result['status']:8} line {result['row']:<4} {result['output']} ({seconds}){detail}")
    rate = f", {summary['cases_per_minute']:.1f} cases/min" if summary.get("cases_per_minute") else ""
    lines.append(f"{summary['done']} done, {summary['skipped']} skipped, {summary['failed']} failed "
                 f"in {summary['seconds']:.1f} s{rate}")
    return "\n".join(lines)


def quiet_dask_logging() -> None:
    """Silence Dask's own start/stop messages (its failures reach the summary as failed cases)."""
    import distributed  # noqa: F401  (sets up its loggers, each with its own level, on import)

    families = ("distributed", "tornado")  # tornado logs a closed comm's traceback too
    for name in [*families, *logging.root.manager.loggerDict]:
        if name.split(".")[0] in families:
            logging.getLogger(name).setLevel(logging.CRITICAL)


class TerminalProgress:
    """Progress on a terminal: one line rewritten in place (cases done / failed / remaining, rate)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def cluster(self, info: dict) -> None:
        where = info.get("scheduler") or "local cluster"
        self.stream.write(f"running on {where} with {info.get('workers')} worker(s)"
                          + (f"; dashboard {info['dashboard']}" if info.get("dashboard") else "") + "\n")
        self.stream.flush()

    def __call__(self, progress: Progress) -> None:
        self.stream.write(f"\r{progress.done} done, {progress.failed} failed, {progress.remaining} remaining "
                          f"({progress.cases_per_minute:.1f} cases/min)" + ("\n" if not progress.remaining else ""))
        self.stream.flush()
