"""Benchmark: ``voxtell predict``'s predictor against the released VoxTell predictor on the CPU.

The released predictor is the upstream ``voxtell`` package from PyPI (with nnunetv2), which
this script installs into a throw-away virtual environment under /tmp (torch pinned to
the CPU wheel ``--torch``; it is never a dependency of this project). Both predictors load
the same model folder (random weights of the released architecture written in the released
format), read the same NIfTI (one patch: 192^3 by default) and get the same prompt
embeddings. Runs alternate, each in its own process, released first, so neither gains from
a warm cache or a quieter machine. Printed per prompt count: seconds of ``predict`` (model
load excluded, printed apart), peak RSS of the process, their ratios, and the share of
voxels whose masks are equal.

    nice -n 10 .venv/bin/python tests/bench/bench_vs_reference.py [--prompts 2 4] [--reps 1]
        [--patch 192] [--threads 2] [--venv /tmp/voxtell-released-venv --keep-venv]

Measured on the 2-core AMD EPYC of the development machine: see README ("Speed").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RELEASED_RUNNER = textwrap.dedent('''
    import json, resource, sys, time
    import numpy as np, torch
    args = json.loads(sys.argv[1])
    torch.set_num_threads(args["threads"])
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIOWithReorient
    from voxtell.inference.predictor import VoxTellPredictor
    t0 = time.perf_counter()
    predictor = VoxTellPredictor(model_dir=args["model"], device=torch.device("cpu"),
                                 use_precomputed_embeddings=False)
    t1 = time.perf_counter()
    img, _ = NibabelIOWithReorient().read_images([args["image"]])
    emb = torch.from_numpy(np.load(args["embeddings"]))[None]
    masks = predictor.predict_single_image(img, text_embeddings=emb)  # (P, z, y, x) of the RAS image
    t2 = time.perf_counter()
    np.save(args["out"], masks.astype(np.uint8))
    print(json.dumps({"load_s": t1 - t0, "predict_s": t2 - t1,
                      "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
''')

OURS_RUNNER = textwrap.dedent('''
    import json, resource, sys, time
    import numpy as np, torch
    args = json.loads(sys.argv[1])
    torch.set_num_threads(args["threads"])
    sys.path.insert(0, args["root"])
    from voxtell.inference.predictor import Predictor, PredictorConfig
    t0 = time.perf_counter()
    predictor = Predictor.from_model_dir(args["model"], PredictorConfig(device="cpu", progress=False))
    predictor.backend.network.fast_inference = args["fast"]
    t1 = time.perf_counter()
    emb = np.load(args["embeddings"])
    result = predictor.predict(args["image"], embeddings=emb)
    t2 = time.perf_counter()
    np.save(args["out"], np.stack(result.masks))  # (P, x, y, z) of the input grid
    print(json.dumps({"load_s": t1 - t0, "predict_s": t2 - t1,
                      "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
''')


def ensure_released_env(venv: Path, version: str, torch_pin: str) -> Path:
    """A venv with the released package (reused when it already has it); returns its python."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import voxtell.inference.predictor, nnunetv2"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"# installing voxtell{'==' + version if version else ''} and torch=={torch_pin} into {venv}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    spec = f"voxtell=={version}" if version else "voxtell"
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", f"torch=={torch_pin}", spec],
                          capture_output=True, text=True)
    if proc.returncode or subprocess.run(probe, capture_output=True).returncode:
        sys.exit("could not install the released voxtell package (offline, or no matching wheel):\n"
                 + proc.stderr[-3000:])
    return python


def make_inputs(work: Path, patch: int, max_prompts: int, seed: int = 0) -> tuple[Path, Path, Path]:
    """Model folder (voxtell-v1 architecture, random weights), a NIfTI of one patch, embeddings."""
    sys.path.insert(0, str(ROOT))
    import nibabel as nib
    import numpy as np
    import torch

    from voxtell.model import ModelMeta, VoxTellNetwork, get_preset, save_model_dir

    torch.manual_seed(seed)
    config = get_preset("voxtell-v1", patch_size=(patch,) * 3)
    with torch.device("meta"):
        network = VoxTellNetwork(config)
    network = network.to_empty(device="cpu")
    with torch.no_grad():  # He-like scales keep activations O(1), so masks are not all-empty
        for name, p in network.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            elif p.ndim == 1:
                p.normal_(0, 0.05)
            else:
                p.normal_(0, (2.0 / max(1, p[0].numel())) ** 0.5)
    model = work / "model"
    save_model_dir(network, config, model, ModelMeta(model_id="bench-random", preset="voxtell-v1",
                                                     text_encoder="bench", embedding_dim=config.text_embedding_dim))
    del network
    rng = np.random.default_rng(seed)
    grid = np.indices((patch,) * 3).sum(0)
    data = (400 * np.sin(grid / 9.0) + rng.normal(0, 50, (patch,) * 3) + 1000).astype(np.int16)  # no zeros: no crop
    image = work / "image.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0])), image)  # RAS: array axes are x, y, z
    embeddings = work / "embeddings.npy"
    np.save(embeddings, rng.normal(0, 1, (max_prompts, config.text_embedding_dim)).astype(np.float32))
    return model, image, embeddings


def run(python: str, script: str, args: dict, env: dict) -> dict:
    # run from a neutral folder: with this checkout as cwd, ``-c`` would import our voxtell package
    proc = subprocess.run([python, "-c", script, json.dumps(args)], capture_output=True, text=True, env=env,
                          cwd=tempfile.gettempdir())
    if proc.returncode:
        sys.exit(f"run failed ({python}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--reps", type=int, default=1, help="alternating runs per prompt count")
    parser.add_argument("--patch", type=int, default=192, choices=[192],
                        help="the released model hard-codes its 192^3 token grid")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--venv", type=Path, help="where to install the released package (default: a temp folder)")
    parser.add_argument("--keep-venv", action="store_true", help="keep --venv for the next run")
    parser.add_argument("--released-version", default="0.1.2")
    parser.add_argument("--torch", default="2.13.0", help="torch pin for the released venv (a CPU wheel)")
    parser.add_argument("--module-path", action="store_true",
                        help="also run ours with fast_inference off (the plain fp32 module forward) and compare")
    args = parser.parse_args()

    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="voxtell-bench-ref-"))
    venv = args.venv or tmp / "released-venv"
    try:
        python = ensure_released_env(venv, args.released_version, args.torch)
        model, image, emb_path = make_inputs(tmp, args.patch, max(args.prompts))
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        print(f"# one {args.patch}^3 patch, voxtell-v1 architecture with random weights, {args.threads} threads, "
              f"{os.cpu_count()} CPUs; released voxtell {args.released_version} vs this checkout", flush=True)
        for n in args.prompts:
            emb = tmp / f"emb{n}.npy"
            np.save(emb, np.load(emb_path)[:n])
            common = {"model": str(model), "image": str(image), "embeddings": str(emb), "threads": args.threads,
                      "root": str(ROOT)}
            rows = {"released": [], "ours": [], "module": []}
            for rep in range(args.reps):
                rows["released"].append(run(str(python), RELEASED_RUNNER, {**common, "out": str(tmp / "rel.npy")}, env))
                rows["ours"].append(run(sys.executable, OURS_RUNNER, {**common, "fast": True, "out": str(tmp / "ours.npy")}, env))
                if args.module_path:
                    rows["module"].append(run(sys.executable, OURS_RUNNER,
                                              {**common, "fast": False, "out": str(tmp / "module.npy")}, env))
            rel = np.load(tmp / "rel.npy").transpose(0, 3, 2, 1)  # (P, z, y, x) -> (P, x, y, z)
            ours = np.load(tmp / "ours.npy")
            best = {k: min(v, key=lambda r: r["predict_s"]) for k, v in rows.items() if v}
            peak = {k: max(r["peak_rss_gib"] for r in v) for k, v in rows.items() if v}
            agree = float((ours == rel).mean())
            print(f"prompts {n}: released {best['released']['predict_s']:.1f} s, peak RSS {peak['released']:.2f} GiB "
                  f"(load {best['released']['load_s']:.1f} s) | ours {best['ours']['predict_s']:.1f} s, peak RSS "
                  f"{peak['ours']:.2f} GiB (load {best['ours']['load_s']:.1f} s) | speed-up "
                  f"{best['released']['predict_s'] / best['ours']['predict_s']:.2f}x | memory "
                  f"{peak['ours'] / peak['released']:.2f} of released | voxels equal {100 * agree:.4f} % "
                  f"(foreground: ours {ours.mean():.3f}, released {rel.mean():.3f}) | all runs "
                  f"{[round(r['predict_s'], 1) for r in rows['released']]} vs {[round(r['predict_s'], 1) for r in rows['ours']]}",
                  flush=True)
            if rows["module"]:
                module = np.load(tmp / "module.npy")
                print(f"prompts {n}: module path {best['module']['predict_s']:.1f} s, peak {peak['module']:.2f} GiB; "
                      f"voxels equal ours/module {100 * float((ours == module).mean()):.4f} %, "
                      f"module/released {100 * float((module == rel).mean()):.4f} %", flush=True)
    finally:
        if not args.keep_venv:
            shutil.rmtree(venv, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
