#!/usr/bin/env bash
# Create .venv at the repository root and install the project with its test extras at the
# exact versions of a lock file (requirements/*.lock.txt, made by requirements/lock.sh):
#   bash scripts/bootstrap.sh                 CPU: requirements/cpu.lock.txt (CPU build of torch)
#   VOXTELL_GPU=1 bash scripts/bootstrap.sh   CUDA host: requirements/gpu.lock.txt (the same
#                                             versions, CUDA build of torch, onnxruntime-gpu)
# The locks are resolved for CPython 3.11 (PYTHON=/path/to/python3.11 picks the interpreter).
# Re-running it on an installed .venv only checks the pins (a few seconds, nothing downloaded).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ "${VOXTELL_GPU:-0}" = "1" ]; then
    LOCK=requirements/gpu.lock.txt EXTRAS=gpu,dev ORT=onnxruntime-gpu OTHER_ORT=onnxruntime
else
    LOCK=requirements/cpu.lock.txt EXTRAS=cpu,dev ORT=onnxruntime OTHER_ORT=onnxruntime-gpu
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else
    f"bootstrap: the lock files are resolved for CPython 3.11, .venv has {sys.version.split()[0]}; "
    "remove .venv and run PYTHON=/path/to/python3.11 bash scripts/bootstrap.sh")'
PIP=(.venv/bin/python -m pip)
installed() {  # version of an installed distribution, empty if none
    .venv/bin/python -c 'import sys, importlib.metadata as m
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass' "$1"
}
"${PIP[@]}" install --quiet "pip>=24"

# torch alone first: the CPU build lives on PyTorch's CPU wheel index, which must not be asked
# for every other package (a --find-links URL is fetched once per package looked up).
TORCH=$(sed -n 's/^torch==//p' "$LOCK")
if [ "$(installed torch)" != "$TORCH" ]; then
    if [ "${VOXTELL_GPU:-0}" = "1" ]; then
        "${PIP[@]}" install --quiet --no-deps "torch==$TORCH,!=$TORCH+cpu"
    else
        "${PIP[@]}" install --quiet --no-deps \
            --find-links "${TORCH_CPU_LINKS:-https://download.pytorch.org/whl/cpu/torch/}" "torch==$TORCH"
    fi
fi
# onnxruntime and onnxruntime-gpu share one module folder: never both (switching CPU <-> GPU)
if [ -n "$(installed "$OTHER_ORT")" ]; then
    "${PIP[@]}" uninstall --yes --quiet "$OTHER_ORT" "$ORT"
fi
# scispaCy, which older versions used, declares spacy<3.8 and would fail `pip check`
if [ -n "$(installed scispacy)" ]; then
    "${PIP[@]}" uninstall --yes --quiet scispacy
fi
"${PIP[@]}" install --quiet -c "$LOCK" -e ".[$EXTRAS]"
"${PIP[@]}" check
.venv/bin/voxtell --version
