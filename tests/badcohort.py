"""A cohort that mixes good studies with the bad inputs a nightly run meets (issue 10).

`build_bad_cohort(root)` writes synthetic DICOM (through the project's own DICOM writer,
with the fake patient identifiers of ``FAKE_PATIENT`` in every header), NIfTI files and
reports under ``root`` plus a ``samples.tsv``, and returns one `Case` per study: what is
wrong with it and what the user must see (the stage whose status row names the problem,
and words that row's message must contain). Good studies expect rows in the cohort table.

Every input is small (48 x 40 x 12 voxels) so that a tiny model segments a good study in
seconds; the JPEG 2000 study is written by the same writer and compressed losslessly (the real
JPEG 2000 CT of tests/data is 512 x 512 and would cost minutes of CPU segmentation; the
conversion tests cover it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SHAPE = (48, 40, 12)  # i, j, k: 12 slices, above the default convert.min_slices of 10
SPACING = (1.5, 1.5, 3.0)

#: Words (lower case) of prompts planted in reports; prompts are data, never paths.
HOSTILE_SENTENCE = (
    "There is a 2 cm lesion in the liver ../../../../tmp/voxtell-escape/x; rm -rf ~ $(touch /tmp/voxtell-pwned) "
    "`id` | tee /etc/voxtell \x00 & echo."
)


@dataclass(frozen=True)
class Case:
    """One study of the battery and what the user must see for it."""

    study_id: str
    kind: str
    #: True: the study gets stats rows. False: it gets none.
    rows: bool
    #: (stage, words) for the failed status row that must name the problem (any one of the
    #: words, case-insensitive); None where no stage fails.
    status: tuple[str, tuple[str, ...]] | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)


def _phantom(seed: int = 0) -> np.ndarray:
    """A body-like CT volume in HU: air outside, soft tissue inside, a brighter 'organ'."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
    vol = np.full(SHAPE, -1000.0)
    body = (i / 0.9) ** 2 + (j / 0.8) ** 2 < 1
    vol[body] = 40.0
    vol[((i - 0.3) / 0.3) ** 2 + (j / 0.3) ** 2 + (k / 0.8) ** 2 < 1] = 120.0
    return vol + rng.normal(0, 5, SHAPE).round()


def _series(out: Path, seed: int = 0, **kwargs):
    from voxtell.io.dicom_write import write_dicom_series

    return write_dicom_series(_phantom(seed), SPACING, out, **kwargs)


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def _nifti_raw_sform(path: Path, data: np.ndarray, sform: np.ndarray) -> None:
    """A NIfTI whose sform is stored as given (nibabel refuses to decompose a singular affine)."""
    import nibabel as nib

    img = nib.Nifti1Image(data, None)
    img.header.set_sform(sform, code=1)
    img.header.set_qform(None, code=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _report(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


GOOD_REPORT = "FINDINGS: There is a 2 cm hypodense lesion in the liver. The spleen is normal.\n"


def build_bad_cohort(root: str | os.PathLike) -> tuple[Path, list[Case]]:
    """Write the battery under ``root``; returns (samples.tsv, cases)."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    from voxtell.io.dicom_write import write_text_sr

    root = Path(root)
    dcm, nii, rep = root / "dicom", root / "nifti", root / "reports"
    rows: list[tuple[str, str, str, str]] = []  # study_id, dicom, image, report
    cases: list[Case] = []

    def add(case: Case, dicom: Path | str = "", image: Path | str = "", report: Path | str = "") -> None:
        cases.append(case)
        rows.append((case.study_id, str(dicom), str(image), str(report)))

    affine = np.diag([*SPACING, 1.0])

    # ---- good studies
    _series(dcm / "good-dicom", seed=1)
    add(Case("good-dicom", "good synthetic CT series (uncompressed)", True),
        dcm / "good-dicom", report=_report(rep / "good-dicom.txt", GOOD_REPORT))
    s = _series(dcm / "good-jpeg2000", seed=2)
    for f in s.files:  # JPEG 2000 lossless, as PACS exports often are
        ds = pydicom.dcmread(f)
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
        ds.save_as(f, enforce_file_format=True)
    add(Case("good-jpeg2000", "good JPEG 2000 (lossless) CT series", True), dcm / "good-jpeg2000")
    _nifti(nii / "good-nifti.nii.gz", _phantom(2).astype(np.int16), affine)
    add(Case("good-nifti", "good 3-D NIfTI", True), image=nii / "good-nifti.nii.gz",
        report=_report(rep / "good-nifti.txt", GOOD_REPORT))

    # ---- DICOM faults
    s = _series(dcm / "truncated", seed=3)
    for f in s.files:  # every file cut inside its pixel data
        data = f.read_bytes()
        f.write_bytes(data[: len(data) - 1000])
    add(Case("dicom-truncated", "truncated DICOM files (pixel data cut short)", False,
             ("convert", ("large enough", "truncat", "corrupt", "cannot be parsed"))), dcm / "truncated")

    s = _series(dcm / "no-pixels", seed=4)
    for f in s.files:
        ds = pydicom.dcmread(f)
        del ds.PixelData
        ds.save_as(f, enforce_file_format=True)
    add(Case("dicom-no-pixels", "DICOM image files without pixel data", False,
             ("convert", ("pixel", "cannot be parsed"))), dcm / "no-pixels")

    s = _series(dcm / "missing-slice", seed=5)
    s.files[len(s.files) // 2].unlink()
    add(Case("dicom-missing-slice", "series with a missing slice in the middle", False,
             ("convert", ("missing slice",))), dcm / "missing-slice")

    s = _series(dcm / "mixed-orientation", seed=6)
    for f in s.files[::2]:  # every other slice claims a sagittal orientation
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]
        ds.save_as(f, enforce_file_format=True)
    add(Case("dicom-mixed-orientation", "one series whose slices disagree on orientation", False,
             ("convert", ("orientation",))), dcm / "mixed-orientation")

    s = _series(dcm / "blank-uids", seed=7)
    for f in s.files:
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = ""
        ds.StudyInstanceUID = ""
        ds.save_as(f, enforce_file_format=True)
    add(Case("dicom-blank-uids", "blank Study/Series Instance UIDs", True, None,
             notes="converted; series.json records series_uid_inferred: true"), dcm / "blank-uids")

    write_text_sr(dcm / "only-sr" / "sr.dcm", "Dose report: CTDIvol 10 mGy")
    add(Case("dicom-only-sr", "study with only a structured report (SR)", False,
             ("convert", ("no dicom image series", "sr"))), dcm / "only-sr")

    s = _series(dcm / "too-few-slices", seed=8)
    for f in s.files[3:]:
        f.unlink()
    add(Case("dicom-too-few-slices", "series of 3 slices (localizer-like)", False,
             ("convert", ("min_slices",))), dcm / "too-few-slices")

    junk = dcm / "not-dicom"
    junk.mkdir(parents=True)
    (junk / "IM0001.dcm").write_bytes(b"\x00" * 128 + b"NOPE" + os.urandom(2000))
    (junk / "readme.txt").write_text("export log\n")
    add(Case("dicom-garbage", "folder of files that are not DICOM", False,
             ("convert", ("no dicom", "non-dicom"))), junk)

    (dcm / "empty").mkdir(parents=True)
    add(Case("dicom-empty-folder", "empty DICOM folder", False, ("convert", ("empty",))), dcm / "empty")

    add(Case("dicom-missing-folder", "DICOM folder that does not exist", False,
             ("convert", ("does not exist",))), dcm / "does-not-exist")

    # ---- DICOM faults of issue 19 (odd archives)
    s = _series(dcm / "two-patients" / "a", seed=20, series_description="Planning CT")
    _series(dcm / "two-patients" / "b", seed=21, study_uid=s.study_uid, series_number=2,
            series_description="Other CT", patient={"PatientName": "Otherperson^Ann", "PatientID": "OTHER-77"})
    add(Case("dicom-two-patients", "two patients' CT series in one study folder", False,
             ("convert", ("2 different patients",))), dcm / "two-patients")

    _series(dcm / "slope-zero", seed=22, tags={"RescaleSlope": "0"})  # stored values written with slope 1
    add(Case("dicom-slope-zero", "CT with RescaleSlope 0 (HU would all equal the intercept)", False,
             ("convert", ("rescaleslope is 0",))), dcm / "slope-zero")

    s = _series(dcm / "unreadable-slice", seed=23)
    data = bytearray(s.files[6].read_bytes())
    data[200:700] = b"\xff" * 500  # DICM magic kept, header destroyed: not a "missing slice"
    s.files[6].write_bytes(bytes(data))
    add(Case("dicom-unreadable-slice", "one slice file that cannot be parsed", False,
             ("convert", ("cannot be read or parsed",))), dcm / "unreadable-slice")

    s = _series(dcm / "multi-frame-src", seed=24)
    ds = pydicom.dcmread(s.files[0])
    frames = [pydicom.dcmread(f).PixelData for f in s.files]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT
    ds.NumberOfFrames = len(frames)
    ds.PixelData = b"".join(frames)
    (dcm / "multi-frame").mkdir(parents=True)
    ds.save_as(dcm / "multi-frame" / "enhanced.dcm", enforce_file_format=True)
    add(Case("dicom-multi-frame", "enhanced multi-frame CT (one file, 12 frames)", False,
             ("convert", ("multi-frame",))), dcm / "multi-frame")

    s = _series(dcm / "odd-entries", seed=25)
    os.mkfifo(dcm / "odd-entries" / "pipe.dcm")  # opening it would block forever
    (dcm / "odd-entries" / "loop").symlink_to(dcm / "odd-entries", target_is_directory=True)
    add(Case("dicom-fifo-and-link-loop", "good series beside a fifo and a link loop", True, None,
             notes="converted; the fifo and the loop are skipped with warnings in series.json"), dcm / "odd-entries")

    s = _series(dcm / "series-tie" / "soft", seed=26, series_number=3, series_description="Soft tissue")
    _series(dcm / "series-tie" / "lung", seed=27, study_uid=s.study_uid, frame_of_reference_uid=s.frame_of_reference_uid,
            series_number=4, series_description="Lung kernel")
    add(Case("dicom-series-tie", "two CT series with the same slices and spacing", True, None,
             notes="series 3 chosen (lower series number), warning names both"), dcm / "series-tie")

    # ---- NIfTI faults
    vol = _phantom(9).astype(np.float32)
    vol[10:20, 10:20, 4:8] = np.nan
    _nifti(nii / "nan.nii.gz", vol, affine)
    add(Case("nifti-nan", "NIfTI with NaN voxels", False, ("convert", ("nan",))), image=nii / "nan.nii.gz")

    _nifti(nii / "four-d.nii.gz", np.stack([_phantom(10)] * 3, axis=-1).astype(np.int16), affine)
    add(Case("nifti-4d", "4-D NIfTI (3 volumes)", False, ("convert", ("3-d", "4-d"))),
        image=nii / "four-d.nii.gz")

    singular = affine.copy()
    singular[2, 2] = 0.0
    _nifti_raw_sform(nii / "zero-det.nii.gz", _phantom(11).astype(np.int16), singular)
    add(Case("nifti-zero-det", "NIfTI with a zero-determinant affine", False, ("convert", ("affine",))),
        image=nii / "zero-det.nii.gz")

    (nii / "garbage.nii.gz").write_bytes(os.urandom(4096))
    add(Case("nifti-garbage", "'.nii.gz' file that is random bytes", False, ("convert", ("nifti",))),
        image=nii / "garbage.nii.gz")

    _nifti(nii / "constant.nii.gz", np.zeros(SHAPE, np.int16), affine)
    add(Case("nifti-all-zero", "NIfTI whose voxels are all zero (nothing to crop to)", False,
             ("convert", ("zero",))), image=nii / "constant.nii.gz")

    # ---- report faults (images are good: the study is still segmented with the fixed prompts)
    def good_image(name: str, seed: int) -> Path:
        path = nii / f"{name}.nii.gz"
        _nifti(path, _phantom(seed).astype(np.int16), affine)
        return path

    add(Case("report-empty", "empty report", True, ("findings", ("empty",))),
        image=good_image("report-empty", 12), report=_report(rep / "empty.txt", ""))
    add(Case("report-latin1", "report that is not UTF-8 (Latin-1 bytes)", True, None,
             notes="decoded as Latin-1 with a warning in the findings log", extra={"log": "not valid UTF-8"}),
        image=good_image("report-latin1", 13),
        report=_report(rep / "latin1.txt", "FINDINGS: Läsion in der Leber, 2 cm. Mass in the liver.\n".encode("latin-1")))
    add(Case("report-utf16-nobom", "report in UTF-16-LE without a byte-order mark", True, None,
             notes="the encoding is recognised by its NUL pattern; findings as for UTF-8"),
        image=good_image("report-utf16", 18),
        report=_report(rep / "utf16.txt", "FINDINGS: There is a 2 cm mass in the liver.\n".encode("utf-16-le")))
    add(Case("report-binary", "binary file (a PDF) given as the report", True, ("findings", ("binary", "not text"))),
        image=good_image("report-binary", 19), report=_report(rep / "scan.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(range(256))))
    big = ("FINDINGS: " + "The liver shows a small cyst. " * 360_000)[:10_000_000]
    add(Case("report-10mb", "10 MB report", True, None,
             notes="only the first findings.max_chars characters are analysed (warning in the log)",
             extra={"log": "only the first 200000"}),
        image=good_image("report-10mb", 14), report=_report(rep / "big.txt", big))
    add(Case("report-missing", "report file that does not exist", True, ("findings", ("cannot read report", "no such file"))),
        image=good_image("report-missing", 15), report=rep / "does-not-exist.txt")
    long_sentence = "IMPRESSION: Mass in the right kidney " + "with extension " * 130 + "into the renal vein.\n"
    add(Case("prompt-2000-chars", "finding sentence (prompt) of ~2,000 characters", True, None,
             notes="segmented like any prompt; the mask file is named by prompt_id"),
        image=good_image("prompt-long", 16), report=_report(rep / "long.txt", long_sentence))
    add(Case("prompt-hostile", "prompt with path separators, shell metacharacters and NUL", True, None,
             notes="a prompt is data: masks named by prompt_id, nothing written outside results/"),
        image=good_image("prompt-hostile", 17), report=_report(rep / "hostile.txt", "FINDINGS: " + HOSTILE_SENTENCE + "\n"))

    lines = ["study_id\tdicom\timage\treport"] + ["\t".join(r) for r in rows]
    samples = root / "samples.tsv"
    samples.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return samples, cases


# ----------------------------------------------------------------------------- running it
@dataclass(frozen=True)
class BatteryRun:
    """One workflow run over the battery: where, what Snakemake said, what it created."""

    work: Path
    cases: tuple[Case, ...]
    returncode: int
    output: str
    #: Paths (relative to ``work``) that exist after the run but did not before it.
    created_outside: tuple[str, ...]


FIXED_PROMPTS = ["liver", "spleen"]
_RUNS: dict[str, BatteryRun] = {}


def battery_config(model_dir: Path) -> dict:
    from test_workflow_support import ENCODER

    return {
        "samples": "inputs/samples.tsv",
        "demo": {"enabled": False, "train": {"enabled": False}},
        "model": {"dir": str(model_dir)},
        "text_encoder": {"id": ENCODER},
        "embeddings": {"bank": "resources/embeddings/bank.npz"},
        "prompts": {"fixed": FIXED_PROMPTS},
        "segment": {"n_shards": 2, "device": "cpu"},
    }


def run_battery(work: Path, timeout_s: float = 1500) -> BatteryRun:
    """Build the battery in ``work`` and run the whole workflow on it once per process."""
    import subprocess
    import sys

    import yaml
    from test_workflow_support import SNAKEFILE, make_random_model

    key = str(work)
    if key in _RUNS:
        return _RUNS[key]
    work.mkdir(parents=True, exist_ok=True)
    _, cases = build_bad_cohort(work / "inputs")
    make_random_model(work / "model", "tiny")
    (work / "config").mkdir(exist_ok=True)
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(battery_config(work / "model")), encoding="utf-8")
    before = {str(p.relative_to(work)) for p in work.rglob("*")}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(work), "--cores", "2", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    after = {str(p.relative_to(work)) for p in work.rglob("*")}
    run = BatteryRun(work, tuple(cases), proc.returncode, proc.stdout + proc.stderr, tuple(sorted(after - before)))
    _RUNS[key] = run
    return run
