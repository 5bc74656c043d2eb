"""The QC page in a real browser (Debian's headless Chromium, driven over the DevTools
protocol on a pipe): no script errors, nothing fetched from the network, the table sorts
and filters, and every flagged row is on the first screen."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxtell.prompts import prompt_id
from voxtell.stats.parquet import aggregate, write_stats_parquet
from voxtell.stats.qc import render_study_qc
from voxtell.stats.qc_report import write_cohort_html
from voxtell.stats.study import compute_study_stats

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
SCREEN = (1366, 768)


class Browser:
    """Headless Chromium with ``--remote-debugging-pipe``: JSON messages ending in NUL on
    file descriptors 3 (to the browser) and 4 (from it)."""

    def __init__(self, profile: Path) -> None:
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()

        # the shell puts the pipe ends on descriptors 3 and 4 (Popen closes its own extras)
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_r} 4>&{from_w}', CHROMIUM, "--headless", "--no-sandbox",
             "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-pipe",
             "about:blank"],
            pass_fds=(to_r, from_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def _read(self) -> dict:
        while b"\0" not in self._buf:
            chunk = os.read(self._from_r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def page(self, method: str, params: dict | None = None) -> dict:
        return self.call(method, params, session=True)

    def wait_for(self, method: str) -> dict:
        for e in self.events:
            if e.get("method") == method:
                return e
        while True:
            e = self._read()
            self.events.append(e)
            if e.get("method") == method:
                return e

    def js(self, expression: str):
        res = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in res:
            raise AssertionError(f"script error: {res['exceptionDetails']}")
        return res["result"].get("value")

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_w)
        os.close(self._from_r)


def _study(folder: Path, affine, masks: dict[str, tuple[np.ndarray, dict | None]], study_id: str) -> Path:
    folder.mkdir(parents=True)
    prompts = []
    for text, (arr, finding) in masks.items():
        pid = prompt_id(text)
        nib.save(nib.Nifti1Image(arr.astype(np.uint8), affine), folder / f"{pid}.nii.gz")
        entry = {"prompt_id": pid, "prompt": text, "file": f"{pid}.nii.gz", "source": "finding" if finding else "config"}
        if finding:
            entry.update(finding_id=finding["finding_id"], finding=finding)
        prompts.append(entry)
    (folder / "manifest.json").write_text(json.dumps({"study_id": study_id, "prompts": prompts}))
    return folder


@pytest.fixture(scope="module")
def qc_page(tmp_path_factory, totalseg_dir):
    """A cohort page of three studies of the real TotalSegmentator CT: good organ masks, and
    per study one finding whose mask is the liver (wrong side, far too big) and one empty."""
    root = tmp_path_factory.mktemp("browser")
    seg = nib.load(totalseg_dir / "example_seg.nii.gz")
    lab = np.asanyarray(seg.dataobj)
    image = totalseg_dir / "example_ct_sm.nii.gz"
    parts, pngs = [], {}
    for n in range(3):
        sid = f"s{n + 1}"
        finding = {"finding_id": f"{sid}-f000", "sentence": "A 20 mm lesion in the left kidney.", "section": "findings",
                   "concepts": ["lesion", "kidney"], "laterality": "left", "assertion": "present", "uncertain": False,
                   "measurements_mm": [20.0]}
        empty = {**finding, "finding_id": f"{sid}-f001", "sentence": "A 9 mm nodule in the right lung.",
                 "laterality": "right", "measurements_mm": [9.0]}
        masks = {"liver": (lab == 5, None), "spleen": (lab == 1, None), "aorta": (lab == 7, None),
                 "a 20 mm lesion in the left kidney": (lab == 5, finding),
                 "a 9 mm nodule in the right lung": (np.zeros(lab.shape, bool), empty)}
        folder = _study(root / "segment" / sid, seg.affine, masks, sid)
        write_stats_parquet(compute_study_stats(image, folder), root / "stats" / f"{sid}.parquet")
        pngs[sid] = render_study_qc(image, folder, root / "stats" / sid / "qc.png")
    cohort = aggregate(sorted((root / "stats").glob("*.parquet")), root / "cohort")
    return write_cohort_html(cohort.stats_path, root / "cohort" / "qc.html", qc_pngs=pngs)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def test_qc_page_in_chromium(browser, qc_page):
    b = browser
    for domain in ("Runtime.enable", "Log.enable", "Network.enable", "Page.enable"):
        b.page(domain)
    b.page("Emulation.setDeviceMetricsOverride",
           {"width": SCREEN[0], "height": SCREEN[1], "deviceScaleFactor": 1, "mobile": False})
    b.page("Page.navigate", {"url": qc_page.resolve().as_uri()})
    b.wait_for("Page.loadEventFired")

    errors = [e for e in b.events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")]
    assert not errors, errors
    requested = [e["params"]["request"]["url"] for e in b.events if e.get("method") == "Network.requestWillBeSent"]
    assert requested and all(u.startswith(("file:", "data:")) for u in requested), requested

    # every flagged row is on the first screen, and the flagged rows come first
    rows = b.js("""Array.from(document.querySelectorAll('#review tbody tr')).map(r => ({
        flagged: r.classList.contains('flagged'), bottom: r.getBoundingClientRect().bottom,
        flags: r.cells[1].textContent}))""")
    flagged = [r for r in rows if r["flagged"]]
    import pyarrow.parquet as pq

    table = pq.read_table(qc_page.parent / "stats.parquet").to_pylist()
    assert len(rows) == len(table) == 15 and len(flagged) == sum(r["needs_review"] for r in table) >= 6
    assert [r["flagged"] for r in rows] == sorted((r["flagged"] for r in rows), reverse=True)
    assert all(r["bottom"] <= SCREEN[1] for r in flagged), (flagged, SCREEN)
    assert any("wrong_side" in r["flags"] and "size_vs_report" in r["flags"] for r in flagged)
    assert any("empty_finding" in r["flags"] for r in flagged)

    # clicking a header sorts by it (numbers as numbers), clicking again reverses
    col = b.js("Array.from(document.querySelectorAll('#review th')).findIndex(h => h.textContent.startsWith('volume'))")

    def volumes():
        return b.js(f"""Array.from(document.querySelectorAll('#review tbody tr')).map(
            r => r.cells[{col}].getAttribute('data-v')).filter(v => v !== '').map(Number)""")

    b.js(f"document.querySelectorAll('#review th')[{col}].click()")
    up = volumes()
    assert up == sorted(up) and len(up) == 15 and up[0] < up[-1]
    b.js(f"document.querySelectorAll('#review th')[{col}].click()")
    assert volumes() == sorted(up, reverse=True)

    # the filters: flagged only, then free text
    b.js("var c = document.getElementById('flagged'); c.checked = true; c.dispatchEvent(new Event('change'))")
    assert b.js("Array.from(document.querySelectorAll('#review tbody tr')).filter(r => r.style.display !== 'none').length") == len(flagged)
    b.js("var f = document.getElementById('filter'); f.value = 'empty_finding'; f.dispatchEvent(new Event('input'))")
    assert b.js("document.getElementById('shown').textContent") == "3"

    # the picture opens and is a decoded image; Dice and study links are there
    assert b.js("""(() => { const d = document.querySelector('#review details'); d.open = true;
        const i = d.querySelector('img'); return i.complete && i.naturalWidth > 600; })()""")
    assert b.js("document.querySelector('#review a[href$=\"s1.html\"]') !== null")
    shot = b.page("Page.captureScreenshot", {"format": "png"})
    assert len(shot["data"]) > 1000
    new_errors = [e for e in b.events if e.get("method") == "Runtime.exceptionThrown"]
    assert not new_errors, new_errors


@pytest.mark.slow  # segments the demo cohort with the demo model (shared with test_flags_seeded)
def test_demo_cohort_through_the_stages_in_chromium(tmp_path_factory, browser):
    """The stats and aggregate stages on the segmented demo cohort: the flags reach the
    cohort table, findings.parquet and the page, whose flagged rows all fit the first screen."""
    import pyarrow.parquet as pq

    from voxtell.cohort import status as st
    from voxtell.cohort.stage_aggregate import run_aggregate
    from voxtell.cohort.stage_stats import StatsTask, run_stats_shard

    from test_qc_support import demo_cohort

    demo = demo_cohort(tmp_path_factory)
    work = tmp_path_factory.mktemp("demo_stages")
    tasks = []
    for s in demo.studies:
        st.write(s.masks / "status.json", st.ok(s.study_id, "segment"))
        tasks.append(StatsTask(s.study_id, str(s.masks), str(s.reference), str(work / "stats" / s.study_id)))
    summary = run_stats_shard("000", tasks, work / "stats" / "shards" / "000.json")
    assert summary["counts"]["ok"] == len(tasks)
    run_aggregate([work / "stats" / t.study_id / "stats.parquet" for t in tasks],
                  [work / "stats" / t.study_id / "status.json" for t in tasks], work / "cohort",
                  config_hash="test", model_sha256=None,
                  qc_pngs={t.study_id: str(work / "stats" / t.study_id / "qc.png") for t in tasks},
                  findings_files={s.study_id: str(s.findings) for s in demo.studies})
    stats = pq.read_table(work / "cohort" / "stats.parquet").to_pylist()
    findings = pq.read_table(work / "cohort" / "findings.parquet").to_pylist()
    masked = {(r["study_id"], r["prompt_id"]) for r in stats if r["source"] == "finding"}
    assert {(f["study_id"], f["prompt_id"]) for f in findings if f["prompt_id"]} == masked
    assert all(f["no_mask_reason"] for f in findings if not f["prompt_id"])
    assert all(r["needs_review"] for r in stats if r["source"] == "finding" and (r["dice"] or 0) < 0.1)
    assert sorted(p.name for p in (work / "cohort" / "qc").iterdir()) == [f"{s.study_id}.html" for s in demo.studies]

    b = browser
    for domain in ("Runtime.enable", "Page.enable"):
        b.page(domain)
    b.page("Emulation.setDeviceMetricsOverride",
           {"width": SCREEN[0], "height": SCREEN[1], "deviceScaleFactor": 1, "mobile": False})
    b.events.clear()
    b.page("Page.navigate", {"url": (work / "cohort" / "qc.html").resolve().as_uri()})
    b.wait_for("Page.loadEventFired")
    rows = b.js("""Array.from(document.querySelectorAll('#review tbody tr')).map(r => ({
        flagged: r.classList.contains('flagged'), bottom: r.getBoundingClientRect().bottom}))""")
    flagged = [r for r in rows if r["flagged"]]
    print(f"\n{len(flagged)} of {len(rows)} rows flagged; last flagged row ends at {flagged[-1]['bottom']:.0f} px "
          f"of a {SCREEN[1]} px screen")
    assert len(flagged) == sum(r["needs_review"] for r in stats) >= 10
    assert all(r["bottom"] <= SCREEN[1] for r in flagged)
    assert not [e for e in b.events if e.get("method") == "Runtime.exceptionThrown"]
