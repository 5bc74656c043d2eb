"""Training throughput of the `small` preset on this machine (not collected by pytest).

Prints wall and CPU seconds per optimizer step (batch B, K prompts per patch) and the
implied steps in a 15-minute budget. On a shared CPU, wall >> CPU time means contention.

    .venv/bin/python tests/bench/bench_train.py --steps 5 --batch-size 2 --prompts 3 --threads 2
    python tests/bench/bench_train.py --device cuda --amp --steps 20      # GPU, bf16 autocast
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (as training does on CUDA / bf16 CPUs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from voxtell.model import VoxTellNetwork, get_preset
    from voxtell.training.losses import deep_supervision_loss

    cfg = get_preset(args.preset, deep_supervision=True)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    net = VoxTellNetwork(cfg).train().to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(args.batch_size, 1, *cfg.patch_size, device=dev)
    t = torch.randn(args.batch_size, args.prompts, cfg.text_embedding_dim, device=dev)
    y = (torch.rand(args.batch_size, args.prompts, *cfg.patch_size, device=dev) > 0.9).float()
    walls, cpus = [], []
    for i in range(args.steps + 2):
        w0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.amp):
            loss, _ = deep_supervision_loss(net(x, t), y)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize(dev)
        if i > 1:  # two warm-up steps (cuDNN autotuning, allocator)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    wall, cpu = sum(walls) / len(walls), sum(cpus) / len(cpus)
    where = torch.cuda.get_device_name(dev) if cuda else f"cpu threads={args.threads}"
    print(f"preset={args.preset} B={args.batch_size} K={args.prompts} amp={args.amp} on {where}"
          + (f", peak {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB" if cuda else ""))
    print(f"wall {wall:.3f} s/step, cpu {cpu:.3f} s/step; steps in 15 min (wall): {int(900 / wall)}")


if __name__ == "__main__":
    main()
