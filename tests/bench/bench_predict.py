"""Benchmark: the project's predictor vs a plain loop that follows the released algorithm.

Both run in this process, on the same volume, with the same network and embeddings:

- reference: float64 image (``get_fdata``), hole-filled nonzero crop, z-score, pad; then for
  each prompt a full sliding window, one patch per forward, float16 logits and weights
  accumulated over the whole volume (the released VoxTell/nnU-Net loop);
- ours: ``Predictor`` (all prompts per patch, ``sw_batch_size`` patches per forward, shared
  decoder skip terms, streaming float32 accumulation).

Printed: seconds, study-prompt pairs per hour and their ratio, voxel agreement of the masks,
and peak RSS above the baseline (Linux: VmHWM, reset between runs via /proc/self/clear_refs).

    .venv/bin/python tests/bench/bench_predict.py                       # tiny preset, real CT
    .venv/bin/python tests/bench/bench_predict.py --preset voxtell-v1   # random weights, 2 windows
    .venv/bin/python tests/bench/bench_predict.py --large 512 512 800  # memory only, cheap backend
    .venv/bin/python tests/bench/bench_predict.py --device cuda --precision bf16   # see gpu_bench.sh
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from scipy.ndimage import binary_fill_holes, gaussian_filter

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from voxtell.inference.backends import TorchBackend  # noqa: E402
from voxtell.inference.predictor import ModelInfo, Predictor, PredictorConfig  # noqa: E402
from voxtell.inference.sliding_window import compute_steps  # noqa: E402
from voxtell.model import VoxTellNetwork, get_preset  # noqa: E402

CT = ROOT / "tests" / "data" / "totalsegmentator" / "example_ct_sm.nii.gz"


# ---------------------------------------------------------------------------- memory
def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def measure(fn):
    """(result, seconds, peak RSS MB above the RSS at start, CUDA peak MB or None)."""
    import gc

    gc.collect()
    _reset_peak()
    base = _status_kb("VmRSS:")
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = (_status_kb("VmHWM:") - base) / 1024
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return result, seconds, peak, gpu


# ---------------------------------------------------------------------------- reference loop
class ReferenceLoop:
    """The released algorithm, written plainly (one prompt, one patch at a time, fp16 sums)."""

    def __init__(self, backend, patch, accumulate=torch.half):
        self.backend, self.patch, self.acc_dtype = backend, tuple(patch), accumulate

    def gaussian(self) -> torch.Tensor:
        tmp = np.zeros(self.patch)
        tmp[tuple(p // 2 for p in self.patch)] = 1
        g = gaussian_filter(tmp, [p / 8 for p in self.patch], 0, mode="constant", cval=0)
        g /= g.max()
        g[g == 0] = g[g != 0].min()
        return torch.from_numpy(g).half()

    def __call__(self, image, embeddings: np.ndarray) -> list[np.ndarray]:
        img = image if isinstance(image, nib.spatialimages.SpatialImage) else nib.load(str(image))
        ornt = io_orientation(img.affine)
        data = apply_orientation(img.get_fdata(), ornt_transform(ornt, axcodes2ornt("RAS"))).transpose(2, 1, 0)
        nonzero = binary_fill_holes(data != 0)
        idx = [np.flatnonzero(nonzero.any(axis=tuple(j for j in range(3) if j != i))) for i in range(3)]
        bbox = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)
        x = torch.from_numpy(data[bbox].astype(np.float32))
        x = (x - x.mean()) / max(float(x.std(unbiased=False)), 1e-8)
        shape = x.shape
        new = [max(s, p) for s, p in zip(shape, self.patch)]
        below = [(n - s) // 2 for s, n in zip(shape, new)]
        padded = torch.zeros(new)
        padded[tuple(slice(b, b + s) for b, s in zip(below, shape))] = x
        steps = compute_steps(new, self.patch, 0.5)
        g = self.gaussian().to(self.backend.device, self.acc_dtype)
        masks = []
        for e in embeddings:
            emb = torch.from_numpy(e[None])
            logits = torch.zeros(new, dtype=self.acc_dtype, device=self.backend.device)
            weights = torch.zeros(new, dtype=self.acc_dtype, device=self.backend.device)
            for z in steps[0]:
                for y in steps[1]:
                    for xx in steps[2]:
                        sl = (slice(z, z + self.patch[0]), slice(y, y + self.patch[1]), slice(xx, xx + self.patch[2]))
                        pred = torch.as_tensor(self.backend.forward(padded[sl][None, None], emb))[0, 0]
                        logits[sl] += pred.to(logits.device, self.acc_dtype) * g
                        weights[sl] += g
            prob = torch.sigmoid(logits.float() / weights.float())
            mask = (prob > 0.5).cpu().numpy().astype(np.uint8)
            mask = mask[tuple(slice(b, b + s) for b, s in zip(below, shape))]
            full = np.zeros(data.shape, np.uint8)
            full[bbox] = mask
            masks.append(apply_orientation(full.transpose(2, 1, 0), ornt_transform(axcodes2ornt("RAS"), ornt)))
        return masks


class CheapBackend:
    """Memory-only runs: logits = intensity (no network), so only the pipeline is measured."""

    name = "cheap"

    def __init__(self, device="cpu"):
        self.device = device

    def forward(self, patches, embeddings):
        return patches.to(self.device).expand(-1, embeddings.shape[0], -1, -1, -1).clone()


# ---------------------------------------------------------------------------- runs
def compare(label, image, backend, patch, embeddings, config, ref_fp32=False):
    n_prompts = len(embeddings)
    predictor = Predictor(backend, patch, ModelInfo("bench", embedding_dim=embeddings.shape[1]), config)
    reference = ReferenceLoop(backend, patch)
    prompts = [f"prompt {i}" for i in range(n_prompts)]
    # warm-up (thread pools, allocator, cuDNN autotuning) so neither run pays one-time costs
    backend.forward(torch.zeros(config.sw_batch_size, 1, *patch), torch.from_numpy(embeddings))
    ours, t_ours, m_ours, g_ours = measure(lambda: predictor.predict(image, prompts, embeddings=embeddings).masks)
    ref, t_ref, m_ref, g_ref = measure(lambda: reference(image, embeddings))
    agree = float(np.mean([np.mean(a == b) for a, b in zip(ours, ref)]))
    pph_ours, pph_ref = 3600 * n_prompts / t_ours, 3600 * n_prompts / t_ref
    gpu = f" gpu_peak_MB ours {g_ours:.0f} ref {g_ref:.0f}" if g_ours is not None else ""
    print(
        f"{label}: prompts {n_prompts} | ours {t_ours:.1f}s ({pph_ours:.0f} pairs/h, peak +{m_ours:.0f} MB) | "
        f"reference {t_ref:.1f}s ({pph_ref:.0f} pairs/h, peak +{m_ref:.0f} MB) | "
        f"speed-up {pph_ours / pph_ref:.2f}x | memory {m_ours / max(m_ref, 1):.2f} of ref | "
        f"voxel agreement {100 * agree:.4f}%{gpu}",
        flush=True,
    )
    if ref_fp32:  # is the disagreement the reference's float16 sums? (random weights: logits near 0)
        ref32 = ReferenceLoop(backend, patch, accumulate=torch.float32)(image, embeddings)
        agree32 = float(np.mean([np.mean(a == b) for a, b in zip(ours, ref32)]))
        print(f"{label}: voxel agreement with the reference loop accumulating in float32: {100 * agree32:.4f}%",
              flush=True)


def network_run(args):
    torch.manual_seed(0)
    cfg = get_preset(args.preset)
    network = VoxTellNetwork(cfg)
    device = args.device
    backend = TorchBackend(network, device, args.precision)
    if args.preset == "tiny":
        image = CT
    else:  # a small volume of a few windows: the CT resampled onto 192 x 192 x 200 voxels
        src = nib.load(CT)
        from scipy.ndimage import zoom

        data = zoom(np.asanyarray(src.dataobj).astype(np.float32), [192 / 122, 192 / 101, args.v1_depth / 30], order=1)
        image = nib.Nifti1Image(data.astype(np.int16), src.affine)
    steps = compute_steps([max(s, p) for s, p in zip(_net_shape(image), cfg.patch_size)], cfg.patch_size)
    print(f"# {args.preset} patch {cfg.patch_size}, windows {math.prod(len(s) for s in steps)}, device {device}, "
          f"precision {args.precision}, torch threads {torch.get_num_threads()}, cpu {os.cpu_count()}", flush=True)
    config = PredictorConfig(device=device, precision=args.precision, sw_batch_size=args.sw_batch_size, progress=False)
    rng = np.random.default_rng(0)
    for n in args.prompts:
        emb = rng.normal(size=(n, cfg.text_embedding_dim)).astype(np.float32)
        compare(args.preset, image, backend, cfg.patch_size, emb, config, ref_fp32=args.ref_fp32)


def _net_shape(image):
    img = image if isinstance(image, nib.spatialimages.SpatialImage) else nib.load(str(image))
    return tuple(reversed(apply_orientation(np.empty(img.shape, np.uint8),
                                            ornt_transform(io_orientation(img.affine), axcodes2ornt("RAS"))).shape))


def large_run(args):
    x, y, z = args.large
    data = np.full((x, y, z), -1024, dtype=np.int16)  # air around a textured body (gzip-friendly)
    body = (np.arange(x)[:, None, None] // 7 + np.arange(y)[None, :, None] // 5 + np.arange(z)[None, None, :] // 3)
    data[x // 8 : -x // 8, y // 8 : -y // 8, :] = (body[x // 8 : -x // 8, y // 8 : -y // 8] % 400 - 100).astype(np.int16)
    del body
    path = Path(args.tmp) / "large_ct.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([-0.8, -0.8, 1.0, 1])), path)
    del data
    n_in = x * y * z
    patch = (64, 64, 64)
    print(f"# large volume {x}x{y}x{z} int16 ({n_in / 1e6:.0f} Mvoxel), patch {patch}, cheap backend (no network)")
    emb = np.zeros((args.prompts[-1], 4), np.float32)
    P = len(emb)
    formula = (4 * n_in + 4 * P * (patch[0] + 64) * y * x + P * n_in + 2 * n_in) / 2**20
    print(f"# formula (sliding-window phase, N_net = N_in): {formula:.0f} MB; the volume as float32: {4 * n_in / 2**20:.0f} MB")
    compare("large", path, CheapBackend(args.device), patch, emb,
            PredictorConfig(device=args.device, sw_batch_size=args.sw_batch_size, progress=False))
    path.unlink()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--prompts", type=int, nargs="+", default=[1, 4])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--sw-batch-size", type=int, default=2)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--v1-depth", type=int, default=200, help="slices of the voxtell-v1 volume (200: 2 windows)")
    p.add_argument("--large", type=int, nargs=3, metavar=("X", "Y", "Z"), help="memory run on a synthetic CT")
    p.add_argument("--tmp", default="/tmp")
    p.add_argument("--ref-fp32", action="store_true", help="also compare with a float32-accumulating reference")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.large:
        large_run(args)
    else:
        network_run(args)


if __name__ == "__main__":
    main()
