"""Visual QC: study PNG with outlines at the right place, offline cohort HTML."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest

from voxtell.cli import main
from voxtell.prompts import prompt_id
from voxtell.stats.parquet import aggregate, write_stats_parquet
from voxtell.stats.qc import MASK_RGB, _to_ras, _view, display_window, render_study_qc
from voxtell.stats.qc_report import write_cohort_html
from voxtell.stats.status import status_row, write_status
from voxtell.stats.study import compute_study_stats


def make_study(folder: Path, affine, masks: dict[str, np.ndarray], study_id: str) -> Path:
    folder.mkdir(parents=True)
    prompts = []
    for name, arr in masks.items():
        pid = prompt_id(name)
        nib.save(nib.Nifti1Image(arr.astype(np.uint8), affine), folder / f"{pid}.nii.gz")
        prompts.append({"prompt_id": pid, "prompt": name, "file": f"{pid}.nii.gz"})
    (folder / "manifest.json").write_text(json.dumps({"study_id": study_id, "prompts": prompts}))
    return folder


@pytest.fixture(scope="module")
def organ_study(tmp_path_factory, totalseg_dir):
    root = tmp_path_factory.mktemp("qc")
    seg = nib.load(totalseg_dir / "example_seg.nii.gz")
    lab = np.asanyarray(seg.dataobj)
    masks = make_study(root / "masks" / "s1", seg.affine,
                       {"liver": lab == 5, "spleen": lab == 1, "brain": np.zeros(lab.shape, bool)}, "s1")
    return root, totalseg_dir / "example_ct_sm.nii.gz", masks


def test_radiological_display_of_non_ras_image():
    """A voxel on the patient's right shows on the viewer's left, whatever the storage order."""
    vol = np.zeros((10, 8, 6))
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])  # LPS storage: index 0 runs towards the patient's left
    affine[:3, 3] = [9, 7, 0]
    vol[0, 2, 3] = 1  # RAS x = 9 - i: i = 0 is the patient's rightmost column
    vol[9, 2, 3] = 2  # and i = 9 the leftmost
    ras = _to_ras(vol, affine)
    axial = _view(ras, "axial", (0, 0, 3))
    assert axial.shape == (8, 10)
    (row, col), (_, col_left) = np.argwhere(axial == 1)[0], np.argwhere(axial == 2)[0]
    assert (col, col_left) == (0, 9)  # patient's right on the viewer's left
    assert row == 8 - 1 - (7 - 2)  # anterior up: RAS y = 7 - j = 5 for j = 2, shown in row 7 - 5


def test_study_png(organ_study, tmp_path):
    _, image, masks = organ_study
    out = render_study_qc(image, masks, tmp_path / "s1.png")
    png = mpimg.imread(out)
    assert png.ndim == 3 and png.shape[0] > png.shape[1] * 0.5  # three mask rows of three views
    panels = sorted(p.name for p in (tmp_path / "qc").glob("*.png"))
    assert panels == sorted(f"{prompt_id(n)}.png" for n in ("liver", "spleen", "brain"))
    yellow = (np.abs(png[..., :3] - np.array(MASK_RGB) / 255) < 0.02).all(-1)
    assert yellow.sum() > 200  # outlines of liver and spleen
    assert display_window(np.zeros((4, 4, 4)), "CT") == (-160.0, 240.0)
    lo, hi = display_window(np.random.default_rng(0).uniform(1, 1000, (40, 40, 40)), "MR")
    assert lo == pytest.approx(11, abs=5) and hi == pytest.approx(990, abs=5)  # 1st/99th percentiles


def test_cohort_html_offline(organ_study, tmp_path):
    root, image, masks = organ_study
    res = compute_study_stats(image, masks)
    write_stats_parquet(res, tmp_path / "s1.parquet")
    write_status(status_row("s2", "convert", ValueError("no <image> series")), tmp_path / "s2.json")
    cohort = aggregate([tmp_path / "s1.parquet"], tmp_path / "cohort", status_parts=[tmp_path / "s2.json"])
    png = render_study_qc(image, masks, tmp_path / "png" / "s1.png")
    assert main(["qc-report", "--stats", str(cohort.stats_path), "--status", str(cohort.status_path),
                 "--png", str(png), "-o", str(tmp_path / "report.html")]) == 0
    text = (tmp_path / "report.html").read_text()
    assert "no &lt;image&gt; series" in text and "ValueError" in text  # failures, escaped
    assert prompt_id("liver") in text and "1043.1" in text
    assert not re.search(r"src=['\"](?!data:)", text)  # nothing loaded from outside
    assert not re.search(r"href=['\"](https?:|//)", text)  # links only to local files
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert len(images) == 4  # volume box plot + one picture per mask (liver, spleen, brain)
    assert (tmp_path / "report" / "s1.html").is_file()  # the study's page
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)


def test_cli_qc(organ_study, tmp_path):
    _, image, masks = organ_study
    assert main(["qc", "--image", str(image), "--masks", str(masks), "--modality", "CT", "-o", str(tmp_path / "q.png")]) == 0
    assert (tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG"
