"""Benchmark: seconds per patch and peak RSS of the VoxTell network on this machine's CPU.

For each preset (tiny, small, voxtell-v1; random weights) and 1 and 4 prompts, one
subprocess builds the network, runs ``encode`` + ``decode`` on one patch of the preset's
size under ``torch.inference_mode`` and reports the time of the patch (median of a few
repeats for the small presets, one run for voxtell-v1) and its own peak RSS (which
includes the weights: ~1.7 GiB for voxtell-v1).

    .venv/bin/python tests/bench/bench_model.py [--presets tiny small voxtell-v1] [--prompts 1 4]
        [--threads N] [--prompt-chunk K]

For scale: the released implementation needs about 48 s and 9 GiB for one 192³ patch with
2 prompts on a 2-core machine like this one (5.06 / 6.62 / 9.75 TFLOP for 1 / 2 / 4 prompts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time


def count_tflop(config, prompts: int) -> float:
    """FLOPs of one patch (PyTorch's FLOP counter on the meta device: no memory, no time)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from voxtell.model.network import VoxTellNetwork

    with torch.device("meta"):
        net = VoxTellNetwork(config).eval()
        image = torch.empty(1, 1, *config.patch_size)
        text = torch.empty(1, prompts, config.text_embedding_dim)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(image, text)
    return counter.get_total_flops() / 1e12


def run_case(preset: str, prompts: int, threads: int, repeats: int, prompt_chunk: int | None) -> dict:
    import torch

    from voxtell.model.config import get_preset
    from voxtell.model.network import VoxTellNetwork

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = get_preset(preset)
    with torch.device("meta"):
        net = VoxTellNetwork(config, prompt_chunk=prompt_chunk)
    # Random weights without the cost of the default initialisers on 440 M parameters.
    net = net.to_empty(device="cpu")
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.02)
    net.eval()
    image = torch.randn(1, 1, *config.patch_size)
    text = torch.randn(1, prompts, 1, config.text_embedding_dim)
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = net.decode(net.encode(image), text)
            times.append(time.perf_counter() - t0)
            assert out.shape == (1, prompts, *config.patch_size)
            del out
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"tflop": count_tflop(config, prompts), "preset": preset, "prompts": prompts, "patch": list(config.patch_size), "threads": threads,
            "seconds_per_patch": sorted(times)[len(times) // 2], "runs": len(times),
            "peak_rss_gib": peak_kib / 1024**2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "voxtell-v1"])
    parser.add_argument("--prompts", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--prompt-chunk", type=int, default=None)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()

    if args.case:
        preset, prompts = args.case.rsplit(":", 1)
        repeats = 1 if preset == "voxtell-v1" else 3
        print(json.dumps(run_case(preset, int(prompts), args.threads, repeats, args.prompt_chunk)))
        return

    print(f"# VoxTell network benchmark: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch threads {args.threads}")
    print(f"{'preset':<12}{'patch':>8}{'prompts':>9}{'TFLOP':>8}{'s/patch':>10}{'peak RSS GiB':>14}")
    for preset in args.presets:
        for prompts in args.prompts:
            cmd = [sys.executable, __file__, "--case", f"{preset}:{prompts}", "--threads", str(args.threads)]
            if args.prompt_chunk:
                cmd += ["--prompt-chunk", str(args.prompt_chunk)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                print(f"{preset:<12} prompts={prompts} FAILED:\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{preset:<12}{r['patch'][0]:>7}³{prompts:>9}{r['tflop']:>8.3f}{r['seconds_per_patch']:>10.2f}"
                  f"{r['peak_rss_gib']:>14.2f}", flush=True)


if __name__ == "__main__":
    main()
