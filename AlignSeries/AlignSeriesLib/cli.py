"""The ``alignseries`` command line: headless AlignSeries on a real MRML scene from ``slicer-core``.

Every command loads its inputs into a fresh scene through :mod:`AlignSeriesLib.mrml` and runs the
same functions as the Slicer module's logic. ``--json`` prints one JSON document on stdout; a
failure prints one line ``error: …`` on stderr and exits with status 2 (bad input) or 3 (a bug),
never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import signal
import sys
from pathlib import Path

from . import __version__
from .choices import GEOMETRY_MODES, INTERPOLATIONS, LANDMARK_MODES, MATCH_METHODS, REFINE_MODELS
from .errors import AlignSeriesError, one_line

logger = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
EXIT_INTERNAL_ERROR = 3
#: ``batch``: the summary was printed, and at least one case failed.
EXIT_CASES_FAILED = 1


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        return _fail(error, EXIT_BAD_INPUT, as_json="--json" in (sys.argv[1:] if argv is None else argv))
    _configure_logging(args.verbose)
    _report_short_writes()
    try:
        document = args.handler(args)
    except (AlignSeriesError, OSError) as error:
        return _fail(error, EXIT_BAD_INPUT, as_json=args.json)
    except KeyboardInterrupt:
        return _fail("interrupted", 130, as_json=args.json)
    except Exception as error:  # a bug: still one line for the user, the traceback only with --verbose
        logger.debug("internal error", exc_info=True)
        return _fail(f"internal error ({type(error).__name__}): {error}", EXIT_INTERNAL_ERROR, as_json=args.json)
    status, failure = document.pop("_exit_status", 0), document.pop("_error", None)
    try:
        if args.json:
            json.dump(_jsonable({k: v for k, v in document.items() if k != "text"}), sys.stdout, indent=1,
                      allow_nan=False)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(document.get("text", "") + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `alignseries info … | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return _fail(failure, status) if failure else status


class UsageError(AlignSeriesError):
    """The command line itself is wrong (unknown command or option, missing or invalid argument)."""


class _ArgumentParser(argparse.ArgumentParser):
    """An argument parser whose usage errors become one ``error: …`` line (sub-parsers inherit the class)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per job."""
    parser = _ArgumentParser(prog="alignseries", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"alignseries {__version__}")
    common = _ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    common.add_argument("-v", "--verbose", action="store_true", help="log progress and details on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", parents=[common], help="describe every volume found in PATHs")
    info.add_argument("paths", nargs="+", metavar="PATH", help="DICOM folder or files, or a volume file")
    info.add_argument("--no-regularize", dest="regularize", action="store_false",
                      help="refuse irregular series instead of resampling them onto a regular grid")
    info.add_argument("--regularize-spacing", type=float, metavar="MM",
                      help="spacing along the normal of a regularized grid (default: the smallest acquired gap)")
    info.set_defaults(handler=run_info)

    transform = commands.add_parser("transform", parents=[common], help="transform between two volumes' geometry")
    _add_volume_argument(transform, "--fixed", "reference volume")
    _add_volume_argument(transform, "--moving", "volume to align")
    transform.add_argument("--mode", choices=GEOMETRY_MODES,
                           help="%(choices)s (default frameOfReference)")
    transform.add_argument("--registration", metavar="REG", help="DICOM Spatial Registration object linking the frames")
    transform.add_argument("--refine", choices=REFINE_MODELS,
                           help="then refine by image intensity (Mattes mutual information over the overlap): "
                                "rigid, or affine after rigid; the report says how far it moved and when to check")
    transform.add_argument("--initial", metavar="FILE",
                           help="with --refine: start from this transform file (e.g. from `landmarks`) instead "
                                "of --mode")
    transform.add_argument("--fixed-mask", nargs="+", metavar="PATH",
                           help="with --refine: label map or .seg.nrrd; only its non-zero voxels of the fixed "
                                "volume count")
    transform.add_argument("--moving-mask", nargs="+", metavar="PATH",
                           help="with --refine: likewise for the moving volume")
    transform.add_argument("--check-landmarks", nargs=2, metavar=("FIXED", "MOVING"),
                           help="with --refine: corresponding points files, not used by the refinement, whose "
                                "error after it is reported")
    _add_output_argument(transform, "transform file: .h5/.tfm/.txt (ITK), .json/.mat4 (4x4 RAS to-parent), "
                                    ".mat (FSL FLIRT, -in moving -ref fixed), .dcm (DICOM REG)")
    transform.set_defaults(handler=run_transform)

    landmarks = commands.add_parser("landmarks", parents=[common], help="transform from corresponding points")
    landmarks.add_argument("--fixed", required=True, metavar="POINTS", help="points on the fixed volume")
    landmarks.add_argument("--moving", required=True, metavar="POINTS", help="the same points on the moving volume")
    landmarks.add_argument("--mode", choices=LANDMARK_MODES, default="rigid", help="%(choices)s (default %(default)s)")
    landmarks.add_argument("--match", choices=MATCH_METHODS, default="order",
                           help="pair points by list order, by label, or automatically for unordered lists "
                                "(default %(default)s)")
    landmarks.add_argument("--fixed-image", nargs="+", metavar="PATH",
                           help="the fixed volume (DICOM or volume file): the target registration error is "
                                "estimated at its center, instead of at the fixed points' centroid")
    _add_output_argument(landmarks, "transform file: .h5/.tfm/.txt (ITK), .json/.mat4 (4x4 RAS to-parent)")
    landmarks.set_defaults(handler=run_landmarks)

    resample = commands.add_parser("resample", parents=[common], help="resample a volume onto a reference grid")
    _add_volume_argument(resample, "--input", "volume or label map to resample")
    _add_volume_argument(resample, "--reference", "volume whose grid the output takes")
    resample.add_argument("--transform", metavar="FILE",
                          help="moving-to-fixed transform file (input to reference): .h5/.tfm/.txt, .json/.mat4, "
                               "or FSL FLIRT .mat (-in input -ref reference)")
    resample.add_argument("--interpolation", choices=INTERPOLATIONS, default="linear",
                          help="%(choices)s (default %(default)s); label maps are always resampled label-safe")
    resample.add_argument("--labelmap", action="store_true", help="the input is a label map: resample label-safe")
    resample.add_argument("--background", type=float,
                          help="value outside the input (default: its minimum, 0 for labels)")
    resample.add_argument("--crop-to-overlap", action="store_true",
                          help="output only the part of the reference grid that the input covers (same spacing, "
                               "directions and voxel positions); not with a DICOM folder output or --png")
    resample.add_argument("--slab", nargs=2, type=int, metavar=("FIRST", "COUNT"),
                          help="output only reference slices FIRST .. FIRST+COUNT-1 (k from 0, in order along the "
                               "normal) at their true position: one chunk of a large export, DICOM included")
    resample.add_argument("--png", metavar="DIR",
                          help="also write one PNG per reference slice into DIR, and DIR/index.csv: a label map's "
                               "PNGs hold the label values (8-bit, or 16-bit above 255), a scalar volume's are "
                               "8-bit grey through --png-window")
    resample.add_argument("--png-window", nargs=2, type=_finite_float, metavar=("C", "W"),
                          help="window centre and width of scalar PNGs (default: the 0.5th to 99.5th percentile "
                               "of the output); stated in index.csv")
    resample.add_argument("--series-uid", metavar="UID", type=_dicom_uid,
                          help="SeriesInstanceUID of a DICOM output (default: derived from the reference's series "
                               "UID and the input's name, so --slab chunks written into one folder are one series)")
    resample.add_argument("--preview", metavar="PNG", help="also write a fused picture of reference and output")
    resample.add_argument("--preview-at", nargs=3, type=_finite_float, metavar=("R", "A", "S"),
                          help="RAS point (mm) the preview's axial, coronal and sagittal panes cut through "
                               "(default: the reference's centre)")
    resample.add_argument("--compress", action="store_true",
                          help="gzip a .nrrd/.mha output (smaller, about ten times slower to write); raw by "
                               "default, .nii.gz always compressed")
    resample.add_argument("--seg", metavar="OUT.dcm",
                          help="also (or only) write a DICOM SEG of the label map, referencing the DICOM reference's "
                               "slices (highdicom)")
    resample.add_argument("--labels", metavar="TABLE",
                          help="label names for the SEG: CSV/TSV value,name[,category code,type code][,colour] or a "
                               "Slicer colour table (.ctbl/.txt); default a SEG input's own")
    resample.add_argument("--seg-type", choices=("binary", "labelmap"), default="binary",
                          help="SEG encoding (default %(default)s; labelmap keeps the label values)")
    resample.add_argument("--algorithm", metavar="NAME[,VERSION]", type=_algorithm,
                          help="the algorithm that made the labels (SEG segments AUTOMATIC; MANUAL without it)")
    resample.add_argument("--segments", metavar="N,N,…", type=_segment_numbers,
                          help="segments of a DICOM SEG input to read (overlapping segments cannot share a label map)")
    _add_output_argument(resample, "volume file (.nrrd, .nii.gz, .mha) or a folder (ending in /) for DICOM",
                         required=False)
    resample.set_defaults(handler=run_resample)

    batch = commands.add_parser("batch", parents=[common], help="many resample jobs from a CSV manifest, on Dask",
                                description="Run one `resample` job per manifest row on Dask: a local cluster of "
                                            "single-threaded worker processes, or an existing cluster. Columns: input, "
                                            "reference, output (relative to --output-dir; ending in / for DICOM), "
                                            "optional transform, labelmap (yes/no), png (folder), interpolation, "
                                            "refine (rigid/affine: refine the transform by image intensity "
                                            "first). "
                                            "A rerun skips the cases done earlier. Exit status 1 when a case failed.")
    batch.add_argument("manifest", metavar="MANIFEST.csv", help="one row per case (input/reference/transform paths "
                                                                "relative to the manifest's folder)")
    batch.add_argument("--output-dir", required=True, metavar="DIR", help="folder for every case's outputs")
    where = batch.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, metavar="N",
                       help="worker processes of the local cluster (default: the number of cores)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="an existing Dask scheduler (tcp://HOST:PORT) whose workers see the same paths")
    batch.add_argument("--force", action="store_true", help="redo the cases done earlier and replace their outputs")
    batch.set_defaults(handler=run_batch)

    demo = commands.add_parser("demo", parents=[common], help="the whole job on a built-in synthetic pair")
    demo.add_argument("--output", default="demo-output", metavar="DIR", help="folder for the demo's outputs")
    demo.add_argument("--force", action="store_true", help="replace the outputs of an earlier demo run")
    demo.set_defaults(handler=run_demo)
    return parser


def _add_volume_argument(parser, flag: str, what: str) -> None:
    parser.add_argument(flag, required=True, nargs="+", metavar="PATH",
                        help=f"{what}: DICOM folder or files, or a volume file")
    parser.add_argument(f"{flag}-volume", metavar="N", type=int, default=None,
                        help=f"which volume of {flag} to use when it holds several (1-based, as `info` lists them)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _algorithm(text: str) -> tuple[str, str]:
    name, _, version = text.partition(",")
    if not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME[,VERSION], got {text!r}")
    return name.strip(), version.strip()


def _segment_numbers(text: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"expected segment numbers like 1,3, got {text!r}")
    return numbers


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _dicom_uid(text: str) -> str:
    """A DICOM UID: digits in dot-separated components without leading zeros, at most 64 characters."""
    if len(text) > 64 or not re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid DICOM UID (digits and dots, components without "
                                         f"leading zeros, at most 64 characters; this one has {len(text)})")
    return text


def _add_output_argument(parser, what: str, *, required: bool = True) -> None:
    parser.add_argument("--output", required=required, metavar="FILE", help=what)
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")


# -- commands -----------------------------------------------------------------------------------


def run_info(args) -> dict:
    """``alignseries info``: every volume found, with geometry and warnings."""
    from . import describe
    from .files import is_volume_file

    options = {"regularize": args.regularize, "regularize_spacing": args.regularize_spacing,
               "progress": _progress_bar(args, "scanning")}
    scan: dict = {"skipped": [], "warnings": []}
    if any(is_volume_file(path) for path in args.paths):  # no DICOM module (nor pydicom) to import
        from . import operations

        _capture_vtk_messages()
        volumes = operations.describe_inputs(args.paths, **options)
    else:  # DICOM only: no MRML scene, no VTK, no Slicer to start
        from .dicom import seg_read as dicom_seg_read

        if len(args.paths) == 1 and dicom_seg_read.is_seg_file(args.paths[0]):
            volumes = [dicom_seg_read.describe_seg(args.paths[0])]
        else:
            scan = describe.describe_dicom_scan(args.paths, **options)
            volumes = scan["volumes"]
    text = "\n\n".join(describe.volume_text(number, volume) for number, volume in enumerate(volumes, start=1))
    text += "".join(f"\n\nwarning [{w['code']}]: {w['message']}" for w in scan["warnings"])  # once, for all volumes
    skipped = {"skipped": scan["skipped"], "warnings": scan["warnings"]} if scan["skipped"] else {}
    return {"volumes": volumes, **skipped, "text": text}


def run_transform(args) -> dict:
    """``alignseries transform``: moving-to-fixed transform from the two volumes' geometry."""
    from . import files, mrml, operations

    files.check_outputs_spare_inputs([*files.protected_places([*args.fixed, *args.moving]), args.registration],
                                     [args.output])
    _capture_vtk_messages()
    scene = mrml.new_scene()
    fixed = operations.load_one_volume(scene, args.fixed, index=args.fixed_volume, role="--fixed")
    moving = operations.load_one_volume(scene, args.moving, index=args.moving_volume, role="--moving")
    registrations = [args.registration] if args.registration else ()
    refine = _refine_request(args, scene)
    if args.initial:
        initial_node = operations.read_transform(scene, args.initial,
                                                 moving_geometry=mrml.volume_geometry(moving, world=False),
                                                 fixed_geometry=mrml.volume_geometry(fixed, world=False))
        initial = mrml.transform_to_parent_matrix(initial_node)
        scene.RemoveNode(initial_node)
        result = operations.refine_transform(scene, fixed, moving, initial, refine, mode="file",
                                             explanation=f"read from {args.initial}")
    else:
        result = operations.compute_geometry_transform(scene, fixed, moving, args.mode or "frameOfReference",
                                                       registrations=registrations, refine=refine)
    document = _transform_document(result, args)
    if result.refinement is not None:
        document["text"] += (f"\n{result.refinement.text()}\nlook at it first: alignseries resample --input "
                             f"{' '.join(args.moving)} --reference {' '.join(args.fixed)} --transform {args.output} "
                             "--output moved.nrrd --preview fused.png")
    return document


def _refine_request(args, scene):
    """The refinement ``transform --refine`` asks for (None without it); its options checked first."""
    from . import operations

    options = {"--initial": args.initial, "--fixed-mask": args.fixed_mask, "--moving-mask": args.moving_mask,
               "--check-landmarks": args.check_landmarks}
    if not args.refine:
        given = [name for name, value in options.items() if value]
        if given:
            raise UsageError(f"{', '.join(given)} go(es) with --refine rigid|affine")
        return None
    if args.initial and (args.mode or args.registration):
        raise UsageError("--initial and --mode/--registration both choose the starting transform: give one")
    masks = [operations.load_one_volume(scene, paths, role=role, labelmap=True) if paths else None
             for role, paths in (("--fixed-mask", args.fixed_mask), ("--moving-mask", args.moving_mask))]
    return operations.RefineRequest(args.refine, masks[0], masks[1], args.check_landmarks,
                                    _progress_bar(args, "refine"))


def run_landmarks(args) -> dict:
    """``alignseries landmarks``: transform from corresponding points, with per-point errors."""
    from . import files, mrml, operations

    files.check_outputs_spare_inputs(files.protected_places([args.fixed, args.moving, *(args.fixed_image or [])]),
                                     [args.output])
    _capture_vtk_messages()
    scene = mrml.new_scene()
    fixed_volume = (operations.load_one_volume(scene, args.fixed_image, role="--fixed-image") if args.fixed_image
                    else None)
    result = operations.compute_landmark_transform(scene, args.fixed, args.moving, args.mode, match=args.match,
                                                   fixed_volume=fixed_volume)
    return _transform_document(result, args)


def _transform_document(result, args) -> dict:
    """Write the computed transform to ``--output`` and describe it."""
    result.save(args.output, force=args.force)
    document = {**result.to_dict(), "output": str(args.output)}
    document["text"] = _format_transform_text(document)
    return document


def run_resample(args) -> dict:
    """``alignseries resample``: the input on the reference grid, as a file or a DICOM series."""
    from . import mrml, operations
    from .export_job import ExportOptions
    from .exports import ExportTargets

    _capture_vtk_messages()
    if not args.output and not args.seg:
        raise UsageError("resample: give --output FILE|DIR and/or --seg FILE")
    targets = ExportTargets.for_output(args.output, png_folder=args.png, preview=args.preview, force=args.force,
                                       png_window=args.png_window, series_uid=args.series_uid,
                                       preview_at_ras=args.preview_at, compress=args.compress, seg_file=args.seg,
                                       labels=operations.as_label_table(args.labels) if args.labels else None,
                                       seg_type=args.seg_type, seg_algorithm=args.algorithm)
    options = ExportOptions(args.interpolation, args.labelmap or None, args.background, args.slab,
                            args.crop_to_overlap)
    result = operations.resample_and_export(
        mrml.new_scene(), args.input, args.reference, targets, options, transform=args.transform,
        input_index=args.input_volume, reference_index=args.reference_volume, progress=_progress_bar(args, "resample"),
        segments=args.segments)
    outputs, extras = [str(path) for path in result.outputs], [str(path) for path in result.extras]
    return {"output": outputs, "extras": extras, "geometry": mrml.volume_geometry(result.volume_node).to_dict(),
            "warnings": [warning.to_dict() for warning in result.warnings],
            "text": "\n".join(f"wrote {path}" for path in outputs + extras)}


def run_batch(args) -> dict:
    """``alignseries batch``: one resample job per manifest row, on Dask; exit status 1 when a case failed."""
    from . import batch

    if not args.verbose:
        batch.quiet_dask_logging()
    terminal = batch.TerminalProgress() if sys.stderr.isatty() and not args.json else None
    summary = batch.run_batch(args.manifest, args.output_dir, workers=args.workers, scheduler=args.scheduler,
                              force=args.force, progress=terminal,
                              on_cluster=terminal.cluster if terminal else None, quiet=not args.verbose)
    summary["text"] = batch.summary_text(summary)
    if summary["failed"]:
        first = next(result for result in summary["cases"] if result["status"] == "failed")
        summary["_exit_status"] = EXIT_CASES_FAILED
        summary["_error"] = (f"{summary['failed']} of {len(summary['cases'])} cases failed; the first, line "
                             f"{first['row']}: {first['error']}")
    return summary


def run_demo(args) -> dict:
    """``alignseries demo``: the whole job on a built-in synthetic pair."""
    from . import demo

    _capture_vtk_messages()
    return demo.run(Path(args.output), force=args.force)


# -- output -------------------------------------------------------------------------------------


def _format_transform_text(document: dict) -> str:
    lines = ["moving -> fixed (RAS, to-parent):"] + [_format_row(row) for row in document["moving_to_fixed_ras"]]
    if "moving_ijk_to_fixed_ijk" in document:
        lines += ["moving voxel (i, j, k) -> fixed voxel:"]
        lines += [_format_row(row) for row in document["moving_ijk_to_fixed_ijk"]]
    if document.get("rms_error_mm") is not None:
        lines.append(f"RMS error {document['rms_error_mm']:.3f} mm")
        for label, residual in zip(document["labels"], document["residuals_mm"], strict=True):
            lines.append(f"  {label}: {residual:.3f} mm")
    if document.get("explanation"):
        lines.append(document["explanation"])
    lines.append(f"wrote {document['output']}")
    return "\n".join(lines)


def _format_row(row) -> str:
    import numpy as np  # not at the top: `--help` needs no numpy (0.1 to 0.4 s of start-up)

    return "  " + " ".join(f"{value:12.6f}" for value in np.asarray(row, dtype=float))


def _jsonable(value):
    """``value`` with arrays as lists, paths as text, and NaN or infinity (an undefined error) as null."""
    import numpy as np  # loaded by every command that reaches here; not by `--help`

    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return str(value) if isinstance(value, Path) else value


def _fail(error, status: int, *, as_json: bool = False) -> int:
    """The ``error:`` line on stderr (with ``--json`` also ``{"error": …}`` on stdout); returns ``status``."""
    message = one_line(error)
    if as_json:
        with contextlib.suppress(OSError):  # stdout closed: the error line still goes out
            sys.stdout.write(json.dumps({"error": message}) + "\n")
            sys.stdout.flush()
    sys.stderr.write(f"error: {message}\n")
    return status


def _report_short_writes() -> None:
    """A write beyond the file-size limit (``ulimit -f``) fails with an error the writers report, instead of a signal.

    Python ignores SIGXFSZ at start-up; a host that embeds it might not, so it is set here explicitly.
    """
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


class _LevelPrefixFormatter(logging.Formatter):
    """``warning: …`` lines on stderr, like the ``error: …`` line (warnings go to stderr, results to stdout)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelPrefixFormatter())
    handler.addFilter(_OncePerCommand())
    logging.captureWarnings(True)  # Python warnings of libraries go through logging ("py.warnings")
    if not verbose:  # pydicom logs a failed decode with its traceback; the error line says it. (A filter on the
        # handler, not a level on pydicom's logger: importing pydicom later resets that level to WARNING.)
        # Libraries' own Python warnings (nibabel, pydicom, dask …) speak to developers: shown with --verbose only.
        handler.addFilter(lambda record: not record.name.startswith(("pydicom", "py.warnings"))
                          or record.levelno >= logging.CRITICAL)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])


class _OncePerCommand(logging.Filter):
    """Lets each distinct warning message through once per command (the same input met by several steps)."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        message = record.getMessage()
        if message in self._seen:
            return False
        self._seen.add(message)
        return True


def _progress_bar(args, what: str):
    """A ``progress(fraction)`` drawing a bar on stderr when it is a terminal (not with ``--json``), else None."""
    if args.json or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=1000, desc=what, unit="", bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}",
               leave=False, file=sys.stderr)

    def progress(fraction: float) -> bool:
        bar.update(max(0, round(fraction * 1000) - bar.n))
        if fraction >= 1.0:
            bar.close()
        return False

    return progress


def _capture_vtk_messages() -> None:
    """VTK's and ITK's messages collected, not printed: called by the commands that start VTK (not by ``--help``)."""
    from . import mrml

    mrml.capture_vtk_messages()


if __name__ == "__main__":
    sys.exit(main())
