#!/usr/bin/env bash
# Device check: one realistic study through our predictor (and the released one when the
# device has it), per precision: studies/hour, peak GPU memory, voxel agreement with our
# fp32 masks. The study is a synthetic 512x512x300 CT at 0.8x0.8x1.5 mm (a body in air,
# so the nonzero crop is realistic), 10 prompts, voxtell-v1 with random weights.
#   bash tests/bench/gpu_check_study.sh                 # on the lent GPU (about 5 minutes)
#   bash tests/bench/gpu_check_study.sh --device cpu --small   # CPU dry run: small preset, small CT
# Options after the script name go to the Python part: --precisions fp32 bf16 fp16,
# --prompts N, --compile (torch.compile of the encoder, opt-in; off on CPU), --released PYTHON
# (an interpreter that has the released voxtell package; default: none, skipped).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" - "$@" <<'PYEOF'
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path
import nibabel as nib, numpy as np, torch
sys.path.insert(0, os.getcwd())
from voxtell.inference.predictor import Predictor, PredictorConfig
from voxtell.model import ModelMeta, VoxTellNetwork, get_preset, save_model_dir

p = argparse.ArgumentParser()
p.add_argument("--device", default="cuda")
p.add_argument("--small", action="store_true", help="small preset and a 96x96x60 CT: a CPU dry run")
p.add_argument("--precisions", nargs="+", default=None)
p.add_argument("--prompts", type=int, default=10)
p.add_argument("--compile", action="store_true")
p.add_argument("--released", default=os.environ.get("VOXTELL_RELEASED_PYTHON"))
a = p.parse_args()
if a.device.startswith("cuda") and not torch.cuda.is_available():
    sys.exit("gpu_check_study.sh: torch sees no CUDA device (use --device cpu --small for a dry run)")
precisions = a.precisions or (["fp32", "bf16", "fp16"] if a.device.startswith("cuda") else ["fp32"])
preset = "small" if a.small else "voxtell-v1"
shape, spacing = ((96, 96, 60), (3.2, 3.2, 5.0)) if a.small else ((512, 512, 300), (0.8, 0.8, 1.5))
print(f"# {torch.cuda.get_device_name(0) if a.device.startswith('cuda') else 'cpu'}, torch {torch.__version__}, "
      f"preset {preset}, CT {shape} at {spacing} mm, {a.prompts} prompts", flush=True)
work = Path(tempfile.mkdtemp(prefix="voxtell-gpu-study-"))
torch.manual_seed(0)
cfg = get_preset(preset)
net = VoxTellNetwork(cfg)
with torch.no_grad():
    for name, prm in net.named_parameters():
        if prm.ndim > 1:
            prm.normal_(0, (2.0 / prm[0].numel()) ** 0.5)
save_model_dir(net, cfg, work / "model", ModelMeta(model_id="study-random", preset=preset, text_encoder="bench",
                                                   embedding_dim=cfg.text_embedding_dim))
del net
x, y, z = shape
ct = np.full(shape, -1000, np.int16)
yy, xx = np.ogrid[:x, :y]
body = ((xx - y / 2) ** 2 / (0.42 * y) ** 2 + (yy - x / 2) ** 2 / (0.33 * x) ** 2) <= 1
ct[body] = 40
ct += np.random.default_rng(0).normal(0, 20, shape).astype(np.int16)
image = work / "ct.nii.gz"
nib.save(nib.Nifti1Image(ct, np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])), image)
emb = np.random.default_rng(1).normal(0, 1, (a.prompts, cfg.text_embedding_dim)).astype(np.float32)
np.save(work / "emb.npy", emb)

def sync():
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()

reference = None
for precision in precisions:
    predictor = Predictor.from_model_dir(work / "model", PredictorConfig(device=a.device, precision=precision,
                                                                          progress=False))
    if a.compile and a.device.startswith("cuda"):
        predictor.backend.network.encoder = torch.compile(predictor.backend.network.encoder)
    predictor.predict(image, embeddings=emb[:1])  # warm-up (allocator, cuDNN autotuning, compilation)
    if a.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sync(); t0 = time.perf_counter()
    masks = np.stack(predictor.predict(image, embeddings=emb).masks)
    sync(); dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if a.device.startswith("cuda") else float("nan")
    reference = masks if reference is None else reference
    agree = float((masks == reference).mean())
    print(f"ours {precision}{' compiled' if a.compile else ''}: {dt:.2f} s/study = {3600 / dt:.0f} studies/hour, "
          f"peak GPU {peak:.1f} GiB, voxels equal to ours fp32 {100 * agree:.4f} %, foreground {masks.mean():.4f}",
          flush=True)
    del predictor
    if a.device.startswith("cuda"):
        torch.cuda.empty_cache()

if a.released and a.small:
    print("# released predictor: skipped (it builds only the voxtell-v1 architecture, not --small)", flush=True)
elif a.released:  # the released predictor in its own interpreter (same model folder, image, embeddings)
    runner = """
import json, sys, time, numpy as np, torch
from nnunetv2.imageio.nibabel_reader_writer import NibabelIOWithReorient
from voxtell.inference.predictor import VoxTellPredictor
w = sys.argv[1]; dev = torch.device(sys.argv[2])
pred = VoxTellPredictor(model_dir=w + "/model", device=dev, use_precomputed_embeddings=False)
img, _ = NibabelIOWithReorient().read_images([w + "/ct.nii.gz"])
emb = torch.from_numpy(np.load(w + "/emb.npy"))[None].to(dev)
pred.predict_single_image(img, text_embeddings=emb[:, :1])
if dev.type == "cuda": torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter(); m = pred.predict_single_image(img, text_embeddings=emb)
if dev.type == "cuda": torch.cuda.synchronize()
dt = time.perf_counter() - t0
np.save(w + "/released.npy", m.astype(np.uint8))
print(json.dumps({"s": dt, "peak": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None}))
"""
    proc = subprocess.run([a.released, "-c", runner, str(work), a.device], capture_output=True, text=True,
                          cwd=tempfile.gettempdir())
    if proc.returncode:
        print("released predictor failed:", proc.stderr[-2000:], flush=True)
    else:
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        released = np.load(work / "released.npy")
        # released masks are (P, z, y, x) of the RAS image; ours (P, x, y, z) of the input (LPS-diagonal) grid
        released = released.transpose(0, 3, 2, 1)[:, ::-1, ::-1, :]
        print(f"released (autocast on CUDA): {r['s']:.2f} s/study = {3600 / r['s']:.0f} studies/hour, peak GPU "
              f"{r['peak'] or float('nan'):.1f} GiB, voxels equal to ours fp32 {100 * float((released == reference).mean()):.4f} %",
              flush=True)
else:
    print("# released predictor: skipped (give --released PYTHON of an environment that has it)", flush=True)
PYEOF
