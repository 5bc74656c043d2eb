"""Small series cut from the real planning CT in tests/data, and ways to damage their headers.

`crop_series` keeps every header element of the real files (MIRP STS_001 CT, CC BY 3.0, see
tests/data/PROVENANCE.md) and changes only what a crop must: Rows, Columns, the pixel data
and ImagePositionPatient (moved to the new first voxel). `set_element` writes any value with
any VR into a file, including values pydicom itself refuses to create, so header fuzzing
reaches the bytes a damaged export would hold. `header_volume` computes HU and geometry from
the headers with pydicom and numpy only, independently of voxtell's code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).parent / "data"
MIRP_CT = DATA / "mirp_sts_001" / "CT" / "dicom" / "image"
#: 48x48x12 crop of the MIRP STS_001 T1 MR made by ``crop_series`` (tests/data/PROVENANCE.md).
MIRP_MR_CROP = DATA / "mirp_sts_001" / "MR_T1_crop"


def _sorted_by_position(files: list[Path]) -> list[Any]:
    import pydicom

    dss = [pydicom.dcmread(f) for f in files]
    for ds in dss:  # an empty NumberOfFrames means one frame (pydicom's pixel reader insists on a number)
        if "NumberOfFrames" in ds and not str(ds.NumberOfFrames).strip(" \x00"):
            del ds.NumberOfFrames
    iop = np.array(dss[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(dss, key=lambda d: float(np.array(d.ImagePositionPatient, float) @ normal))


def crop_series(
    out: Path,
    src: Path = MIRP_CT,
    rows: tuple[int, int] = (0, 64),
    cols: tuple[int, int] = (20, 84),
    slices: tuple[int, int] = (20, 32),
    prefix: str = "CT",
) -> list[Path]:
    """Write slices ``slices`` of ``src``, cropped to ``rows`` x ``cols``, into ``out``; files in slice order."""
    out.mkdir(parents=True, exist_ok=True)
    dss = _sorted_by_position(sorted(src.glob("*.dcm")))[slices[0] : slices[1]]
    files = []
    for k, ds in enumerate(dss):
        arr = ds.pixel_array[rows[0] : rows[1], cols[0] : cols[1]]
        iop = np.array(ds.ImageOrientationPatient, float)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        ipp = np.array(ds.ImagePositionPatient, float) + iop[:3] * dc * cols[0] + iop[3:] * dr * rows[0]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        ds.Rows, ds.Columns = arr.shape
        ds.PixelData = np.ascontiguousarray(arr).tobytes()
        path = out / f"{prefix}{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def set_element(path: Path, keyword: str, value: Any, vr: str | None = None, explicit: bool = False) -> None:
    """Write ``keyword`` = ``value`` into ``path`` as raw bytes with ``vr`` (None value: delete it).

    ``explicit`` rewrites the file as explicit VR little endian first, so that a wrong VR is
    stored in the file (an implicit VR file takes the VR from the dictionary on reading).
    """
    import pydicom
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import DataElement
    from pydicom.uid import ExplicitVRLittleEndian

    ds = pydicom.dcmread(path)
    if explicit:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    tag = tag_for_keyword(keyword)
    if value is None:
        if keyword in ds:
            del ds[keyword]
    else:
        vr = vr or dictionary_VR(tag)
        if isinstance(value, str) and vr in ("DS", "IS", "US", "SS", "UL", "SL", "FL", "FD"):
            raw = value.encode("latin-1")
            vr_use = "UN" if vr in ("US", "SS", "UL", "SL", "FL", "FD") else "LO"
            elem = DataElement(tag, vr_use, raw if vr_use == "UN" else value)
            elem.VR = vr_use
            ds[tag] = elem
        else:
            ds[tag] = DataElement(tag, vr, value)
    ds.save_as(path, enforce_file_format=True)


def header_volume(files: list[Path]) -> tuple[np.ndarray, tuple[float, float, float]]:
    """HU volume (column, row, slice order) and voxel sizes computed from the headers alone."""
    dss = _sorted_by_position(files)
    pos = np.array([d.ImagePositionPatient for d in dss], float)
    dr, dc = (float(v) for v in dss[0].PixelSpacing)
    step = float(np.linalg.norm(pos[-1] - pos[0]) / (len(dss) - 1))
    vol = np.stack(
        [
            d.pixel_array.T.astype(np.float64) * float(d.get("RescaleSlope", 1) or 1) + float(d.get("RescaleIntercept", 0) or 0)
            for d in dss
        ],
        axis=2,
    )
    return vol, (dc, dr, step)


def header_image(files: list[Path]):
    """A NIfTI image (HU, RAS affine) built from the headers alone, to compare a conversion with."""
    import nibabel as nib

    dss = _sorted_by_position(files)
    iop = np.array(dss[0].ImageOrientationPatient, float)
    row, col = iop[:3], iop[3:]
    pos = np.array([d.ImagePositionPatient for d in dss], float)
    dr, dc = (float(v) for v in dss[0].PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = row * dc, col * dr
    lps[:3, 2] = (pos[-1] - pos[0]) / (len(dss) - 1)
    lps[:3, 3] = pos[0]
    vol, _ = header_volume(files)
    return nib.Nifti1Image(vol, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps)
