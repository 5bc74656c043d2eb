"""The cohort QC report: one self-contained HTML page a reviewer works through, plus one
page per study (no network at view time: scripts, styles and pictures are inline).

The main page opens on the review table: one line per mask, the rows that need review
first (most flags first), sortable by any column (click its header) and filterable (free
text and "flagged only"). Each row shows the flags, the sentence, the numbers a reviewer
compares (volume, long axis, reported size, Dice to three decimals), a link to the mask
file and, on click, the mask on the image in three planes through its centroid (the
pictures ``voxtell.stats.qc`` drew at the stats stage). Per study, a page shows every mask
of the study with its picture. Below the table: volumes per prompt, failed stages and
provenance. Pictures are capped (``max_pictures``, flagged rows first) so that a 10,000
study cohort still gives a page a browser opens; the study pages have all of theirs.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from voxtell.io.atomic import write_text_atomic
from voxtell.stats.flags import CODES
from voxtell.stats.qc import MASK_RGB, REFERENCE_RGB

_CSS = """body{font-family:sans-serif;margin:1em 1.5em;color:#222}table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;vertical-align:top}th{background:#eee}td.l,th.l{text-align:left}
#review td,#review th{white-space:nowrap}#review th{cursor:pointer;user-select:none;position:sticky;top:0}#review th.asc::after{content:" \\25B2"}
#review th.desc::after{content:" \\25BC"}#review td.s{max-width:22em;text-align:left;white-space:nowrap;overflow:hidden;
text-overflow:ellipsis}tr.flagged td{background:#fff3f0}.flag{display:inline-block;background:#c0392b;color:#fff;
border-radius:3px;padding:0 4px;margin:0 2px 1px 0;font-size:11px}details summary{cursor:pointer;color:#06c}
.grid{display:flex;flex-wrap:wrap;gap:10px}.grid figure{margin:0;font-size:12px}.fail{color:#b00}
.key{display:inline-block;width:1.4em;height:.5em;border:1px solid #000;vertical-align:middle}
.bar{margin:.4em 0}.bar input{margin-right:1em}figure.mask{border:1px solid #ccc;padding:6px;margin:0 0 12px 0}"""

_JS = """(function(){
var table=document.getElementById('review');if(!table)return;var body=table.tBodies[0];
var heads=table.tHead.rows[0].cells;
function key(td){var v=td.getAttribute('data-v');if(v===null)v=td.textContent;var n=parseFloat(v);
return (v!==''&&!isNaN(n)&&isFinite(v))?{n:true,v:n}:{n:false,v:v.toLowerCase()};}
function sortBy(col,dir){var rows=Array.prototype.slice.call(body.rows);
rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);var c;
if(x.n&&y.n)c=x.v-y.v;else if(x.n)c=-1;else if(y.n)c=1;else c=x.v<y.v?-1:(x.v>y.v?1:0);return dir*c;});
rows.forEach(function(r){body.appendChild(r);});
for(var i=0;i<heads.length;i++)heads[i].className=heads[i].className.replace(/ ?(asc|desc)/g,'');
heads[col].className+=(dir>0?' asc':' desc');}
for(var i=0;i<heads.length;i++)(function(col){heads[col].addEventListener('click',function(){
var dir=/ asc/.test(heads[col].className)?-1:1;sortBy(col,dir);});})(i);
var text=document.getElementById('filter'),only=document.getElementById('flagged');
function filter(){var q=text.value.toLowerCase();var rows=body.rows;var shown=0;
for(var i=0;i<rows.length;i++){var r=rows[i];var ok=(!q||r.textContent.toLowerCase().indexOf(q)>=0)&&
(!only.checked||r.className.indexOf('flagged')>=0);r.style.display=ok?'':'none';if(ok)shown++;}
document.getElementById('shown').textContent=shown;}
text.addEventListener('input',filter);only.addEventListener('change',filter);filter();
})();"""

_COLUMNS = ["review", "flags", "study", "prompt / sentence", "source", "volume mL", "long axis mm",
            "report mm", "Dice", "HD95 mm", "mask", "picture"]
_LEFT = ("review", "flags", "study", "prompt / sentence", "source", "mask", "picture")


def _png_b64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return base64.b64encode(buf.getvalue()).decode()


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ""
    return f"{v:.{digits}f}" if isinstance(v, float) else html.escape(str(v))


def _table(headers: list[str], rows: list[list[Any]], left: int = 1) -> str:
    out = ["<table><tr>" + "".join(f'<th class="{"l" if i < left else ""}">{html.escape(h)}</th>' for i, h in enumerate(headers)) + "</tr>"]
    for row in rows:
        cells = "".join(f'<td class="{"l" if i < left else ""}">{_fmt(v) if not isinstance(v, str) else html.escape(v)}</td>' for i, v in enumerate(row))
        out.append(f"<tr>{cells}</tr>")
    return "\n".join(out + ["</table>"])


def _load(table: pa.Table | str | Path | None) -> pa.Table | None:
    if table is None or isinstance(table, pa.Table):
        return table
    return pq.read_table(table)


def _b64_file(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def _link(target: str | None, page_dir: Path) -> str | None:
    """A relative link from a page in ``page_dir`` to a local file (None when unknown)."""
    if not target:
        return None
    p = Path(target)
    try:
        rel = os.path.relpath(p.resolve(), page_dir.resolve())
    except ValueError:  # another drive on Windows
        rel = str(p.resolve())
    return Path(rel).as_posix()


def _flags_html(flags: list[str] | None) -> str:
    return "".join(f'<span class="flag" title="{html.escape(CODES.get(f, f))}">{html.escape(f)}</span>'
                   for f in flags or [])


def _num(v: Any, digits: int) -> tuple[str, str]:
    """(cell text, sort value) of a number; empty for None/NaN."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "", ""
    return f"{v:.{digits}f}", repr(float(v))


def _review_order(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (not r.get("needs_review"), -len(r.get("qc_flags") or []),
                                       r["study_id"], r.get("source") != "finding", r["prompt_id"]))


def _panel_path(panels: Mapping[str, Path], study: str, pid: str) -> Path | None:
    png = panels.get(study)
    if png is None:
        return None
    p = Path(png).parent / "qc" / f"{pid}.png"
    return p if p.is_file() else None


def _legend() -> str:
    def key(rgb):
        return f'<span class="key" style="background:rgb{tuple(rgb)}"></span>'

    return (f"{key(MASK_RGB)} mask &nbsp; {key(REFERENCE_RGB)} reference &nbsp; "
            "(radiological view: patient's right on the left; A/S up; scale bar in mm)")


def _review_table(rows: list[dict], page_dir: Path, panels: Mapping[str, Path], study_href,
                  max_pictures: int | None) -> str:
    out = ['<table id="review"><thead><tr>' + "".join(
        f'<th class="{"l" if c in _LEFT else ""}">'
        f"{html.escape(c)}</th>" for c in _COLUMNS) + "</tr></thead><tbody>"]
    pictures = 0
    for r in rows:
        flags = r.get("qc_flags") or []
        text = r.get("sentence") or r.get("prompt") or r["prompt_id"]
        vol, vol_v = _num(r.get("volume_ml"), 1)
        ax, ax_v = _num(r.get("longest_axial_diameter_mm"), 1)
        rep, rep_v = _num(r.get("report_diameter_mm"), 1)
        dice, dice_v = _num(r.get("dice"), 3)
        hd, hd_v = _num(r.get("hd95_mm"), 1)
        mask = _link(r.get("mask_path"), page_dir)
        mask_cell = f'<a href="{html.escape(mask)}" title="{html.escape(Path(mask).name)}">mask</a>' if mask else ""
        png = _panel_path(panels, r["study_id"], r["prompt_id"])
        picture = ""
        if png is not None and (max_pictures is None or pictures < max_pictures):
            pictures += 1
            picture = (f'<details><summary>show</summary><img alt="{html.escape(r["prompt_id"])}" '
                       f'src="data:image/png;base64,{_b64_file(png)}"></details>')
        study = html.escape(r["study_id"])
        href = study_href(r["study_id"])
        study_cell = f'<a href="{html.escape(href)}">{study}</a>' if href else study
        out.append(
            f'<tr class="{"flagged" if r.get("needs_review") else "ok"}">'
            f'<td class="l" data-v="{1 if r.get("needs_review") else 0}">{"review" if r.get("needs_review") else ""}</td>'
            f'<td class="l" data-v="{len(flags)}">{_flags_html(flags)}</td>'
            f'<td class="l">{study_cell}</td><td class="l s" title="{html.escape(text)}">{html.escape(text)}</td>'
            f'<td class="l">{html.escape(r.get("source") or "")}</td>'
            f'<td data-v="{vol_v}">{vol}</td><td data-v="{ax_v}">{ax}</td><td data-v="{rep_v}">{rep}</td>'
            f'<td data-v="{dice_v}">{dice}</td><td data-v="{hd_v}">{hd}</td>'
            f'<td class="l">{mask_cell}</td><td class="l">{picture}</td></tr>'
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _page(title: str, body: list[str], script: bool = False) -> str:
    head = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>")
    tail = (f"<script>{_JS}</script>" if script else "") + "</body></html>\n"
    return head + "\n".join(body) + tail


def write_study_page(study: str, rows: list[dict], out_html: Path, panels: Mapping[str, Path], back: str | None) -> Path:
    """One study's page: every mask with its picture, sentence, flags and numbers."""
    page_dir = out_html.parent
    parts = [f"<h1>Study {html.escape(study)}</h1>"]
    if back:
        parts.append(f'<p><a href="{html.escape(back)}">back to the cohort</a> &nbsp; {_legend()}</p>')
    for r in _review_order(rows):
        png = _panel_path(panels, study, r["prompt_id"])
        mask = _link(r.get("mask_path"), page_dir)
        facts = [("volume", _num(r.get("volume_ml"), 1)[0] + " mL"),
                 ("long axis", _num(r.get("longest_axial_diameter_mm"), 1)[0] + " mm"),
                 ("reported", _num(r.get("report_diameter_mm"), 1)[0] + " mm"),
                 ("components", str(r.get("n_components"))), ("Dice", _num(r.get("dice"), 3)[0]),
                 ("assertion", r.get("assertion") or ""), ("laterality", r.get("laterality") or "")]
        parts.append(
            f'<figure class="mask" id="{html.escape(r["prompt_id"])}"><figcaption><b>{html.escape(r.get("sentence") or r.get("prompt") or "")}</b>'
            f' &nbsp; {_flags_html(r.get("qc_flags"))}<br>'
            + " &nbsp; ".join(f"{k}: {html.escape(v)}" for k, v in facts if v.strip(" mL"))
            + (f' &nbsp; <a href="{html.escape(mask)}">mask file</a>' if mask else "")
            + "</figcaption>"
            + (f'<img alt="{html.escape(r["prompt_id"])}" src="data:image/png;base64,{_b64_file(png)}">' if png else
               "<p>(no picture: QC images were off for this run)</p>")
            + "</figure>")
    write_text_atomic(out_html, _page(f"VoxTell QC {study}", parts))
    return out_html


def write_cohort_html(
    stats: pa.Table | str | Path,
    out_html: str | Path,
    *,
    status: pa.Table | str | Path | None = None,
    qc_pngs: Mapping[str, str | Path] | Iterable[str | Path] = (),
    max_pictures: int | None = 2000,
    max_thumbnails: int | None = None,
    study_pages: bool = True,
    title: str = "VoxTell cohort QC",
) -> Path:
    """Write the review page (and, with ``study_pages``, ``{out_html stem}/{study}.html``).

    ``qc_pngs`` maps study id to its QC overview PNG (an iterable of paths uses each file's
    stem, or its parent folder's name when the stem is generic like ``qc``); each mask's
    picture is ``qc/{prompt_id}.png`` beside it. ``max_thumbnails`` is the old name of
    ``max_pictures``.
    """
    if max_thumbnails is not None:
        max_pictures = max_thumbnails
    out = Path(out_html)
    st = _load(stats)
    status_t = _load(status)
    rows = st.to_pylist()
    meta = {k.decode(): v.decode() for k, v in (st.schema.metadata or {}).items()}
    panels = _png_map(qc_pngs)
    ordered = _review_order(rows)
    pages_dir = out.parent / out.name.replace(".html", "")

    def study_href(study: str) -> str | None:
        return f"{pages_dir.name}/{study}.html" if study_pages else None

    failed = [] if status_t is None else [r for r in status_t.to_pylist() if r["status"] == "failed"]
    n_flagged = sum(bool(r.get("needs_review")) for r in rows)
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p><b>{n_flagged}</b> of {len(rows)} masks need review ({len({r['study_id'] for r in rows})} studies); "
             f'<a href="#failures">{len(failed)} failed stage(s)</a>. {_legend()}</p>',
             '<div class="bar"><input id="filter" type="search" placeholder="filter (study, flag, text...)">'
             '<label><input id="flagged" type="checkbox"> flagged only</label> (<span id="shown"></span> shown); '
             "click a column header to sort</div>",
             _review_table(ordered, out.parent, panels, study_href, max_pictures)]

    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_prompt[r["prompt_id"]].append(r)
    summary, volumes = [], {}
    for pid, rs in sorted(by_prompt.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        vols = np.array([r["volume_ml"] for r in rs if not r["empty"]], dtype=float)
        dices = [r["dice"] for r in rs if r["dice"] is not None]
        hds = [r["hd95_mm"] for r in rs if r["hd95_mm"] is not None]
        q = np.percentile(vols, [0, 25, 50, 75, 100]) if vols.size else [None] * 5
        summary.append([pid, (rs[0]["prompt"] or "")[:80], len({r["study_id"] for r in rs}), sum(r["empty"] for r in rs),
                        sum(bool(r.get("needs_review")) for r in rs), *[float(x) if x is not None else None for x in q],
                        f"{np.mean(dices):.3f}" if dices else "", float(np.median(hds)) if hds else None])
        if vols.size:
            volumes[pid] = vols
    parts += ["<h2>Volumes per prompt (mL, non-empty masks)</h2>",
              _table(["prompt_id", "prompt", "studies", "empty", "flagged", "min", "q1", "median", "q3", "max",
                      "mean Dice", "median HD95 mm"], summary, left=2)]
    if volumes:
        parts.append(_volume_plot(volumes))
    parts.append('<h2 id="failures">Failures</h2>')
    if failed:
        parts.append(_table(["study_id", "stage", "error", "message", "time"],
                            [[r["study_id"], r["stage"], r["error_class"] or "", (r["message"] or "")[:300],
                              str(r["timestamp"])] for r in failed], left=4))
    else:
        parts.append("<p>No failed stage" + ("" if status_t is not None else " (no status table given)") + ".</p>")
    prov = [[k, meta[k]] for k in ("pipeline_version", "model_sha256", "text_encoder", "config_hash", "created") if meta.get(k)]
    if prov:
        parts += ["<h2>Provenance</h2>", _table(["key", "value"], prov, left=2)]
    parts.append(f"<p>Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')}.</p>")
    write_text_atomic(out, _page(title, parts, script=True))
    if study_pages:
        pages_dir.mkdir(parents=True, exist_ok=True)
        per_study: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            per_study[r["study_id"]].append(r)
        for study, rs in per_study.items():
            write_study_page(study, rs, pages_dir / f"{study}.html", panels, f"../{out.name}")
    return out


def _volume_plot(volumes: dict[str, np.ndarray]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(volumes)[:25]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(shown) + 1.2))
    data = [volumes[p] for p in shown][::-1]
    try:
        ax.boxplot(data, orientation="horizontal")
    except TypeError:  # matplotlib < 3.10
        ax.boxplot(data, vert=False)
    ax.set_yticks(range(1, len(shown) + 1), shown[::-1])
    ax.set_xscale("log")
    ax.set_xlabel("volume (mL)")
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    out = f"<p><img alt='volumes per prompt' src='data:image/png;base64,{_png_b64(fig)}'></p>"
    plt.close(fig)
    return out


def _png_map(qc_pngs: Mapping[str, str | Path] | Iterable[str | Path]) -> dict[str, Path]:
    if isinstance(qc_pngs, Mapping):
        return {str(k): Path(v) for k, v in qc_pngs.items()}
    out = {}
    for p in map(Path, qc_pngs):
        stem = p.name[: -len(".png")] if p.name.endswith(".png") else p.stem
        out[p.parent.name if stem in ("qc", "image", "masks") else stem] = p
    return out
