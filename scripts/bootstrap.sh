#!/usr/bin/env bash
# Create .venv at the repository root and install the project with its test extras.
# CPU machines get the CPU build of torch (constraints-cpu.txt); set VOXTELL_GPU=1 on a CUDA
# host to keep pip's default (CUDA) torch and add onnxruntime-gpu.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "${VOXTELL_GPU:-0}" = "1" ]; then
    .venv/bin/python -m pip install --quiet -e ".[dev]"
    .venv/bin/python -m pip uninstall --yes --quiet onnxruntime || true
    .venv/bin/python -m pip install --quiet "onnxruntime-gpu>=1.18"
else
    .venv/bin/python -m pip install --quiet -c constraints-cpu.txt torch==2.13.0
    .venv/bin/python -m pip install --quiet -c constraints-cpu.txt -e ".[dev]"
fi
# scispaCy 0.5.5 (the release that accepts numpy 2, which the SLURM executor plugin needs)
# declares spacy<3.8, but spaCy 3.7's thinc does not import under numpy 2; its tokenizer,
# sentence splitter and abbreviation detector work with spaCy 3.8, so take that.
.venv/bin/python -m pip install --quiet -c constraints-cpu.txt "spacy>=3.8,<3.9"
.venv/bin/voxtell --version
