"""Building blocks of the three networks: conv blocks, (de-)patchifiers, transformer blocks, noise embedding.

Conv block as in Music2Latent: GroupNorm -> SiLU -> conv3x3 -> GroupNorm (scale/shift from the noise level
when conditioned) -> SiLU -> conv3x3 (zero-initialised) -> residual. Resolution changes between levels
use non-overlapping strided convolutions (kernel = stride = factor), and their transposes going up.
Transformer blocks are pre-LN; conditioned ones use adaLN-Zero (shift, scale, gate per token).

With `overlap=True` every resampling layer (stem, downs, ups, head) has a kernel twice its stride
(padding stride/2; 3 with padding 1 for stride 1), so neighbouring patches overlap. Non-overlapping
layers build every coarse token's patch on its own, which showed up in the decoded audio as a level
pattern repeating every token (16 frames in `small`) and at chunk edges (docs/architecture.md,
"Resampling overlap"). `widen_resampling_weight` maps a non-overlapping layer's weights onto the
overlapping geometry so that both compute the same function (fine-tuning starts from the old model).

`edge` says what every conv sees beyond a chunk's first and last frame (the time axis only; the frequency
axis keeps zeros): `"zeros"` (PyTorch's padding), `"replicate"` (the edge frame repeated; for a
transposed conv the edge input token is repeated, so the edge output rows get two patches like every
other row instead of one) or `"context"`: as replicate, but where the consistency model runs a pair, the
right chunk's convs see the left chunk's last frames on their left, as one conv over the pair would (the
left chunk still sees nothing of the right one: the pair stays causal). With zeros the decode's last
frames came out 5-16 dB too quiet, a click at every seam (docs/architecture.md, "Edge padding"). All
modes have the same parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def zero_biases(module: nn.Module) -> nn.Module:
    """Zero every conv/linear bias in `module`. PyTorch's default uniform biases add an input-independent
    offset that, at initialisation, drowns the input-dependent part of the features (measured: the
    encoder's summary embeddings varied 7x less across inputs), which starves the latents of signal."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and m.bias is not None:
            nn.init.zeros_(m.bias)
    return module


EDGE_MODES = ("zeros", "replicate", "context")


def check_edge(edge: str) -> str:
    if edge not in EDGE_MODES:
        raise ValueError(f"unknown edge padding {edge!r}; expected one of {EDGE_MODES}")
    return edge


def pad_time(x: torch.Tensor, p: int, chunks: int = 1, context: bool = False) -> torch.Tensor:
    """(N, C, F, T) -> (N, C, F, T + 2p): the first and last frame repeated p times on each side; with
    `context`, the rows grouped as `chunks` consecutive chunks of one example (row-major, as the consistency
    model's pair) and every chunk after the first gets the previous chunk's last p frames on its left."""
    first = x[..., :1].expand(*x.shape[:-1], p)
    last = x[..., -1:].expand(*x.shape[:-1], p)
    if context and chunks > 1:
        grouped = x.view(-1, chunks, *x.shape[1:])
        prev = grouped[:, :-1, ..., -p:]  # (B, chunks - 1, C, F, p)
        first = torch.cat([first.reshape(grouped.shape[:-1] + (p,))[:, :1], prev], dim=1).flatten(0, 1)
    return torch.cat([first, x, last], dim=-1)


class EdgeConv2d(nn.Conv2d):
    """nn.Conv2d with a choice of what it sees beyond the time edges (`edge`, see the module docstring);
    the frequency padding is PyTorch's zeros. The weights are an nn.Conv2d's whatever the mode."""

    def __init__(self, cin: int, cout: int, kernel_size: tuple[int, int], stride: tuple[int, int] | int = 1,
                 padding: tuple[int, int] = (0, 0), edge: str = "zeros") -> None:
        time_pad = padding[1] if check_edge(edge) != "zeros" else 0
        super().__init__(cin, cout, kernel_size, stride=stride, padding=(padding[0], padding[1] - time_pad))
        self.edge, self.time_pad = edge, time_pad

    def forward(self, x: torch.Tensor, chunks: int = 1) -> torch.Tensor:
        if self.time_pad:
            x = pad_time(x, self.time_pad, chunks, self.edge == "context")
        return super().forward(x)


class EdgeConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d (output size = input x stride) with a choice of edge (`edge`). Other than
    "zeros", the time axis is not cropped from a zero-padded edge: one input token is added on each side
    (the edge token repeated, or with "context" the previous chunk's last token on the left) and the middle
    is kept, so the edge output rows sum two patches, like all others."""

    def __init__(self, cin: int, cout: int, kernel_size: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int], edge: str = "zeros") -> None:
        time_crop = padding[1] if check_edge(edge) != "zeros" else 0
        super().__init__(cin, cout, kernel_size, stride=stride, padding=(padding[0], padding[1] - time_crop))
        self.edge, self.time_crop = edge, time_crop

    def forward(self, x: torch.Tensor, chunks: int = 1) -> torch.Tensor:
        if not self.time_crop:
            return super().forward(x)
        frames = x.shape[-1]
        y = super().forward(pad_time(x, 1, chunks, self.edge == "context"))
        start = self.stride[1] + self.time_crop
        return y[..., start:start + frames * self.stride[1]]


def group_count(channels: int, max_groups: int = 8) -> int:
    g = min(max_groups, channels)
    while channels % g:
        g -= 1
    return g


class NoiseEmbedding(nn.Module):
    """256-channel sinusoidal embedding of log(sigma)/4 (frequencies 1..1000, geometric), then an MLP."""

    def __init__(self, out_dim: int, channels: int = 256) -> None:
        super().__init__()
        half = channels // 2
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(1000.0), half)), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(channels, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, noise_input: torch.Tensor) -> torch.Tensor:
        args = noise_input.float()[..., None] * self.freqs
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))  # the sinusoids in fp32, the MLP in the weights' dtype


class ConvBlock(nn.Module):
    """Residual conv block at constant channel count, optionally conditioned on the noise level."""

    def __init__(self, channels: int, cond_dim: int | None = None, edge: str = "zeros") -> None:
        super().__init__()
        groups = group_count(channels)
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = EdgeConv2d(channels, channels, (3, 3), padding=(1, 1), edge=edge)
        self.norm2 = nn.GroupNorm(groups, channels, affine=cond_dim is None)
        self.conv2 = EdgeConv2d(channels, channels, (3, 3), padding=(1, 1), edge=edge)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.cond = nn.Linear(cond_dim, 2 * channels) if cond_dim else None
        if self.cond is not None:
            nn.init.zeros_(self.cond.weight)
            nn.init.zeros_(self.cond.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None, chunks: int = 1) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), chunks)
        h = self.norm2(h)
        if self.cond is not None:
            scale, shift = self.cond(F.silu(cond))[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return x + self.conv2(F.silu(h), chunks)


def resampling_geometry(stride: int, overlap: bool) -> tuple[int, int]:
    """(kernel, padding) of one dimension of a resampling layer. With overlap the padding is also where
    the non-overlapping layer's taps sit inside the wider kernel (`widen_resampling_weight`)."""
    if not overlap:
        return stride, 0
    if stride == 1:
        return 3, 1
    if stride % 2:
        raise ValueError(f"overlapping resampling needs even strides or 1, got {stride}")
    return 2 * stride, stride // 2


def resampling_conv(cin: int, cout: int, stride: tuple[int, int], overlap: bool, transpose: bool = False,
                    edge: str = "zeros") -> nn.Module:
    """Strided conv (down) or transposed conv (up) by `stride`, output size exactly input size / or x stride."""
    (kf, pf), (kt, pt) = (resampling_geometry(s, overlap) for s in stride)
    cls = EdgeConvTranspose2d if transpose else EdgeConv2d  # kernel = stride (no overlap): no edge to pad
    return cls(cin, cout, kernel_size=(kf, kt), stride=stride, padding=(pf, pt), edge=edge)


def widen_resampling_weight(weight: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Weights of a non-overlapping resampling layer (kernel = stride) placed into the overlapping
    layer's kernel (zeros elsewhere): the same output for conv and transposed conv alike, since in both
    the overlapping layer's tap k + padding meets the position tap k met."""
    (kf, pf), (kt, pt) = (resampling_geometry(s, True) for s in stride)
    out = weight.new_zeros(*weight.shape[:2], kf, kt)
    out[..., pf:pf + stride[0], pt:pt + stride[1]] = weight
    return out


class Patchifier(nn.Module):
    """Spectrogram chunk -> coarse feature grid, through resolution levels of conv blocks.

    `cross` features (one per level, same shape as that level's activations) are added at the start
    of each level; the activations after each level are returned as skips (index = level).
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], blocks: tuple[int, ...],
                 stem: tuple[int, int], down: tuple[tuple[int, int], ...], cond_dim: int | None = None,
                 overlap: bool = False, edge: str = "zeros") -> None:
        super().__init__()
        self.stem = resampling_conv(in_channels, channels[0], stem, overlap, edge=edge)
        self.levels = nn.ModuleList(
            nn.ModuleList(ConvBlock(c, cond_dim, edge) for _ in range(n)) for c, n in zip(channels, blocks))
        self.downs = nn.ModuleList(
            resampling_conv(channels[i], channels[i + 1], f, overlap, edge=edge) for i, f in enumerate(down))
        zero_biases(self)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                cross: list[torch.Tensor] | None = None, chunks: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`chunks`: the rows are groups of that many consecutive chunks (edge padding "context")."""
        h = self.stem(x, chunks)
        skips = []
        for level, blocks in enumerate(self.levels):
            if cross is not None:
                h = h + cross[level]
            for block in blocks:
                h = block(h, cond, chunks)
            skips.append(h)
            if level < len(self.downs):
                h = self.downs[level](h, chunks)
        return h, skips


class DePatchifier(nn.Module):
    """Coarse grid -> (features per level, optional spectrogram), mirroring Patchifier.

    `skips` (one per level) are added at the start of each level. Returns the activations after each
    level (index = level, so they line up with a Patchifier's levels) and, if `out_channels` is set,
    the full-resolution output.
    """

    def __init__(self, channels: tuple[int, ...], blocks: tuple[int, ...], stem: tuple[int, int],
                 down: tuple[tuple[int, int], ...], out_channels: int | None = None,
                 cond_dim: int | None = None, overlap: bool = False, edge: str = "zeros") -> None:
        super().__init__()
        self.levels = nn.ModuleList(
            nn.ModuleList(ConvBlock(c, cond_dim, edge) for _ in range(n)) for c, n in zip(channels, blocks))
        self.ups = nn.ModuleList(resampling_conv(channels[i + 1], channels[i], f, overlap, transpose=True, edge=edge)
                                 for i, f in enumerate(down))
        self.head = None
        if out_channels is not None:
            self.head_norm = nn.GroupNorm(group_count(channels[0]), channels[0])
            self.head = resampling_conv(channels[0], out_channels, stem, overlap, transpose=True, edge=edge)
        zero_biases(self)

    def forward(self, h: torch.Tensor, cond: torch.Tensor | None = None,
                skips: list[torch.Tensor] | None = None, chunks: int = 1) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        feats: list[torch.Tensor] = [h] * len(self.levels)
        for level in reversed(range(len(self.levels))):
            if skips is not None:
                h = h + skips[level]
            for block in self.levels[level]:
                h = block(h, cond, chunks)
            feats[level] = h
            if level > 0:
                h = self.ups[level - 1](h, chunks)
        out = self.head(F.silu(self.head_norm(h)), chunks) if self.head is not None else None
        return feats, out


class Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, n, w))


class TransformerBlock(nn.Module):
    """Pre-LN transformer block; with `cond_dim`, adaLN-Zero modulation from a per-segment condition
    (the consistency model: one noise level per chunk of the pair)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, cond_dim: int | None = None) -> None:
        super().__init__()
        affine = cond_dim is None
        self.norm1 = nn.LayerNorm(width, elementwise_affine=affine)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=affine)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Linear(cond_dim, 6 * width) if cond_dim else None
        if self.ada is not None:
            nn.init.zeros_(self.ada.weight)
            nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.ada is None:
            x = x + self.attn(self.norm1(x), mask)
            return x + self.mlp(self.norm2(x))
        # cond (B, S, C) holds one condition per segment of L/S consecutive tokens (S = L: per token).
        # The modulation is computed once per segment and broadcast over its tokens.
        b, length, width = x.shape
        segments = cond.shape[1]
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(cond))[:, :, None].chunk(6, dim=-1)

        def seg(t: torch.Tensor) -> torch.Tensor:  # (B, L, W) <-> (B, S, L/S, W)
            return t.reshape(b, segments, length // segments, width)

        h = self.attn((seg(self.norm1(x)) * (1 + scale1) + shift1).reshape(b, length, width), mask)
        x = x + (seg(h) * gate1).reshape(b, length, width)
        h = self.mlp((seg(self.norm2(x)) * (1 + scale2) + shift2).reshape(b, length, width))
        return x + (seg(h) * gate2).reshape(b, length, width)
