"""``voxtell export-onnx``: export a model folder's image network to ONNX."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export-onnx", help="export the image network to ONNX", description=__doc__)
    p.add_argument("model", type=Path, help="model folder (plans.json + fold_0/checkpoint_final.pth)")
    p.add_argument("-o", "--output", type=Path, help="output .onnx (default: MODEL/onnx/voxtell_<precision>.onnx)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voxtell.model.onnx_export import export_onnx

    result = export_onnx(args.model, args.output, precision=args.precision, opset=args.opset)
    print(result.path)
    return 0
