"""Property-based fuzzing of DICOM and NIfTI headers (issue 19): typed error or correct result.

DICOM: a crop of the real planning CT or T1 MR in tests/data (see realdicom.py) gets one to three
header elements set to hostile values (zero, negative, absurd, missing, not a number, a wrong VR)
in every file or in one file. ``convert_study`` must then either raise a ``VoxTellError``
(a status row) or write an image whose HU and geometry equal an independent computation
from the headers with pydicom (or, when it says it resampled non-uniform slices, values
within the headers' range). Any other exception, or a silently different volume, fails.

NIfTI: a small real CT volume gets one header field set to a hostile value. The shared
volume check (convert's view) and the predictor's preprocessing (segment's view) must
agree: both refuse with a typed error, or both accept, and an accepted image's facts equal
what nibabel reads from the header.

The default suite runs a fixed, bounded set of examples (``derandomize``); the slow suite
runs a longer one: ``pytest -m slow tests/test_fuzz_headers.py``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from voxtell.errors import VoxTellError
from voxtell.io.convert import convert_study

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realdicom import MIRP_MR_CROP, crop_series, header_image, set_element  # noqa: E402

QUICK = settings(max_examples=100, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=400, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))

#: Header elements that decide what the volume is, with their dictionary VR and multiplicity.
DICOM_TAGS = {
    "RescaleSlope": ("DS", 1), "RescaleIntercept": ("DS", 1), "PixelSpacing": ("DS", 2),
    "ImagePositionPatient": ("DS", 3), "ImageOrientationPatient": ("DS", 6), "SliceThickness": ("DS", 1),
    "Rows": ("US", 1), "Columns": ("US", 1), "BitsAllocated": ("US", 1), "BitsStored": ("US", 1),
    "HighBit": ("US", 1), "PixelRepresentation": ("US", 1), "SamplesPerPixel": ("US", 1),
    "NumberOfFrames": ("IS", 1), "InstanceNumber": ("IS", 1), "SeriesNumber": ("IS", 1),
    "GantryDetectorTilt": ("DS", 1), "SeriesInstanceUID": ("UI", 1), "StudyInstanceUID": ("UI", 1),
    "FrameOfReferenceUID": ("UI", 1), "Modality": ("CS", 1), "SOPClassUID": ("UI", 1),
    "PhotometricInterpretation": ("CS", 1), "ImageType": ("CS", 3), "PatientID": ("LO", 1),
    "AcquisitionTime": ("TM", 1),
}
HOSTILE_TEXT = ["0", "-1", "-0.5", "1e6", "-1e6", "1e30", "NaN", "inf", "abc", "", " 1 ", "1\\2", "\x00", "9" * 40]
HOSTILE_INTS = [0, 1, 2, 3, 7, 8, 12, 15, 32, 64, 255, 4096, 65535]


@st.composite
def dicom_mutations(draw):
    keyword = draw(st.sampled_from(sorted(DICOM_TAGS)))
    vr, count = DICOM_TAGS[keyword]
    kind = draw(st.sampled_from(["value", "missing", "wrong_vr"]))
    if kind == "missing":
        value, use_vr = None, None
    elif kind == "wrong_vr":
        value = draw(st.sampled_from([b"\x01\x02\x03\x04", b"\xff" * 8, b"12", b"\x00"]))
        use_vr = "OB"
    elif vr == "US":
        value, use_vr = draw(st.sampled_from(HOSTILE_INTS)), "US"
    else:
        text = draw(st.sampled_from(HOSTILE_TEXT))
        if count > 1 and draw(st.booleans()):
            value = [text] * count
        else:
            value = text
        use_vr = vr if vr in ("DS", "IS", "CS", "LO", "TM") else "LO"
    where = draw(st.sampled_from(["all", "one"]))
    return keyword, value, use_vr, kind == "wrong_vr", where


@pytest.fixture(scope="module")
def real_crop(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "crop"


def _check_dicom_mutation(template: Path, mutations) -> None:
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        study = work / "study"
        shutil.copytree(template, study)
        files = sorted(study.glob("*.dcm"))
        try:
            for keyword, value, vr, explicit, where in mutations:
                for f in files if where == "all" else files[6:7]:
                    set_element(f, keyword, value, vr, explicit)
        except Exception:  # pydicom cannot write this value at all: not a file anyone can meet
            assume(False)
        try:
            result = convert_study(study, work / "out")
        except VoxTellError as exc:
            event(f"typed error: {type(exc).__name__}")
            return  # typed: becomes a status row
        event("converted" + (" with warnings" if result.warnings else ""))
        _assert_matches_headers(result, study)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _assert_matches_headers(result, study: Path) -> None:
    """The converted volume equals what pydicom and numpy compute from the chosen files' headers."""
    import pydicom

    chosen = []
    for f in sorted(study.glob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        uid = ds.get("SeriesInstanceUID", "") or ""
        uid = "\\".join(map(str, uid)) if isinstance(uid, (list, pydicom.multival.MultiValue)) else str(uid)
        if uid.strip() == result.series_uid or not result.series_uid:
            chosen.append(f)
    got = nib.as_closest_canonical(nib.load(result.image_path))
    data = got.get_fdata()
    try:
        truth_img = header_image(chosen)
        truth = nib.as_closest_canonical(truth_img)
    except Exception as exc:  # the headers cannot be read independently: convert must have refused
        raise AssertionError(f"convert accepted headers that pydicom cannot compute a volume from: {exc!r}") from exc
    want = truth.get_fdata()
    assert np.isfinite(data).all()
    if any("resampled" in w or "dcm2niix output" in w for w in result.warnings):
        # Non-uniform slices were resampled (and said so): values stay within the source range.
        assert want.min() - 1 <= data.min() and data.max() <= want.max() + 1
        return
    assert data.shape == want.shape, (data.shape, want.shape)
    np.testing.assert_allclose(got.affine, truth.affine, atol=1e-2)
    np.testing.assert_allclose(data, want, atol=0.5)


def _template(real_crop: Path, which: str) -> Path:
    if which == "MR":
        return MIRP_MR_CROP
    if not real_crop.exists():
        crop_series(real_crop)
    return real_crop


@QUICK
@given(which=st.sampled_from(["CT", "MR"]), mutations=st.lists(dicom_mutations(), min_size=1, max_size=3))
def test_fuzz_dicom_headers_typed_error_or_correct_result(real_crop: Path, which: str, mutations) -> None:
    _check_dicom_mutation(_template(real_crop, which), mutations)


@pytest.mark.slow
@LONG
@given(which=st.sampled_from(["CT", "MR"]), mutations=st.lists(dicom_mutations(), min_size=1, max_size=3))
def test_fuzz_dicom_headers_long(real_crop: Path, which: str, mutations) -> None:
    _check_dicom_mutation(_template(real_crop, which), mutations)


# ----------------------------------------------------------------------------- NIfTI
NIFTI_FIELDS = {
    "dim": 8, "pixdim": 8, "datatype": 1, "bitpix": 1, "vox_offset": 1, "scl_slope": 1, "scl_inter": 1,
    "sform_code": 1, "qform_code": 1, "srow_x": 4, "srow_y": 4, "srow_z": 4, "quatern_b": 1, "quatern_c": 1,
    "quatern_d": 1, "qoffset_x": 1, "sizeof_hdr": 1, "magic": 1,
}
HOSTILE_NUMBERS = [0, -1, -3, 1, 2, 3, 4, 5, 16, 352, 1e6, -1e6, 1e30, float("nan"), float("inf"), 32767, -32768]


@st.composite
def nifti_mutations(draw):
    field = draw(st.sampled_from(sorted(NIFTI_FIELDS)))
    index = draw(st.integers(0, NIFTI_FIELDS[field] - 1))
    value = draw(st.sampled_from([b"xx1\x00", b"n+1\x00", b"ni1\x00"] if field == "magic" else HOSTILE_NUMBERS))
    gz = draw(st.booleans())
    return field, index, value, gz


@pytest.fixture(scope="module")
def small_ct(totalseg_dir: Path) -> nib.Nifti1Image:
    img = nib.load(totalseg_dir / "example_ct_sm.nii.gz")
    data = np.asanyarray(img.dataobj)[30:70, 30:70, 5:20]
    return nib.Nifti1Image(data, img.affine, img.header)


def _mutated_nifti(img: nib.Nifti1Image, path: Path, field: str, index: int, value) -> bool:
    raw = bytearray(img.header.binaryblock)
    hdr = nib.Nifti1Header(bytes(raw))
    try:
        arr = hdr[field].copy()
        if arr.shape == ():
            arr = np.array(value, dtype=arr.dtype) if field != "magic" else np.array(value, dtype=arr.dtype)
        else:
            arr[index] = value
        with np.errstate(all="ignore"):
            hdr[field] = arr
    except (ValueError, OverflowError, TypeError):
        return False
    block = hdr.binaryblock
    data = np.asanyarray(img.dataobj).astype(img.get_data_dtype())
    payload = block + b"\x00" * 4 + data.tobytes(order="F")
    if path.name.endswith(".gz"):
        import gzip

        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return True


def _check_nifti_mutation(img: nib.Nifti1Image, mutation) -> None:
    from voxtell.inference.preprocessing import preprocess
    from voxtell.io.volume import check_image_file

    field, index, value, gz = mutation
    work = Path(tempfile.mkdtemp(prefix="fuzz-nii-"))
    try:
        path = work / ("img.nii.gz" if gz else "img.nii")
        if not _mutated_nifti(img, path, field, index, value):
            assume(False)
        outcomes = []
        facts = None
        try:
            facts = check_image_file(path)
            outcomes.append("ok")
        except VoxTellError as exc:
            outcomes.append(type(exc).__name__)
        try:
            preprocess(path, (8, 8, 8))
            outcomes.append("ok")
        except VoxTellError as exc:
            outcomes.append(type(exc).__name__)
        # One rule: an image that passes convert's check passes segment's, and the reverse.
        assert (outcomes[0] == "ok") == (outcomes[1] == "ok"), outcomes
        if facts is not None:
            from voxtell.stats.study import load_volume

            assert load_volume(path).array.shape == facts.shape  # and stats reads it too
            ref = nib.load(str(path))  # nibabel's own reading of the header, not voxtell's
            shape = tuple(int(s) for s in ref.shape)
            while len(shape) > 3 and shape[-1] == 1:
                shape = shape[:-1]
            assert facts.shape == shape
            np.testing.assert_allclose(facts.spacing_mm, np.linalg.norm(ref.affine[:3, :3], axis=0), rtol=1e-6)
            values = np.asanyarray(ref.dataobj)
            assert np.isfinite(values).all()
            np.testing.assert_allclose(facts.value_range, (values.min(), values.max()), rtol=1e-5, atol=1e-3)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@QUICK
@given(mutation=nifti_mutations())
def test_fuzz_nifti_headers_convert_and_segment_agree(small_ct, mutation) -> None:
    _check_nifti_mutation(small_ct, mutation)


@pytest.mark.slow
@LONG
@given(mutation=nifti_mutations())
def test_fuzz_nifti_headers_long(small_ct, mutation) -> None:
    _check_nifti_mutation(small_ct, mutation)
