#!/usr/bin/env python
"""Install scispaCy 0.5.5 declared for spaCy 3.8 into the running Python environment.

Why: no scispaCy release on PyPI fits an environment with numpy 2 (which the SLURM executor
plugin, pandas 3, onnx and pylibjpeg-openjpeg need):
- scispacy 0.5.5 declares ``spacy<3.8``, and spaCy 3.7's thinc 8.2 declares ``numpy<2``;
- scispacy 0.6.x declares ``spacy<3.9`` but also ``numpy<2.0`` (for nmslib, which only its
  entity linker uses).
The three parts this project uses (``custom_tokenizer``, ``custom_sentence_segmenter``,
``abbreviation``) are byte-identical in 0.5.5 and 0.6.2, and upstream raised the spaCy cap to
``<3.9`` for that code (allenai/scispacy#551, a one-line metadata change). So this script
takes the released, hash-checked 0.5.5 wheel, changes only its declared spaCy range to
upstream's ``>=3.7.0,<3.9.0``, marks the version ``0.5.5+spacy38`` so it is never taken for
the PyPI file, and installs it with pip (dependencies resolved as usual) — after which
``pip check`` is clean.

Snakemake runs this file after creating ``envs/findings.yaml`` (and ``envs/demo.yaml``, a
link to it) — the shebang picks the env's Python; ``scripts/bootstrap.sh`` runs it for
``.venv``. Extra arguments go to ``pip install`` (e.g. ``-c requirements/cpu.lock.txt``).
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

UPSTREAM = "scispacy-0.5.5-py3-none-any.whl"
UPSTREAM_SHA256 = "81b6b3d899a4caf224ebe3016eae25a112b259c1941cb62703decea7897a0ab8"
LOCAL_VERSION = "0.5.5+spacy38"
OLD_REQ = "Requires-Dist: spacy <3.8.0,>=3.7.0"
NEW_REQ = "Requires-Dist: spacy<3.9.0,>=3.7.0"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def rewrite_wheel(upstream: Path, out_dir: Path) -> Path:
    """Copy of the upstream wheel with the spaCy range and version changed (RECORD updated)."""
    data = upstream.read_bytes()
    if hashlib.sha256(data).hexdigest() != UPSTREAM_SHA256:
        raise SystemExit(f"{upstream} is not the released scispacy 0.5.5 wheel (sha256 differs)")
    old_info, new_info = "scispacy-0.5.5.dist-info/", f"scispacy-{LOCAL_VERSION}.dist-info/"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"scispacy-{LOCAL_VERSION}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(upstream) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            name, body = info.filename, src.read(info)
            if name == old_info + "RECORD":
                continue
            if name == old_info + "METADATA":
                text = body.decode("utf-8")
                if OLD_REQ not in text or "\nVersion: 0.5.5\n" not in text:
                    raise SystemExit("scispacy 0.5.5 METADATA is not as expected; nothing installed")
                text = text.replace(OLD_REQ, NEW_REQ, 1).replace(
                    "\nVersion: 0.5.5\n", f"\nVersion: {LOCAL_VERSION}\n", 1
                )
                body = text.encode("utf-8")
            name = name.replace(old_info, new_info, 1)
            # the upstream timestamps keep the rebuilt wheel byte-identical from run to run
            dst.writestr(zipfile.ZipInfo(name, date_time=info.date_time), body, zipfile.ZIP_DEFLATED)
            records.append(f"{name},{_record_hash(body)},{len(body)}")
        records.append(f"{new_info}RECORD,,")
        record = zipfile.ZipInfo(new_info + "RECORD", date_time=info.date_time)
        dst.writestr(record, "\n".join(records) + "\n", zipfile.ZIP_DEFLATED)
    return out


def main(args: list[str]) -> None:
    """``[--wheel-dir DIR] [pip install options]``: with ``--wheel-dir`` only write the wheel
    there (``requirements/lock.sh`` resolves against it), else install it."""
    pip = [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory(prefix="scispacy-") as tmp:
        subprocess.run(
            [*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", tmp, "scispacy==0.5.5"],
            check=True,
        )
        if args[:1] == ["--wheel-dir"]:
            rewrite_wheel(Path(tmp) / UPSTREAM, Path(args[1]))
            return
        wheel = rewrite_wheel(Path(tmp) / UPSTREAM, Path(tmp))
        subprocess.run([*pip, "install", "--quiet", *args, str(wheel)], check=True)


if __name__ == "__main__":
    main(sys.argv[1:])
