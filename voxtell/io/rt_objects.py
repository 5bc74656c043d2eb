"""RT structure sets and DICOM SEGs found in a study folder, drawn onto the converted image.

Clinical archives often hold the contours beside the images (an RTSTRUCT of the planning
CT, a SEG from a reading workstation). With ``reference: auto`` these become the study's
reference masks without a manual step: every RTSTRUCT is rasterised by
``voxtell.io.rtstruct`` (same Frame of Reference check as ``voxtell rtstruct``) and every
binary or fractional SEG segment is placed on the image grid (an exact re-indexing: only
SEGs on the image's own voxel grid are used, never resampled). Objects that cannot be used
are named in warnings, never dropped silently, and never stop the study's statistics.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxtell.errors import VoxTellError
from voxtell.io.rtstruct_write import RTSTRUCT_SOP_CLASS

log = logging.getLogger(__name__)

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
MAX_FILES = 200_000  # a study folder is not a whole archive; beyond this the walk stops with a warning


@dataclass(frozen=True)
class RtObject:
    path: Path
    kind: str  # "RTSTRUCT" or "SEG"


@dataclass(frozen=True)
class RtMask:
    """One reference mask drawn from an RT object: its ROI/segment name and NIfTI file."""

    name: str
    file: Path
    origin: str  # "<object file name>: ROI n" (no identifiers)
    voxel_count: int


@dataclass
class RtReferences:
    masks: list[RtMask] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    objects: list[RtObject] = field(default_factory=list)


def find_rt_objects(dicom_dir: str | os.PathLike) -> tuple[list[RtObject], list[str]]:
    """RTSTRUCT and SEG files below ``dicom_dir`` (headers only, links not followed)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    root = Path(dicom_dir)
    found: list[RtObject] = []
    warnings: list[str] = []
    if not root.is_dir():
        return found, [f"DICOM folder {root} not found; no RT references"]
    n = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            n += 1
            if n > MAX_FILES:
                warnings.append(f"more than {MAX_FILES} files below {root}; the search for RT objects stopped there")
                return found, warnings
            if name.startswith(".") or path.is_symlink() or not path.is_file():
                continue
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
            except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError, KeyError):
                continue  # not DICOM or unreadable: the convert stage reports those
            sop = str(ds.get("SOPClassUID", "") or "")
            modality = str(ds.get("Modality", "") or "").upper()
            if sop == RTSTRUCT_SOP_CLASS or modality == "RTSTRUCT":
                found.append(RtObject(path, "RTSTRUCT"))
            elif sop == SEG_SOP_CLASS or modality == "SEG":
                found.append(RtObject(path, "SEG"))
    return found, warnings


def scatter_onto_grid(
    mask: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape: tuple[int, ...]
) -> tuple[np.ndarray, int] | None:
    """Place the set voxels of ``mask`` on the destination grid; None unless the grids share voxel centres.

    Returns the mask on the destination grid and the number of voxels that fell outside it.
    """
    m = np.linalg.inv(np.asarray(dst_affine, float)) @ np.asarray(src_affine, float)  # src index -> dst index
    rot = m[:3, :3]
    if not (np.allclose(np.abs(rot).sum(axis=0), 1, atol=1e-3) and np.allclose(np.abs(rot).max(axis=0), 1, atol=1e-3)):
        return None
    if not np.allclose(m[:3, 3], np.round(m[:3, 3]), atol=1e-2):
        return None
    idx = np.argwhere(mask)
    dst = np.rint(idx @ rot.T + m[:3, 3]).astype(np.int64)
    inside = np.all((dst >= 0) & (dst < np.asarray(dst_shape[:3])), axis=1)
    out = np.zeros(tuple(int(s) for s in dst_shape[:3]), dtype=bool)
    out[tuple(dst[inside].T)] = True
    return out, int((~inside).sum())


def _seg_masks(obj: RtObject, image, out_dir: Path, image_frame: str) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    import highdicom as hd

    seg = hd.seg.segread(obj.path)
    frame = str(seg.get("FrameOfReferenceUID", "") or "")
    if image_frame and frame and frame != image_frame:
        return [], [f"SEG {obj.path.name} is in another frame of reference than the image; not used as reference"]
    if not image_frame:
        return [], [f"SEG {obj.path.name}: the image has no recorded frame of reference; not used as reference"]
    masks, warnings = [], []
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        label = str(item.get("SegmentLabel", "") or f"segment_{number}")
        try:
            vol = seg.get_volume(segment_numbers=[number], combine_segments=False)
        except (ValueError, RuntimeError) as exc:
            warnings.append(f"SEG {obj.path.name} segment {number} is not a regular volume ({exc}); not used")
            continue
        array = np.asarray(vol.array)[..., 0] > 0
        placed = scatter_onto_grid(array, _LPS @ np.asarray(vol.affine, float), image.affine, image.shape)
        if placed is None:
            warnings.append(f"SEG {obj.path.name} segment {number} is on another voxel grid than the image; not used")
            continue
        data, outside = placed
        if outside:
            warnings.append(f"SEG {obj.path.name} segment {number}: {outside} voxel(s) outside the image, left out")
        masks.append((label, data))
    return masks, warnings


def draw_rt_references(dicom_dir: str | os.PathLike, image_path: str | os.PathLike, out_dir: str | os.PathLike,
                       *, series_json: str | os.PathLike | None = None) -> RtReferences:
    """Rasterise every RTSTRUCT and SEG of the study onto ``image_path`` into ``out_dir``."""
    import json
    import shutil

    import nibabel as nib

    from voxtell.io.nifti import load_nifti, save_nifti_atomic
    from voxtell.io.rtstruct import rasterise_rtstruct, slugify

    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)  # references follow the folder's current RT objects
    result = RtReferences()
    objects, result.warnings = find_rt_objects(dicom_dir)
    result.objects = objects
    if not objects:
        return result
    image = load_nifti(image_path)
    sj = Path(series_json) if series_json else Path(image_path).parent / "series.json"
    try:
        image_frame = str(json.loads(sj.read_text(encoding="utf-8")).get("frame_of_reference_uid") or "")
    except (OSError, ValueError, AttributeError):
        image_frame = ""
    for n, obj in enumerate(objects, start=1):
        target = out / f"{n:02d}_{obj.kind.lower()}"
        try:
            if obj.kind == "RTSTRUCT":
                for roi in rasterise_rtstruct(obj.path, image_path, target, series_json=series_json):
                    result.masks.append(RtMask(roi.name, target / roi.file, f"{obj.path.name}: ROI {roi.number}",
                                               roi.voxel_count))
                    result.warnings += [f"{obj.path.name} ROI '{roi.name}': {w}" for w in roi.warnings]
            else:
                masks, warnings = _seg_masks(obj, image, target, image_frame)
                result.warnings += warnings
                for label, data in masks:
                    file = target / f"{slugify(label) or 'segment'}_{len(result.masks)}.nii.gz"
                    save_nifti_atomic(nib.Nifti1Image(data.astype(np.uint8), image.affine), file)
                    result.masks.append(RtMask(label, file, f"{obj.path.name}: segment {label}", int(data.sum())))
        except VoxTellError as exc:
            result.warnings.append(f"{obj.kind} {obj.path.name} not used as reference: {type(exc).__name__}: {exc}")
        except Exception as exc:  # a damaged third-party object must not cost the study its statistics
            result.warnings.append(f"{obj.kind} {obj.path.name} could not be read ({type(exc).__name__}: {exc}); not used")
    return result
