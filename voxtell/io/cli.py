"""``voxtell convert``, ``voxtell rtstruct`` and ``voxtell export-dicom``: thin wrappers around the Python API."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="DICOM study folder -> image.nii.gz + series.json",
        description="Choose one image series in a DICOM study and convert it with dcm2niix. "
        "Always writes OUT_DIR/status.json (the workflow's status record, with warnings); exit code 1 on a bad study.",
    )
    p.add_argument("study_dir", metavar="STUDY_DIR", help="folder with the study's DICOM files (searched recursively)")
    p.add_argument("-o", "--out", required=True, metavar="OUT_DIR", help="output folder")
    p.add_argument(
        "--modality", nargs="+", default=["CT", "MR", "PT"], metavar="MOD",
        help="allowed modalities, most preferred first (default: CT MR PT)",
    )
    p.add_argument("--min-slices", type=int, default=10, help="fewer slices = not a volume (default 10)")
    p.add_argument("--suv", action="store_true", help="PET: write body-weight SUV instead of Bq/ml")
    p.set_defaults(func=_convert)

    r = subparsers.add_parser(
        "rtstruct",
        help="rasterise an RTSTRUCT onto a converted image",
        description="Write one uint8 NIfTI per ROI (named by a slug of the ROI name) and rois.json. The RTSTRUCT "
        "must share the image's Frame of Reference (another series of that frame is drawn, with a warning).",
    )
    r.add_argument("rtstruct", metavar="RS.dcm", help="RTSTRUCT file")
    r.add_argument("--image", required=True, help="converted image (OUT_DIR/image.nii.gz)")
    r.add_argument("-o", "--out", required=True, metavar="ROI_DIR", help="output folder for the ROI masks")
    r.add_argument(
        "--no-reference-check", action="store_true",
        help="draw even if the RTSTRUCT's frame of reference (or, without one, its series) is not the image's",
    )
    r.set_defaults(func=_rtstruct)

    e = subparsers.add_parser(
        "export-dicom",
        help="a study's masks -> DICOM SEG + RTSTRUCT referencing the source series",
        description="Write OUT/seg.dcm (binary DICOM SEG, one segment per prompt), OUT/rtstruct.dcm (one ROI per "
        "prompt) and OUT/export.json, in the geometry of the source series and referencing its instances.",
    )
    e.add_argument("study_dir", metavar="STUDY_DIR", help="the study's mask folder (masks + manifest.json)")
    e.add_argument("--dicom", required=True, metavar="SOURCE", help="the study's DICOM folder (the converted series)")
    e.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    e.add_argument(
        "--convert-dir", default=None, metavar="DIR",
        help="folder with series.json (and dicom_ref.json); default: the folder of the manifest's image",
    )
    e.set_defaults(func=_export_dicom)


def _convert(args: argparse.Namespace) -> int:
    """The workflow's convert stage for one study (one status format, one code path)."""
    from pathlib import Path

    from voxtell.cohort.stage_convert import run_convert
    from voxtell.errors import ConfigError
    from voxtell.io.selection import SelectionPolicy

    try:
        SelectionPolicy(modalities=tuple(args.modality), min_slices=args.min_slices)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    record = run_convert(Path(args.study_dir).name or "study", args.out, dicom=args.study_dir,
                         modalities=tuple(args.modality), min_slices=args.min_slices, pet_suv=args.suv)
    for warning in record["warnings"]:
        log.warning("%s", warning)
    if record["status"] != "ok":
        log.error("%s: %s", record["error_class"], record["message"])
        return 1
    d = record["details"]
    print(f"{d['image']}\t{d['modality']}\t{'x'.join(map(str, d['shape']))}\t{d['orientation']}")
    return 0


def _rtstruct(args: argparse.Namespace) -> int:
    from voxtell.io.rtstruct import rasterise_rtstruct

    masks = rasterise_rtstruct(args.rtstruct, args.image, args.out, check_reference=not args.no_reference_check)
    for m in masks:
        print(f"{m.file}\t{m.name}\t{m.voxel_count}\t{m.volume_ml} ml")
    return 0


def _export_dicom(args: argparse.Namespace) -> int:
    from voxtell.io.dicom_export import export_study

    result = export_study(args.study_dir, args.dicom, args.out, convert_dir=args.convert_dir)
    print(f"{result.seg_path}\t{result.n_segments} segment(s)")
    print(f"{result.rtstruct_path}\t{result.n_contours} contour(s)")
    return 0
