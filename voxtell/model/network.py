"""The VoxTell network: residual encoder, prompt decoder and guided image decoder.

Parameter names and shapes equal the released checkpoint's (including its aliases:
``decoder.encoder.*`` is the encoder again, ``all_modules.0/1`` repeat ``conv``/``norm``),
so released weights load strictly and our checkpoints load in the released code.

The forward is organised for throughput rather than mirrored from the released code:
one encoder pass per patch (``encode``), then all prompts through the prompt decoder and
the image decoder as one folded batch (``decode``). Two exact shortcuts:

* the first decoder stage sees only the prompt-independent bottleneck, so it runs once
  per patch and only its guidance maps differ per prompt;
* every decoder block's first convolution acts on ``concat(upsampled, skip)``; being
  linear in its input channels, the skip half is computed once per patch and added to
  the per-prompt upsampled half.

Prompts are processed in chunks (``prompt_chunk``) to bound memory at full resolution.

Without autograd on the CPU (float32, no autocast, not tracing or exporting), ``encode``
and ``decode`` hand the work to ``voxtell.model.fast_forward``: the same maths evaluated
channels-last, in place and one patch and prompt at a time (``fast_inference=False`` turns
this off).
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dynamic_network_architectures.building_blocks.residual import BasicBlockD
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from dynamic_network_architectures.building_blocks.simple_conv_blocks import StackedConvBlocks

from voxtell.model import fast_forward
from voxtell.model.config import NetworkConfig
from voxtell.model.errors import EmbeddingDimensionError, ModelInputError

__all__ = ["VoxTellNetwork", "sinusoidal_position_encoding_3d", "DEFAULT_CHUNK_BYTES"]

log = logging.getLogger(__name__)

#: Budget for full-resolution decoder activations of one prompt chunk when ``prompt_chunk``
#: is None (two C×patch float tensors live at once per prompt).
DEFAULT_CHUNK_BYTES = 2 * 1024**3


def sinusoidal_position_encoding_3d(grid: Sequence[int], channels: int) -> Tensor:
    """Fixed 3-D sinusoidal encoding, (x·y·z, 1, channels), x slowest.

    Each axis gets ceil(channels/6)·2 channels of interleaved (sin, cos) pairs at
    frequencies 10000^(-2i/n); the three blocks are concatenated and cut to ``channels``
    (the scheme of the ``positional-encodings`` package used by the released model).
    """
    x, y, z = (int(v) for v in grid)
    per_axis = int(math.ceil(channels / 6) * 2)
    if per_axis % 2:
        per_axis += 1
    inv_freq = 1.0 / (10000 ** (torch.arange(0, per_axis, 2, dtype=torch.float32) / per_axis))

    def axis(n: int) -> Tensor:
        angles = torch.arange(n, dtype=torch.float32)[:, None] * inv_freq[None, :]
        return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2, -1)  # (n, per_axis)

    emb = torch.zeros(x, y, z, 3 * per_axis)
    emb[..., :per_axis] = axis(x)[:, None, None, :]
    emb[..., per_axis:2 * per_axis] = axis(y)[None, :, None, :]
    emb[..., 2 * per_axis:] = axis(z)[None, None, :, :]
    return emb[..., :channels].reshape(x * y * z, 1, channels).contiguous()


def _norm_act(block: nn.Module, y: Tensor) -> Tensor:
    """Norm + nonlinearity of a ConvDropoutNormReLU block on its conv output ``y``.

    Without autograd, instance norm is applied in place, which saves one full-resolution
    activation per prompt (~0.9 GB at 192³); with autograd the modules run as usual.
    """
    norm = block.norm
    if (y.requires_grad or y.dtype != torch.float32 or type(norm) is not nn.InstanceNorm3d
            or norm.track_running_stats):
        return block.nonlin(norm(y))
    var, mean = torch.var_mean(y, dim=tuple(range(2, y.ndim)), keepdim=True, correction=0)
    scale = torch.rsqrt(var + norm.eps)
    shape = (1, -1) + (1,) * (y.ndim - 2)
    if norm.affine:
        scale = scale * norm.weight.view(shape)
        shift = norm.bias.view(shape) - mean * scale
    else:
        shift = -mean * scale
    return block.nonlin(y.mul_(scale).add_(shift))


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    """Linear·GELU(erf)·Linear, parameter names ``0`` and ``2`` as released."""
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.GELU(), nn.Linear(n_hidden, n_out))


def folded_cross_attention(mha: nn.MultiheadAttention, queries: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """``mha(queries, keys, values)`` (eval mode, no masks) without projecting the tokens.

    Per head h, ``q_h . (W_kh k_j + b_kh) = (W_kh^T q_h) . k_j + q_h . b_kh`` and, since the
    attention weights a_j sum to 1, ``sum_j a_j (W_vh v_j + b_vh) = W_vh (sum_j a_j v_j) + b_vh``.
    So the cost is P x heads x S x Q instead of 2 x S x Q^2 for the key and value
    projections: ~170 GFLOP less per 192^3 patch for a few prompts (S = 1728, Q = 2048).
    """
    p, b, q = queries.shape
    h = mha.num_heads
    dh = q // h
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None, None, None)
    query = F.linear(queries, w_q, b_q).view(p, b, h, dh) * dh ** -0.5
    folded = torch.einsum("pbhd,hdq->bhpq", query, w_k.view(h, dh, q))
    scores = torch.bmm(folded.reshape(b, h * p, q), keys.permute(1, 2, 0)).view(b, h, p, -1)
    if b_k is not None:
        scores = scores + torch.einsum("pbhd,hd->bhp", query, b_k.view(h, dh))[..., None]
    weights = torch.softmax(scores, dim=-1)
    pooled = torch.bmm(weights.view(b, h * p, -1), values.transpose(0, 1)).view(b, h, p, q)
    heads = torch.einsum("bhpq,hdq->pbhd", pooled, w_v.view(h, dh, q))
    if b_v is not None:
        heads = heads + b_v.view(h, dh)
    return mha.out_proj(heads.reshape(p, b, q))


class PromptDecoderLayer(nn.Module):
    """Pre-norm DETR decoder layer without self-attention.

    ``self_attn`` and ``norm1`` exist only so released weights load; the released forward
    never applies them, which makes every prompt independent of the others in its batch.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, fold: bool = False) -> Tensor:
        """queries (P, B, Q); keys = tokens + pos and values = tokens, (S, B, Q).

        ``fold`` (inference): evaluate the attention with the key and value projections
        folded into the few queries (``folded_cross_attention``).
        """
        if fold:
            attended = folded_cross_attention(self.multihead_attn, self.norm2(queries), keys, values)
        else:
            attended = self.multihead_attn(self.norm2(queries), keys, values, need_weights=False)[0]
        queries = queries + self.dropout2(attended)
        hidden = self.dropout(F.relu(self.linear1(self.norm3(queries))))
        return queries + self.dropout3(self.linear2(hidden))


class PromptDecoder(nn.Module):
    """Stack of ``PromptDecoderLayer`` and a final LayerNorm (``transformer_decoder.*``)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            PromptDecoderLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, queries: Tensor, tokens: Tensor, pos: Tensor, fold: bool = False) -> Tensor:
        keys = tokens + pos
        for layer in self.layers:
            queries = layer(queries, keys, tokens, fold)
        return self.norm(queries)


class GuidedDecoder(nn.Module):
    """The image decoder's parameters (``decoder.*``); the forward lives in ``VoxTellNetwork``.

    Holds the encoder as a submodule, as the released decoder does, which is where the
    ``decoder.encoder.*`` aliases of the checkpoint come from.
    """

    def __init__(self, encoder: ResidualEncoder, config: NetworkConfig) -> None:
        super().__init__()
        self.encoder = encoder
        feats = config.features_per_stage
        n = config.n_stages
        g = config.num_heads
        norm_op = getattr(nn, config.norm_op)
        nonlin = getattr(nn, config.nonlin)
        stages, transpconvs, seg_layers = [], [], []
        for s in range(1, n):  # s-th up-stage, bottleneck first
            below = feats[-s] + (g if s > 1 else 0)  # the bottleneck carries no guidance maps
            skip = feats[-(s + 1)]
            stride = config.strides[-s]
            transpconvs.append(nn.ConvTranspose3d(below, skip, stride, stride, bias=config.conv_bias))
            stages.append(StackedConvBlocks(
                config.n_conv_per_stage_decoder[s - 1], nn.Conv3d, 2 * skip, skip,
                config.kernel_sizes[-(s + 1)], 1, config.conv_bias, norm_op, dict(config.norm_op_kwargs),
                None, None, nonlin, dict(config.nonlin_kwargs)))
            # One 1x1x1 head per stage; the last one (full resolution) is never applied.
            seg_layers.append(nn.Conv3d(skip + g, 1, 1, 1, 0, bias=True))
        self.stages = nn.ModuleList(stages)
        self.transpconvs = nn.ModuleList(transpconvs)
        self.seg_layers = nn.ModuleList(seg_layers)


class VoxTellNetwork(nn.Module):
    """Text-prompted 3-D segmentation network (released VoxTell architecture).

    ``forward(image (B,1,*patch), text (B,P,1,D) or (B,P,D))`` returns logits (B,P,*patch),
    or with ``config.deep_supervision`` a list of five, highest resolution first.
    ``prompt_chunk`` bounds how many prompts go through the image decoder at once
    (None: as many as fit in ``DEFAULT_CHUNK_BYTES`` of full-resolution activations).
    ``fast_inference`` lets no-grad CPU calls use ``fast_forward`` (see the module docstring).
    """

    def __init__(self, config: NetworkConfig, prompt_chunk: int | None = None, fast_inference: bool = True) -> None:
        super().__init__()
        self.config = config
        self.prompt_chunk = prompt_chunk
        self.fast_inference = fast_inference
        norm_op = getattr(nn, config.norm_op)
        nonlin = getattr(nn, config.nonlin)
        self.encoder = ResidualEncoder(
            config.input_channels, config.n_stages, list(config.features_per_stage), nn.Conv3d,
            [list(k) for k in config.kernel_sizes], [list(s) for s in config.strides],
            list(config.n_blocks_per_stage), config.conv_bias, norm_op, dict(config.norm_op_kwargs),
            None, None, nonlin, dict(config.nonlin_kwargs), BasicBlockD, None,
            return_skips=True, disable_default_stem=False, stem_channels=None)
        self.decoder = GuidedDecoder(self.encoder, config)
        q = config.query_dim
        self.project_bottleneck_embed = _mlp(config.token_channels, q, q)
        self.project_text_embed = _mlp(config.text_embedding_dim, config.text_hidden_dim, q)
        self.project_to_decoder_channels = nn.ModuleList(
            _mlp(q, config.project_to_decoder_hidden_dim, c) for c in config.guidance_channels())
        # Tokens are ordered (axis1, axis2, axis0) as in the released 'b c d h w -> (h w d)'.
        a0, a1, a2 = config.token_grid
        self.register_buffer("pos_embed", sinusoidal_position_encoding_3d((a1, a2, a0), q))
        self.transformer_decoder = PromptDecoder(
            q, config.transformer_heads, config.transformer_ffn, config.transformer_layers,
            config.transformer_dropout)
        # Channels-last pays from about 16 channels on; narrower presets (tiny, small) run faster as modules.
        self._fast_supported = config.features_per_stage[0] >= 16 and fast_forward.supported(self)

    # ------------------------------------------------------------------ public API
    @property
    def deep_supervision(self) -> bool:
        return self.config.deep_supervision

    def forward(self, image: Tensor, text_embeddings: Tensor) -> Tensor | list[Tensor]:
        # The features are ours alone here: let the decoder drop each skip once it is used.
        return self._decode(self.encode(image), text_embeddings, None, None, consume=True)

    def encode(self, image: Tensor) -> list[Tensor]:
        """Encoder features (one tensor per stage) of a batch of patches, reusable by ``decode``."""
        expected = (self.config.input_channels, *self.config.patch_size)
        if image.ndim != 5 or tuple(image.shape[1:]) != expected:
            raise ModelInputError(
                f"image patch must have shape (B, {', '.join(map(str, expected))}), got {tuple(image.shape)}; "
                "pad or crop to the model's patch size (the sliding-window predictor does this)")
        if self._use_fast(image):
            per_patch = [fast_forward.encode(self, image[i:i + 1]) for i in range(image.shape[0])]
            if len(per_patch) == 1:
                return per_patch[0]
            return [torch.cat(stage, dim=0) for stage in zip(*per_patch)]
        return list(self.encoder(image))

    def decode(self, features: Sequence[Tensor], text_embeddings: Tensor,
               prompt_chunk: int | None = None, deep_supervision: bool | None = None,
               consume_features: bool = False) -> Tensor | list[Tensor]:
        """Logits of every prompt for the patches whose ``encode`` output is ``features``.

        By default ``features`` is left intact, so one ``encode`` can serve several
        ``decode`` calls. With ``consume_features=True`` (and a list) its entries are set
        to None as soon as the decoder no longer needs them, which lowers peak memory by
        the size of the skips (~1.2 GB for voxtell-v1 at 192³).
        """
        if consume_features and isinstance(features, list):
            return self._decode(features, text_embeddings, prompt_chunk, deep_supervision, consume=True)
        return self._decode(list(features), text_embeddings, prompt_chunk, deep_supervision, consume=False)

    def _decode(self, features: list[Tensor], text_embeddings: Tensor, prompt_chunk: int | None,
                deep_supervision: bool | None, consume: bool) -> Tensor | list[Tensor]:
        cfg = self.config
        deep = cfg.deep_supervision if deep_supervision is None else deep_supervision
        batch = features[0].shape[0]
        text = self._check_text(text_embeddings, batch)
        if self._use_fast(features[0]):
            return self._decode_fast(features, text, deep, consume)
        n_prompts = text.shape[1]
        guidance = self.guidance(features[cfg.decoder_layer], text)  # list of (B, P, C_i[·G])

        shared = self._shared_decoder_terms(features, consume)
        chunk = self._chunk_size(n_prompts, prompt_chunk)
        pieces: list[list[Tensor]] = []
        for start in range(0, n_prompts, chunk):
            part = [g[:, start:start + chunk] for g in guidance]
            pieces.append(self._decode_chunk(shared, part, deep))
        del shared
        if len(pieces) == 1:
            outs = pieces[0]
        else:
            outs = [torch.cat(scale, dim=1) for scale in zip(*pieces)]
        return outs if deep else outs[0]

    def guidance(self, tokens: Tensor, text: Tensor) -> list[Tensor]:
        """Prompt decoder: per-prompt guidance vectors for every decoder scale.

        ``tokens`` (B, C, a0, a1, a2) is the encoder stage ``decoder_layer``; ``text`` (B, P, D).
        Returns ``project_to_decoder_channels[i]`` outputs, each (B, P, width_i).
        """
        b, c = tokens.shape[:2]
        memory = self.project_bottleneck_embed(tokens.permute(0, 3, 4, 2, 1))  # (B, a1, a2, a0, Q)
        memory = memory.reshape(b, -1, memory.shape[-1]).transpose(0, 1)  # (S, B, Q)
        queries = self.project_text_embed(text.transpose(0, 1))  # (P, B, Q)
        # Folding the attention pays while prompts are few compared with the query width.
        fold = (not torch.is_grad_enabled() and not self.training and not torch.jit.is_tracing()
                and not torch.onnx.is_in_onnx_export() and queries.shape[0] * 8 < self.config.query_dim)
        mask_embedding = self.transformer_decoder(queries, memory, self.pos_embed, fold).transpose(0, 1)  # (B, P, Q)
        return [proj(mask_embedding) for proj in self.project_to_decoder_channels]

    # ------------------------------------------------------------------ internals
    def _use_fast(self, x: Tensor) -> bool:
        """Whether this call may take ``fast_forward`` (inference on the CPU in float32 only)."""
        return (self.fast_inference and self._fast_supported and not torch.is_grad_enabled()
                and x.device.type == "cpu" and x.dtype == torch.float32
                and not torch.is_autocast_enabled("cpu") and not torch.jit.is_tracing()
                and not torch.onnx.is_in_onnx_export() and not torch.compiler.is_compiling())

    def _decode_fast(self, features: list[Tensor], text: Tensor, deep: bool, consume: bool) -> Tensor | list[Tensor]:
        batch = features[0].shape[0]
        if batch == 1:
            outs = fast_forward.decode(self, features, text, deep, consume)
        else:  # one patch at a time: same speed on a CPU, a batch's worth less memory
            per_patch = [fast_forward.decode(self, [f[i:i + 1] for f in features], text[i:i + 1], deep, consume)
                         for i in range(batch)]
            if consume:
                features[:] = [None] * len(features)
            outs = [torch.cat(scale, dim=0) for scale in zip(*per_patch)]
        return outs if deep else outs[0]

    def _check_text(self, text: Tensor, batch: int) -> Tensor:
        dim = self.config.text_embedding_dim
        if text.ndim == 4 and text.shape[2] == 1:
            text = text[:, :, 0]
        if text.ndim != 3:
            raise ModelInputError(
                f"text embeddings must have shape (B, P, 1, {dim}) or (B, P, {dim}), got {tuple(text.shape)}")
        if text.shape[-1] != dim:
            raise EmbeddingDimensionError(
                f"text embeddings have dimension {text.shape[-1]} but this network expects {dim}; "
                "embed the prompts with the model's own text encoder (see voxtell_model.json text_encoder)")
        if text.shape[0] != batch:
            raise ModelInputError(f"text embeddings are for {text.shape[0]} patches but the image batch has {batch}")
        if text.shape[1] < 1:
            raise ModelInputError("no prompts: text embeddings have P = 0")
        param = self.project_text_embed[0].weight
        return text.to(dtype=param.dtype, device=param.device)

    def _chunk_size(self, n_prompts: int, prompt_chunk: int | None) -> int:
        chunk = prompt_chunk if prompt_chunk is not None else self.prompt_chunk
        if chunk is None:
            per_prompt = 2 * self.config.features_per_stage[0] * math.prod(self.config.patch_size) * 4
            chunk = max(1, DEFAULT_CHUNK_BYTES // per_prompt)
        if chunk < 1:
            raise ModelInputError(f"prompt_chunk must be at least 1, got {chunk}")
        return min(int(chunk), n_prompts)

    def _shared_decoder_terms(self, features: list[Tensor], consume: bool) -> dict:
        """Prompt-independent parts of the decoder: stage 0's output and skip halves of the rest.

        With ``consume`` the entries of ``features`` are released as soon as they are used
        (after this, the decoder needs none of them).
        """
        dec = self.decoder
        # Stage 0 sees only the bottleneck: run it once for all prompts.
        up = dec.transpconvs[0](features[-1])
        stage0 = dec.stages[0](torch.cat((up, features[-2]), dim=1))
        del up
        if consume:
            features[-1] = features[-2] = None  # type: ignore[call-overload]
        skip_terms: list[Tensor | None] = [None]
        up_weights: list[Tensor | None] = [None]
        for s in range(1, len(dec.stages)):
            first = dec.stages[s].convs[0]
            c_up = dec.transpconvs[s].out_channels
            weight = first.conv.weight
            # conv(concat(up, skip)) = conv_up(up) + conv_skip(skip) + bias  (exact: linear)
            skip_terms.append(F.conv3d(features[-(s + 2)], weight[:, c_up:], first.conv.bias,
                                       first.conv.stride, first.conv.padding))
            up_weights.append(weight[:, :c_up].contiguous())
            if consume:
                features[-(s + 2)] = None  # type: ignore[call-overload]
        return {"stage0": stage0, "skip_terms": skip_terms, "up_weights": up_weights}

    def _decode_chunk(self, shared: dict, guidance: list[Tensor], deep: bool) -> list[Tensor]:
        """Image decoder for a chunk of prompts; returns [full-res, ...] each (B, Pc, *shape)."""
        dec = self.decoder
        n_up = len(dec.stages)
        b, pc = guidance[0].shape[:2]
        n = b * pc
        g = self.config.num_heads
        ds_outputs: list[Tensor] = []
        x: Tensor | None = None
        for s in range(n_up):
            if s == 0:
                z = shared["stage0"]  # (B, C, ...), identical for every prompt
            else:
                up = dec.transpconvs[s](x)
                x = None
                first = dec.stages[s].convs[0]
                y = F.conv3d(up, shared["up_weights"][s], None, first.conv.stride, first.conv.padding)
                del up
                y = y.view(b, pc, *y.shape[1:])
                y += shared["skip_terms"][s].unsqueeze(1)
                y = _norm_act(first, y.view(n, *y.shape[2:]))
                for block in list(dec.stages[s].convs)[1:]:
                    y = block(y)
                z = y  # (N, C, ...)
            spatial = z.shape[2:]
            c = z.shape[1]
            probe = guidance[n_up - 1 - s]  # guidance MLP i serves decoder scale i (0 = full res)
            if s == n_up - 1:
                t = probe.reshape(n, 1, c)
                logits = torch.bmm(t, z.reshape(n, c, -1)).view(b, pc, *spatial)
                return [logits, *reversed(ds_outputs)]
            if s == 0:  # z is shared: probe all prompts of a patch in one product
                maps = torch.bmm(probe.reshape(b, pc * g, c), z.reshape(b, c, -1))
                maps = maps.view(n, g, *spatial)
                z = z.unsqueeze(1).expand(b, pc, *z.shape[1:]).reshape(n, c, *spatial)
            else:
                maps = torch.bmm(probe.reshape(n, g, c), z.reshape(n, c, -1)).view(n, g, *spatial)
            x = torch.cat((z, maps), dim=1)
            del z, maps
            if deep:
                ds_outputs.append(dec.seg_layers[s](x).view(b, pc, *spatial))
        raise AssertionError("unreachable")  # pragma: no cover
