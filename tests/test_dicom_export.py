"""DICOM SEG and RTSTRUCT export of a real planning CT (MIRP STS_001), read back three ways.

The masks are the clinical GTV (from the curated NIfTI mask), the GTV with a hole punched
through it, two separate boxes and an empty mask. The exported objects are checked by the
DICOM validator dciodvfy (dicom3tools), read back by highdicom (SEG, voxel for voxel), by
the project's RTSTRUCT reader and by an independent rasterisation of the raw contour data
with matplotlib.path in each referenced slice's own pixel geometry (no rt-utils or
dicompyler-core in the environment), and their references are compared with the source.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from voxtell.cli import main
from voxtell.io.convert import convert_study
from voxtell.io.dicom_export import DicomExportError, export_study
from voxtell.io.dicom_ref import DICOM_REF_NAME, read_source_series, reorient_to_grid, write_dicom_reference
from voxtell.io.rtstruct import rasterise_rtstruct
from voxtell.prompts import prompt_id

DATA = Path(__file__).parent / "data"
CT = DATA / "mirp_sts_001" / "CT"
SOURCE = CT / "dicom" / "image"
PROMPTS = ("GTV mass", "GTV with a hole", "two boxes", "Lèvre: nothing here")


def _masks(image: nib.Nifti1Image) -> dict[str, np.ndarray]:
    curated = nib.load(CT / "nifti" / "mask" / "mask.nii.gz")
    gtv = reorient_to_grid(np.asanyarray(curated.dataobj) > 0, curated.affine, image.affine, image.shape)
    holey = gtv.copy()
    c = np.round(np.array(np.nonzero(gtv)).mean(axis=1)).astype(int)
    holey[c[0] - 3 : c[0] + 3, c[1] - 3 : c[1] + 3, :] = False
    two = np.zeros_like(gtv)
    two[10:20, 10:20, 5:15] = True
    two[40:50, 30:45, 20:30] = True
    two[30:33, 30:33, 20] = True  # touches nothing, one slice only
    return dict(zip(PROMPTS, (gtv, holey, two, np.zeros_like(gtv))))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    work = tmp_path_factory.mktemp("export")
    conv = convert_study(SOURCE, work / "convert")
    write_dicom_reference(SOURCE, work / "convert")
    image = nib.load(conv.image_path)
    masks = _masks(image)
    mask_dir = work / "segment"
    mask_dir.mkdir()
    entries = []
    for text, mask in masks.items():
        pid = prompt_id(text)
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), image.affine), mask_dir / f"{pid}.nii.gz")
        entries.append({"prompt_id": pid, "prompt": text, "file": f"{pid}.nii.gz", "source": "config"})
    manifest = {
        "study_id": "sts001",
        "image": str(conv.image_path),
        "model": {"model_id": "voxtell-demo-tiny", "sha256": "0123456789abcdef" * 4},
        "prompts": entries,
    }
    (mask_dir / "manifest.json").write_text(json.dumps(manifest))
    assert main(["export-dicom", str(mask_dir), "--dicom", str(SOURCE), "-o", str(work / "out")]) == 0
    return work, conv, image, masks


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 if not a.any() and not b.any() else 2 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) is not installed")
@pytest.mark.parametrize("name", ["seg.dcm", "rtstruct.dcm"])
def test_dciodvfy_reports_no_errors(exported, name: str) -> None:
    work = exported[0]
    proc = subprocess.run(["dciodvfy", str(work / "out" / name)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    assert errors == [], "\n".join(lines)
    assert any(line.strip() in ("Segmentation", "RTStructureSet") for line in lines)  # it knew the IOD


def test_seg_reads_back_voxel_for_voxel(exported) -> None:
    import highdicom as hd

    work, _, image, masks = exported
    source = read_source_series(SOURCE, json.loads((work / "convert" / "series.json").read_text())["series_uid"])
    seg = hd.seg.segread(work / "out" / "seg.dcm")
    assert seg.SegmentationType == "BINARY" and seg.FrameOfReferenceUID == source.frame_of_reference_uid
    assert seg.StudyInstanceUID == source.study_instance_uid
    refs = [i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence]
    assert sorted(refs) == sorted(source.sop_instance_uids)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.series_instance_uid
    labels = [(s.SegmentNumber, s.SegmentLabel, s.SegmentDescription) for s in seg.SegmentSequence]
    assert labels == [(n, prompt_id(t), t) for n, t in enumerate(PROMPTS, start=1)]
    algo = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "voxtell-demo-tiny" and algo.AlgorithmVersion == "0123456789abcdef" * 4
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(source.sop_instance_uids), segment_numbers=[1, 2, 3, 4],
        combine_segments=False, skip_overlap_checks=True,
    )  # (slices, rows, columns, segments) in the source order
    for n, text in enumerate(PROMPTS):
        on_dicom = reorient_to_grid(masks[text], image.affine, source.affine_ras, source.shape)
        np.testing.assert_array_equal(pixels[..., n].astype(bool), np.transpose(on_dicom, (2, 1, 0)), err_msg=text)


def test_rtstruct_reads_back_with_our_reader(exported) -> None:
    work, conv, image, masks = exported
    rois = rasterise_rtstruct(work / "out" / "rtstruct.dcm", conv.image_path, work / "rois")
    assert [r.name for r in rois] == [prompt_id(t) for t in PROMPTS]
    for roi, text in zip(rois, PROMPTS):
        got = np.asanyarray(nib.load(work / "rois" / roi.file).dataobj) > 0
        assert _dice(got, masks[text]) >= 0.98, text
        assert roi.voxel_count == int(masks[text].sum())  # voxel-border contours: exact
    report = json.loads((work / "rois" / "rois.json").read_text())
    assert report["reference_check"] in ("frame_match", "series_match") and report["warnings"] == []


def _independent_rasterisation(rs_path: Path) -> dict[str, dict[str, np.ndarray]]:
    """ROI name -> {SOP instance UID: (rows, columns) mask}, from raw ContourData and each slice's own header."""
    from matplotlib.path import Path as MplPath

    headers = {}
    for f in SOURCE.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        headers[ds.SOPInstanceUID] = ds
    rs = pydicom.dcmread(rs_path)
    names = {r.ROINumber: r.ROIName for r in rs.StructureSetROISequence}
    out: dict[str, dict[str, np.ndarray]] = {}
    for rc in rs.ROIContourSequence:
        planes: dict[str, np.ndarray] = {}
        for c in rc.get("ContourSequence", []):
            sop = c.ContourImageSequence[0].ReferencedSOPInstanceUID
            h = headers[sop]
            origin = np.array(h.ImagePositionPatient, float)
            row_dir, col_dir = np.array(h.ImageOrientationPatient[:3], float), np.array(h.ImageOrientationPatient[3:], float)
            dr, dc = (float(v) for v in h.PixelSpacing)  # row spacing, column spacing
            pts = np.array(c.ContourData, float).reshape(-1, 3) - origin
            assert np.abs(pts @ np.cross(row_dir, col_dir)).max() < 1e-3  # in the referenced slice's plane
            col, row = pts @ row_dir / dc, pts @ col_dir / dr
            rr, cc = np.mgrid[: h.Rows, : h.Columns]
            inside = MplPath(np.c_[col, row]).contains_points(np.c_[cc.ravel(), rr.ravel()]).reshape(h.Rows, h.Columns)
            planes[sop] = planes.get(sop, np.zeros_like(inside)) ^ inside
        out[names[rc.ReferencedROINumber]] = planes
    return out


def test_rtstruct_independent_rasterisation_and_references(exported) -> None:
    work, _, image, masks = exported
    source = read_source_series(SOURCE, json.loads((work / "convert" / "series.json").read_text())["series_uid"])
    planes = _independent_rasterisation(work / "out" / "rtstruct.dcm")
    for text in PROMPTS:
        on_dicom = reorient_to_grid(masks[text], image.affine, source.affine_ras, source.shape)
        got = np.zeros(on_dicom.shape[::-1], bool)  # (slices, rows, columns)
        for sop, plane in planes[prompt_id(text)].items():
            got[source.sop_instance_uids.index(sop)] = plane
        assert _dice(got, np.transpose(on_dicom, (2, 1, 0))) >= 0.98, text
    rs = pydicom.dcmread(work / "out" / "rtstruct.dcm")
    frame = rs.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == source.frame_of_reference_uid == rs.FrameOfReferenceUID
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == source.series_instance_uid
    assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == list(source.sop_instance_uids)
    assert rs.StudyInstanceUID == source.study_instance_uid and rs.PatientID == "STS_001"
    # holes and components: the holed GTV has hole contours on the slices the hole crosses
    holey = rs.ROIContourSequence[1].ContourSequence
    gtv = rs.ROIContourSequence[0].ContourSequence
    assert len(holey) > len(gtv)
    assert "ContourSequence" not in rs.ROIContourSequence[3]  # the empty mask: an ROI without contours
    assert rs.StructureSetROISequence[3].ROIDescription == "Lèvre: nothing here"


def test_dicom_ref_record_holds_uids_only(exported) -> None:
    work = exported[0]
    record = json.loads((work / "convert" / DICOM_REF_NAME).read_text())
    assert set(record) == {
        "schema_version", "study_instance_uid", "series_instance_uid", "frame_of_reference_uid", "sop_class_uid",
        "sop_instance_uids", "slice_order", "affine_ras", "shape",
    }
    assert len(record["sop_instance_uids"]) == 59 and record["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.2"
    text = (work / "convert" / DICOM_REF_NAME).read_text()
    for identifier in ("STS_001", "20000907", "1764353264683505", "IBSI"):
        assert identifier not in text
    # slice order follows the slice normal: positions increase along it
    zs = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in sorted(SOURCE.iterdir())]
    by_uid = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: z for f, z in zip(sorted(SOURCE.iterdir()), zs)}
    ordered = [by_uid[u] for u in record["sop_instance_uids"]]
    assert ordered == sorted(ordered)


def test_export_refuses_a_changed_source(exported, tmp_path: Path) -> None:
    """One slice removed from the source after conversion: the record no longer matches."""
    work = exported[0]
    changed = tmp_path / "src"
    shutil.copytree(SOURCE, changed)
    sorted(changed.iterdir())[-1].unlink()
    with pytest.raises(DicomExportError, match="no longer holds the instances"):
        export_study(work / "segment", changed, tmp_path / "out")
    assert main(["export-dicom", str(work / "segment"), "--dicom", str(changed), "-o", str(tmp_path / "o")]) == 1


def test_export_refuses_odd_masks(exported, tmp_path: Path) -> None:
    work, conv, image, _ = exported
    seg = tmp_path / "seg"
    shutil.copytree(work / "segment", seg)
    manifest = json.loads((seg / "manifest.json").read_text())
    first = seg / manifest["prompts"][0]["file"]
    data = np.asanyarray(nib.load(first).dataobj).astype(np.uint8)
    nib.save(nib.Nifti1Image(data * 3, image.affine), first)  # a label map, not a binary mask
    with pytest.raises(DicomExportError, match="not a binary"):
        export_study(seg, SOURCE, tmp_path / "out")
    shifted = image.affine.copy()
    shifted[:3, 3] += 0.4 * image.affine[:3, 0]  # 0.4 voxel off: would need resampling
    nib.save(nib.Nifti1Image(data, shifted), first)
    with pytest.raises(DicomExportError, match="shifted"):
        export_study(seg, SOURCE, tmp_path / "out")
    assert not (tmp_path / "out" / "seg.dcm").exists()


def test_export_refuses_a_source_without_uids(tmp_path: Path) -> None:
    """The TotalSegmentator CT has blank Study/Series/Frame UIDs: nothing a derived object could reference."""
    src = DATA / "totalsegmentator" / "example_ct_dicom"
    convert_study(src, tmp_path / "conv")
    with pytest.raises(Exception) as info:
        write_dicom_reference(src, tmp_path / "conv")
    assert "UID" in str(info.value) and type(info.value).__name__ == "DicomReferenceError"
