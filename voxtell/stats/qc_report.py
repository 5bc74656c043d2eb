"""The cohort QC page: one self-contained HTML file (no network, images inline as base64).

It shows, per prompt, how many studies have a mask, how many are empty, the volume
distribution (a box plot and quartiles) and agreement with references where present;
every failed stage from the status table; and a thumbnail of each study's QC PNG.
Thumbnails are downscaled and capped in number so that a 10,000-study cohort still
gives a page a browser opens.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from voxtell.io.atomic import write_text_atomic

_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#eee}td.l,th.l{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:10px}.grid figure{margin:0;font-size:12px}.fail{color:#b00}"""


def _png_b64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return base64.b64encode(buf.getvalue()).decode()


def thumbnail_b64(png: Path, width: int = 480) -> str:
    """PNG downscaled (by an integer stride) to at most ``width`` pixels, as base64."""
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    step = max(1, int(np.ceil(img.shape[1] / width)))
    buf = io.BytesIO()
    mpimg.imsave(buf, img[::step, ::step], format="png")
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


def write_cohort_html(
    stats: pa.Table | str | Path,
    out_html: str | Path,
    *,
    status: pa.Table | str | Path | None = None,
    qc_pngs: Mapping[str, str | Path] | Iterable[str | Path] = (),
    max_thumbnails: int = 200,
    thumb_width: int = 480,
    title: str = "VoxTell cohort QC",
) -> Path:
    """Write the cohort summary page atomically.

    ``qc_pngs`` maps study id to its QC PNG (an iterable of paths uses each file's stem,
    or its parent folder's name when the stem is generic like ``qc``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = _load(stats)
    status_t = _load(status)
    rows = st.select(["study_id", "prompt_id", "prompt", "empty", "volume_ml", "dice", "hd95_mm"]).to_pylist()
    meta = {k.decode(): v.decode() for k, v in (st.schema.metadata or {}).items()}

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
                        *[float(x) if x is not None else None for x in q],
                        float(np.mean(dices)) if dices else None, float(np.median(hds)) if hds else None])
        if vols.size:
            volumes[pid] = vols

    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p>{len({r['study_id'] for r in rows})} studies, {len(rows)} masks, {len(by_prompt)} prompts. "
             f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')}.</p>"]
    prov = [[k, meta[k]] for k in ("pipeline_version", "model_sha256", "text_encoder", "config_hash", "created") if meta.get(k)]
    if prov:
        parts += ["<h2>Provenance</h2>", _table(["key", "value"], prov, left=2)]
    parts += ["<h2>Volumes per prompt (mL, non-empty masks)</h2>",
              _table(["prompt_id", "prompt", "studies", "empty", "min", "q1", "median", "q3", "max", "mean Dice", "median HD95 mm"],
                     summary, left=2)]
    if volumes:
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
        parts.append(f"<p><img alt='volumes per prompt' src='data:image/png;base64,{_png_b64(fig)}'></p>")
        plt.close(fig)

    parts.append("<h2>Failures</h2>")
    failed = [] if status_t is None else [r for r in status_t.to_pylist() if r["status"] == "failed"]
    if failed:
        parts.append(_table(["study_id", "stage", "error", "message", "time"],
                            [[r["study_id"], r["stage"], r["error_class"] or "", (r["message"] or "")[:300],
                              str(r["timestamp"])] for r in failed], left=4))
    else:
        parts.append("<p>No failed stage" + ("" if status_t is not None else " (no status table given)") + ".</p>")

    pngs = _png_map(qc_pngs)
    if pngs:
        parts.append(f"<h2>Studies ({min(len(pngs), max_thumbnails)} of {len(pngs)} QC images)</h2><div class='grid'>")
        for sid, png in list(sorted(pngs.items()))[:max_thumbnails]:
            parts.append(f"<figure><img alt='{html.escape(sid)}' src='data:image/png;base64,{thumbnail_b64(Path(png), thumb_width)}'>"
                         f"<figcaption>{html.escape(sid)}</figcaption></figure>")
        parts.append("</div>")
    parts.append("</body></html>\n")
    out = Path(out_html)
    write_text_atomic(out, "\n".join(parts))
    return out


def _png_map(qc_pngs: Mapping[str, str | Path] | Iterable[str | Path]) -> dict[str, Path]:
    if isinstance(qc_pngs, Mapping):
        return {str(k): Path(v) for k, v in qc_pngs.items()}
    out = {}
    for p in map(Path, qc_pngs):
        stem = p.name[: -len(".png")] if p.name.endswith(".png") else p.stem
        out[p.parent.name if stem in ("qc", "image", "masks") else stem] = p
    return out
