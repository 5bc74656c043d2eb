"""Inference-only evaluation of ``VoxTellNetwork`` for speed and memory on the CPU.

Same parameters and the same mathematics as the module forward; only the evaluation
differs, so logits agree to float rounding (about 1e-6 of their scale) and masks to
> 99.9 % of voxels (``tests/test_model.py``, ``tests/bench/bench_vs_reference.py``):

- activations are channels-last 3-D, oneDNN's native layout: no reorders around every
  convolution, and on AVX2 its 3x3x3 convolutions run ~1.3x and its stride-2 and
  transposed convolutions 2.5-4x faster than on the default layout;
- instance norm (two-pass statistics, as PyTorch's) and the nonlinearity, and in residual
  blocks the residual sum, are applied in place in cache-sized chunks;
- a 3x3x3 convolution whose input and output widths match is computed slab by slab along
  the first spatial axis and written back into its input's storage (each slab keeps the
  original rows its successor needs), so a residual block holds two full-resolution
  tensors instead of three, and the decoder's skip terms replace the encoder features
  they come from;
- the image decoder runs one prompt at a time and reuses its buffers across prompts; a
  transposed convolution (kernel = stride) writes slab by slab into such a buffer;
- 2x2x2 average pooling is a sum of eight strided views (PyTorch's pooling kernel is ~10x
  slower on this layout).

Every function takes one patch (batch size 1); ``VoxTellNetwork`` loops over a batch.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["supported", "encode", "decode", "norm_act_", "conv_same_", "conv_transpose_into", "avg_pool"]

CL = torch.channels_last_3d
#: Rows (voxels) per chunk of the statistics and elementwise passes (fits the L2/L3 caches).
_CHUNK_ROWS = 1 << 16
#: Target size of one input slab of a slab-wise convolution.
_SLAB_BYTES = 48 * 1024**2


# ---------------------------------------------------------------------------- capability
def _block_ops(block: nn.Module) -> tuple[nn.Conv3d, nn.Module | None, nn.Module | None] | None:
    """(conv, norm, nonlin) of a ConvDropoutNormReLU in conv -> [dropout] -> [norm] -> [nonlin] order."""
    mods = [m for m in getattr(block, "all_modules", []) if not isinstance(m, nn.Dropout3d | nn.Dropout)]
    if not mods or type(mods[0]) is not nn.Conv3d:
        return None
    conv, rest = mods[0], mods[1:]
    norm = rest.pop(0) if rest and type(rest[0]) is nn.InstanceNorm3d else None
    act = rest.pop(0) if rest and type(rest[0]) in (nn.LeakyReLU, nn.ReLU) else None
    if rest or (norm is not None and norm.track_running_stats):
        return None
    return conv, norm, act


def supported(network: nn.Module) -> bool:
    """Whether every block of ``network`` has a form this module evaluates exactly."""
    enc = network.encoder
    blocks = list(enc.stem.convs) if enc.stem is not None else []
    for stage in enc.stages:
        for blk in stage.blocks:
            if type(blk).__name__ != "BasicBlockD" or blk.apply_stochastic_depth or blk.apply_se:
                return False
            blocks += [blk.conv1, blk.conv2]
            if isinstance(blk.skip, nn.Sequential):
                blocks += [m for m in blk.skip if not isinstance(m, nn.AvgPool3d)]
            if type(blk.nonlin2) not in (nn.LeakyReLU, nn.ReLU):
                return False
    for stage in network.decoder.stages:
        blocks += list(stage.convs)
    return all(_block_ops(b) is not None for b in blocks)


def _triple(v: int | Sequence[int]) -> tuple[int, ...]:
    return tuple(int(i) for i in v) if isinstance(v, (tuple, list)) else (int(v),) * 3


def _slope(act: nn.Module | None) -> float | None:
    if act is None:
        return None
    return float(act.negative_slope) if isinstance(act, nn.LeakyReLU) else 0.0


# ---------------------------------------------------------------------------- primitives
def _rows(x: Tensor) -> Tensor:
    """(voxels, channels) view of a channels-last patch (batch size 1)."""
    return x.permute(0, 2, 3, 4, 1).view(-1, x.shape[1])


def norm_act_(x: Tensor, norm: nn.Module | None, slope: float | None, residual: Tensor | None = None) -> Tensor:
    """``x <- act(norm(x) + residual)`` in place; ``slope`` None: no nonlinearity, 0: ReLU.

    Instance-norm statistics are two-pass (mean, then the mean squared deviation), with
    float32 chunk sums accumulated in float64: as accurate as PyTorch's kernel, and ~4x
    faster than ``torch.var_mean`` on channels-last tensors.
    """
    flat = _rows(x)
    m, c = flat.shape
    res = _rows(residual) if residual is not None else None
    scale = shift = None
    if norm is not None:
        total = torch.zeros(c, dtype=torch.float64)
        for i in range(0, m, _CHUNK_ROWS):
            total += flat[i:i + _CHUNK_ROWS].sum(0)
        mean = (total / m).to(flat.dtype)
        sq = torch.zeros(c, dtype=torch.float64)
        buf = torch.empty(min(_CHUNK_ROWS, m), c, dtype=flat.dtype)
        for i in range(0, m, _CHUNK_ROWS):
            part = flat[i:i + _CHUNK_ROWS]
            dev = buf[:part.shape[0]]
            torch.sub(part, mean, out=dev).mul_(dev)
            sq += dev.sum(0)
        scale64 = torch.rsqrt(sq / m + norm.eps)
        if norm.affine:
            scale64 = scale64 * norm.weight.detach().double()
        shift64 = -mean.double() * scale64
        if norm.affine:
            shift64 = shift64 + norm.bias.detach().double()
        scale, shift = scale64.to(flat.dtype), shift64.to(flat.dtype)
    for i in range(0, m, _CHUNK_ROWS):
        part = flat[i:i + _CHUNK_ROWS]
        if scale is not None:
            torch.addcmul(shift, part, scale, out=part)
        if res is not None:
            part.add_(res[i:i + _CHUNK_ROWS])
        if slope is not None:
            F.leaky_relu_(part, slope) if slope else F.relu_(part)
    return x


def _slab_rows(x: Tensor) -> int:
    per_row = x.shape[1] * x.shape[3] * x.shape[4] * x.element_size()
    return max(1, _SLAB_BYTES // per_row)


def conv_same_(x: Tensor, weight: Tensor, bias: Tensor | None, add: Tensor | None = None) -> Tensor:
    """``x <- conv3d(x, weight, bias, stride 1, same padding) [+ add]``, written into ``x``.

    Needs as many output as input channels and odd kernels.
    """
    if weight.shape[0] != x.shape[1] or weight.shape[1] != x.shape[1]:
        raise ValueError(f"conv_same_ needs a square weight, got {tuple(weight.shape)} for {x.shape[1]} channels")
    return conv_slabs(x, weight, bias, x, add)


def conv_slabs(x: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor, add: Tensor | None = None) -> Tensor:
    """``out <- conv3d(x, weight, bias, stride 1, same padding) [+ add]``; ``out`` may be ``x``.

    The first axis is processed in slabs that read ``x`` directly; a slab's output is
    written only after the next slab has been computed (which reads its last rows), so at
    most two output slabs are held besides ``x`` and ``out``. Writing into a channels-last
    ``out`` also gives channels-last results where oneDNN would not (one input channel).
    """
    r0, r1, r2 = (k // 2 for k in weight.shape[2:])
    depth = x.shape[2]
    step = max(_slab_rows(out), r0)
    pending: tuple[int, int, Tensor] | None = None  # an output slab not yet written back
    for a in range(0, depth, step):
        b = min(a + step, depth)
        lo, hi = max(a - r0, 0), min(b + r0, depth)
        window = x[:, :, lo:hi]
        if lo > a - r0 or hi < b + r0:  # at the volume's ends: zero rows, as the padding would be
            window = F.pad(window, (0, 0, 0, 0, lo - (a - r0), b + r0 - hi))
        result = F.conv3d(window, weight, bias, padding=(0, r1, r2))
        if add is not None:
            result += add[:, :, a:b]
        if pending is not None:
            out[:, :, pending[0]:pending[1]] = pending[2]
        pending = (a, b, result)
    if pending is not None:
        out[:, :, pending[0]:pending[1]] = pending[2]
    return out


def conv_transpose_into(x: Tensor, convt: nn.ConvTranspose3d, out: Tensor) -> Tensor:
    """``out <- convt(x)`` slab by slab (kernel = stride, so slabs need no halo)."""
    stride = convt.stride[0]
    if tuple(convt.kernel_size) != tuple(convt.stride) or convt.padding != (0, 0, 0):
        out.copy_(convt(x))
        return out
    step = max(1, _slab_rows(out) // stride)
    for a in range(0, x.shape[2], step):
        b = min(a + step, x.shape[2])
        out[:, :, a * stride:b * stride] = F.conv_transpose3d(x[:, :, a:b], convt.weight, convt.bias, convt.stride)
    return out


def avg_pool(x: Tensor, pool: nn.AvgPool3d) -> Tensor:
    """Average pooling; 2x2x2/stride 2 as a sum of eight strided views (same summation order)."""
    k, s = _triple(pool.kernel_size), _triple(pool.stride)
    if k != (2, 2, 2) or s != (2, 2, 2) or any(d % 2 for d in x.shape[2:]) or _triple(pool.padding) != (0, 0, 0):
        return pool(x)
    _, c, d, h, w = x.shape
    v = x.permute(0, 2, 3, 4, 1).view(1, d // 2, 2, h // 2, 2, w // 2, 2, c)
    out = v[:, :, 0, :, 0, :, 0].clone()
    for i, j, k_ in [(0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)]:
        out += v[:, :, i, :, j, :, k_]
    out *= 0.125
    return out.permute(0, 4, 1, 2, 3)


def _conv(x: Tensor, conv: nn.Conv3d) -> Tensor:
    """A convolution with a channels-last result."""
    if x.shape[1] == 1 and _same_geometry(conv):  # the stem: oneDNN answers one channel in NCDHW
        return _single_channel_conv(x, conv.weight, conv.bias)
    y = F.conv3d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return y if y.is_contiguous(memory_format=CL) else y.contiguous(memory_format=CL)


def _single_channel_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Same-padded convolution of a one-channel patch as slabs of (voxels, taps) @ (taps, out).

    The product's rows are channels-last output rows, so no layout change follows; as fast
    as oneDNN's own (NCDHW) convolution, which would then need a transposing copy.
    """
    c_out, k = weight.shape[0], weight.shape[2:]
    r = [v // 2 for v in k]
    _, _, d, h, w = x.shape
    out = torch.empty((1, c_out, d, h, w), dtype=x.dtype, memory_format=CL)
    flat = _rows(out)
    padded = F.pad(x, (r[2], r[2], r[1], r[1], r[0], r[0]))[0, 0]
    taps = weight.reshape(c_out, -1).t().contiguous()
    step = max(1, _SLAB_BYTES // (h * w * math.prod(k) * x.element_size()))
    for a in range(0, d, step):
        b = min(a + step, d)
        cols = padded[a:b + 2 * r[0]].unfold(0, k[0], 1).unfold(1, k[1], 1).unfold(2, k[2], 1)
        rows = flat[a * h * w:b * h * w]
        if bias is None:
            torch.mm(cols.reshape(-1, taps.shape[0]), taps, out=rows)
        else:
            torch.addmm(bias, cols.reshape(-1, taps.shape[0]), taps, out=rows)
    return out


def _block(block: nn.Module, x: Tensor, in_place: bool = False) -> Tensor:
    """A ConvDropoutNormReLU; ``in_place``: ``x`` may be overwritten (same width, stride 1)."""
    conv, norm, act = _block_ops(block)  # type: ignore[misc]
    if in_place and _is_same(conv, x):
        y = conv_same_(x, conv.weight, conv.bias)
    else:
        y = _conv(x, conv)
    return norm_act_(y, norm, _slope(act))


def _same_geometry(conv: nn.Conv3d) -> bool:
    """Stride 1, odd kernel, same padding: the output grid is the input grid."""
    return (tuple(conv.stride) == (1, 1, 1) and conv.groups == 1 and tuple(conv.dilation) == (1, 1, 1)
            and tuple(conv.padding) == tuple(k // 2 for k in conv.kernel_size)
            and all(k % 2 for k in conv.kernel_size))


def _is_same(conv: nn.Conv3d, x: Tensor, in_channels: int | None = None) -> bool:
    """Whether ``conv`` (reading ``in_channels``, default all of its inputs) can run in place on ``x``."""
    c_in = conv.in_channels if in_channels is None else in_channels
    return c_in == conv.out_channels == x.shape[1] and _same_geometry(conv)


def _pooled_projection(skip: nn.Sequential, x: Tensor) -> Tensor | None:
    """ResNet-D skip ``norm(conv1x1(avgpool_k(x)))`` as one stride-k convolution, or None.

    Both maps are linear, so the pair is a k x k x k convolution whose taps are the 1x1
    weight / k^3: one oneDNN call instead of a pooling pass (slow on channels-last).
    """
    if len(skip) != 2 or not isinstance(skip[0], nn.AvgPool3d):
        return None
    pool, ops = skip[0], _block_ops(skip[1])
    k, st = _triple(pool.kernel_size), _triple(pool.stride)
    if ops is None or k != st or _triple(pool.padding) != (0, 0, 0) or pool.ceil_mode:
        return None
    conv, norm, act = ops
    if tuple(conv.kernel_size) != (1, 1, 1) or tuple(conv.stride) != (1, 1, 1) or conv.groups != 1:
        return None
    weight = (conv.weight / math.prod(k)).expand(-1, -1, *k).contiguous()
    y = F.conv3d(x, weight, conv.bias, stride=tuple(k))
    y = y if y.is_contiguous(memory_format=CL) else y.contiguous(memory_format=CL)
    return norm_act_(y, norm, _slope(act))


def _residual_block(blk: nn.Module, x: Tensor) -> Tensor:
    """BasicBlockD: act(norm2(conv2(act(norm1(conv1(x))))) + skip(x)); ``x`` is left intact."""
    residual = x
    if isinstance(blk.skip, nn.Sequential):
        fused = _pooled_projection(blk.skip, x)
        if fused is not None:
            residual = fused
        else:
            for op in blk.skip:
                residual = avg_pool(residual, op) if isinstance(op, nn.AvgPool3d) else _block(op, residual)
    h = _block(blk.conv1, x)
    conv2, norm2, _ = _block_ops(blk.conv2)  # type: ignore[misc]
    h = conv_same_(h, conv2.weight, conv2.bias) if _is_same(conv2, h) else _conv(h, conv2)
    return norm_act_(h, norm2, _slope(blk.nonlin2), residual=residual)


# ---------------------------------------------------------------------------- encoder
def encode(network: nn.Module, image: Tensor) -> list[Tensor]:
    """Encoder features of one patch (1, C, *patch), channels-last."""
    enc = network.encoder
    x = image.contiguous(memory_format=CL)
    if enc.stem is not None:
        for block in enc.stem.convs:
            x = _block(block, x)
    features = []
    for stage in enc.stages:
        for blk in stage.blocks:
            x = _residual_block(blk, x)
        features.append(x)
    return features


# ---------------------------------------------------------------------------- decoder
def _with_maps(z: Tensor, probe: Tensor) -> Tensor:
    """concat(z, maps) with maps[g] = sum_c z[c] probe[g, c]; channels-last."""
    flat = _rows(z)
    joined = torch.cat((flat, flat @ probe.t()), dim=1)
    return joined.view(1, *z.shape[2:], joined.shape[1]).permute(0, 4, 1, 2, 3)


def _shared_terms(network: nn.Module, features: list[Tensor], consume: bool) -> tuple[Tensor, list, list]:
    """Stage 0's output (from the bottleneck only) and the skip halves of later stages' first convs."""
    dec = network.decoder
    up = dec.transpconvs[0](features[-1])
    stage0 = torch.cat((up, features[-2]), dim=1)
    del up
    for i, block in enumerate(dec.stages[0].convs):
        stage0 = _block(block, stage0, in_place=i > 0)
    if consume:
        features[-1] = features[-2] = None  # type: ignore[call-overload]
    skip_terms: list[Tensor | None] = [None]
    up_weights: list[Tensor | None] = [None]
    for s in range(1, len(dec.stages)):
        conv = dec.stages[s].convs[0].conv
        c_up = dec.transpconvs[s].out_channels
        feat = features[-(s + 2)]
        skip_w = conv.weight[:, c_up:]
        if skip_w.shape[0] == skip_w.shape[1] == feat.shape[1] and _is_same(conv, feat, conv.out_channels):
            target = feat if consume else feat.clone(memory_format=CL)
            skip_terms.append(conv_same_(target, skip_w, conv.bias))
        else:
            skip_terms.append(F.conv3d(feat, skip_w, conv.bias, conv.stride, conv.padding))
        if consume:
            features[-(s + 2)] = None  # type: ignore[call-overload]
        up_weights.append(conv.weight[:, :c_up].contiguous())
    return stage0, skip_terms, up_weights


def decode(network: nn.Module, features: list[Tensor], text: Tensor, deep: bool, consume: bool) -> list[Tensor]:
    """Logits (1, P, *scale) per decoder scale, highest resolution first (one entry unless ``deep``).

    ``text`` is (1, P, D). With ``consume`` the entries of ``features`` are overwritten and
    released as they are used.
    """
    cfg = network.config
    dec = network.decoder
    n_up = len(dec.stages)
    g = cfg.num_heads
    guidance = network.guidance(features[cfg.decoder_layer], text)  # each (1, P, width)
    stage0, skip_terms, up_weights = _shared_terms(network, features, consume)
    n_prompts = text.shape[1]
    buffers: dict[int, Tensor] = {}
    scales: list[list[Tensor]] = [[] for _ in range(n_up)]  # index 0: full resolution
    for p in range(n_prompts):
        z = stage0
        x: Tensor | None = None
        for s in range(n_up):
            if s > 0:
                if s not in buffers:
                    shape = (1, dec.transpconvs[s].out_channels, *skip_terms[s].shape[2:])
                    buffers[s] = torch.empty(shape, dtype=z.dtype).contiguous(memory_format=CL)
                y = conv_transpose_into(x, dec.transpconvs[s], buffers[s])
                x = None
                first, *more = dec.stages[s].convs
                _, norm, act = _block_ops(first)  # type: ignore[misc]
                conv_same_(y, up_weights[s], None, add=skip_terms[s])
                norm_act_(y, norm, _slope(act))
                for block in more:
                    y = _block(block, y, in_place=True)
                z = y
            probe = guidance[n_up - 1 - s][0, p]  # guidance MLP i serves decoder scale i (0 = full res)
            if s == n_up - 1:
                logits = _rows(z) @ probe
                scales[0].append(logits.view(*z.shape[2:]))
                break
            x = _with_maps(z, probe.view(g, -1))
            if deep:
                scales[n_up - 1 - s].append(dec.seg_layers[s](x).reshape(x.shape[2:]))
    del buffers, skip_terms, stage0
    outs = [torch.stack(scale)[None] for scale in scales if scale]
    return outs if deep else outs[:1]

