"""Music2Latent2: encoder, decoder and consistency model (design doc section 2), and their presets.

The interface the codec relies on (and nothing else):
  model.encode(chunks)               (B, 2, 1024, 64) -> (B, K, d_lat) summary embeddings in (-1, 1)
  model.decoder_features(latents)    (B, K, d_lat) -> list of per-level feature maps (B, C_l, F_l, T_l)
  model.denoise(x, sigma, features)  x (B, n, 2, 1024, 64) noisy chunks (n = 1 or 2, left then right),
                                     sigma (B, n), features for the B*n chunks -> f(x, sigma), same shape
  model.config                       its ModelConfig (chunk geometry: num_latents, latent_dim)
The model knows nothing about files, sample rates or sampling loops.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn

from m2lcodec import schedule
from m2lcodec.modules import (DePatchifier, NoiseEmbedding, Patchifier, TransformerBlock, check_edge,
                              widen_resampling_weight, zero_biases)
from m2lcodec.spectral import CHUNK_FRAMES, FREQ_BINS


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of all three modules. Patchifier levels: `channels[l]` with `blocks[l]` conv blocks;
    the stem divides (freq, time) by `stem`, and `down[l]` divides it between level l and l+1."""

    name: str = "small"
    in_channels: int = 2
    stem: tuple[int, int] = (4, 2)
    channels: tuple[int, ...] = (16, 32, 64, 128)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    down: tuple[tuple[int, int], ...] = ((2, 2), (2, 2), (2, 2))
    width: int = 128
    heads: int = 4
    depth_encoder: int = 4
    depth_decoder: int = 4
    depth_cm: int = 4
    mlp_ratio: float = 4.0
    num_latents: int = 8
    latent_dim: int = 64
    noise_channels: int = 256
    latent_direct_path: bool = True  # remedy for encoder collapse: all K latents added to every decoder token
    resample_overlap: bool = False  # resampling convs with kernel 2x stride (modules.py): no per-token blocks
    edge_padding: str = "zeros"  # what convs see beyond a chunk's first/last frame: "zeros", "replicate" or
    #                              "context" (replicate, and in the pair the right chunk sees the left's frames)
    grid_code: int = 0  # channels per token of the linear grid paths (0 = off, the paper): the encoder adds a
    #                     linear map of its whole token grid to the latents, the decoder a linear map of the
    #                     latents to every token (docs/architecture.md "Grid paths": attention pooling alone
    #                     carried no time structure inside a chunk)
    pos_gain: float = 1.0  # the token-grid position embeddings enter as gain x parameter (1 = the paper's plain
    #                        learned embedding): a gain g makes them learn g times faster under Adam; measured
    #                        no help for the time path (docs/architecture.md, "Grid paths")

    def __post_init__(self) -> None:
        check_edge(self.edge_padding)
        if not (len(self.channels) == len(self.blocks) == len(self.down) + 1):
            raise ValueError("channels and blocks need one entry per level, down one per transition")
        f, t = self.grid
        if f * math.prod(d[0] for d in self.down) * self.stem[0] != FREQ_BINS or \
                t * math.prod(d[1] for d in self.down) * self.stem[1] != CHUNK_FRAMES:
            raise ValueError("stem and down factors must divide the 1024 x 64 chunk exactly")

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (freq, time) per chunk after the patchifier."""
        f = FREQ_BINS // self.stem[0] // math.prod(d[0] for d in self.down)
        t = CHUNK_FRAMES // self.stem[1] // math.prod(d[1] for d in self.down)
        return f, t

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        for key in ("stem", "channels", "blocks"):
            d[key] = tuple(d[key])
        d["down"] = tuple(tuple(x) for x in d["down"])
        return cls(**d)


PRESETS: dict[str, ModelConfig] = {
    # tests: a training step well under a second on CPU
    # (full-rank stem: 2 x 4 x 2 = 16 numbers per patch into 16 channels, so it can learn; 64 tokens)
    "tiny": ModelConfig(name="tiny", stem=(4, 2), channels=(16, 32, 32), blocks=(1, 1, 1),
                        down=((4, 4), (4, 2)), width=32, heads=2, depth_encoder=1, depth_decoder=1, depth_cm=1,
                        mlp_ratio=2.0),
    # the shipped default: the CPU prototype's geometry (128 tokens per chunk), see docs/architecture.md
    "small": ModelConfig(name="small"),
    # the paper: 6 levels of [3,3,3,4,5,1] layers (the resampling conv counted as one of a level's layers),
    # channels [64,128,256,256,256,256], 16 transformer blocks of width 256 per module
    "paper": ModelConfig(name="paper", stem=(2, 1), channels=(64, 128, 256, 256, 256, 256),
                         blocks=(2, 2, 2, 3, 4, 1), down=((2, 1), (2, 2), (2, 2), (2, 2), (1, 1)),
                         width=256, heads=4, depth_encoder=16, depth_decoder=16, depth_cm=16),
}


def get_config(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def grid_to_tokens(h: torch.Tensor) -> torch.Tensor:
    """(B, C, F, T) -> (B, F*T, C)."""
    return h.flatten(2).transpose(1, 2)


def tokens_to_grid(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, F*T, C) -> (B, C, F, T)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *grid)


class FrequencyScaling(nn.Module):
    """Learned per-frequency-bin gain (Music2Latent's 'frequency scaling'), initialised to 1."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1, 1, FREQ_BINS, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


class GridToLatents(nn.Module):
    """The encoder's grid path: each token squeezed to `grid_code` channels, then one linear map of the whole
    grid to the K x d_lat pre-tanh latents. Unlike attention pooling (which, with position embeddings far
    weaker than the content, summed the tokens as a bag) it sees where in the chunk each token sits.
    The last layer starts at zero: adding the path to a trained model leaves its function unchanged."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.squeeze = nn.Linear(cfg.channels[-1], cfg.grid_code)
        self.mix = nn.Linear(cfg.tokens * cfg.grid_code, cfg.num_latents * cfg.latent_dim)
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)
        self.shape = (cfg.num_latents, cfg.latent_dim)

    def forward(self, grid_tokens: torch.Tensor) -> torch.Tensor:
        """(B, tokens, C) patchifier tokens -> (B, K, d_lat)."""
        return self.mix(self.squeeze(grid_tokens).flatten(1)).view(-1, *self.shape)


class LatentsToGrid(nn.Module):
    """The decoder's grid path, the mirror of GridToLatents: one linear map of all K x d_lat latents to
    `grid_code` channels per token, widened per token to the model width and added to its mask token, so
    every token gets its own reading of the latents (the direct path gives all tokens the same one)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.mix = nn.Linear(cfg.num_latents * cfg.latent_dim, cfg.tokens * cfg.grid_code)
        self.widen = nn.Linear(cfg.grid_code, cfg.width)
        nn.init.zeros_(self.widen.weight)
        nn.init.zeros_(self.widen.bias)
        self.shape = (cfg.tokens, cfg.grid_code)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, K, d_lat) -> (B, tokens, width)."""
        return self.widen(self.mix(z.flatten(1)).view(-1, *self.shape))


class Encoder(nn.Module):
    """Chunk -> K summary embeddings: patchifier, tokens + K learnable latent tokens, transformer, tanh."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.freq_scale = FrequencyScaling()
        self.patchifier = Patchifier(cfg.in_channels, cfg.channels, cfg.blocks, cfg.stem, cfg.down,
                                     overlap=cfg.resample_overlap, edge=cfg.edge_padding)
        self.proj_in = zero_biases(nn.Linear(cfg.channels[-1], cfg.width))
        self.pos = nn.Parameter(torch.randn(1, cfg.tokens, cfg.width) * 0.02)
        self.latent_tokens = nn.Parameter(torch.randn(1, cfg.num_latents, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth_encoder))
        self.norm_out = nn.LayerNorm(cfg.width)
        self.to_latent = nn.Linear(cfg.width, cfg.latent_dim)
        self.grid_path = GridToLatents(cfg) if cfg.grid_code else None

    def grid_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, 1024, 64) -> (B, tokens, channels[-1]): the patchifier's grid as tokens."""
        return grid_to_tokens(self.patchifier(self.freq_scale(x))[0])

    def features_of(self, grid_tokens: torch.Tensor) -> torch.Tensor:
        """Grid tokens -> (B, K, width): the latent tokens after the transformer, before the last linear."""
        tokens = self.proj_in(grid_tokens) + self.pos * self.cfg.pos_gain
        seq = torch.cat([tokens, self.latent_tokens.expand(grid_tokens.shape[0], -1, -1)], dim=1)
        for block in self.blocks:
            seq = block(seq)
        return self.norm_out(seq[:, -self.cfg.num_latents:])

    def latents_of(self, grid_tokens: torch.Tensor) -> torch.Tensor:
        """Grid tokens -> (B, K, d_lat) summary embeddings (the grid path, if any, added before the tanh)."""
        pre = self.to_latent(self.features_of(grid_tokens))
        if self.grid_path is not None:
            pre = pre + self.grid_path(grid_tokens)
        return torch.tanh(pre)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, 1024, 64) -> (B, K, width): the summary tokens before the last linear (for MIR)."""
        return self.features_of(self.grid_tokens(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.latents_of(self.grid_tokens(x))


class Decoder(nn.Module):
    """K summary embeddings -> multi-resolution features for the consistency model's cross-connections."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.from_latent = nn.Linear(cfg.latent_dim, cfg.width)
        self.latent_pos = nn.Parameter(torch.randn(1, cfg.num_latents, cfg.width) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(1, 1, cfg.width) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, cfg.tokens, cfg.width) * 0.02)
        self.direct = nn.Linear(cfg.num_latents * cfg.latent_dim, cfg.width) if cfg.latent_direct_path else None
        self.grid_path = LatentsToGrid(cfg) if cfg.grid_code else None
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth_decoder))
        self.norm_out = nn.LayerNorm(cfg.width)
        self.proj_out = nn.Linear(cfg.width, cfg.channels[-1])
        self.depatchifier = DePatchifier(cfg.channels, cfg.blocks, cfg.stem, cfg.down, overlap=cfg.resample_overlap,
                                         edge=cfg.edge_padding)

    def mask_tokens(self, z: torch.Tensor) -> torch.Tensor:
        """(B, K, d_lat) -> (B, tokens, width): what each audio position starts from (mask token, position,
        and the latents' direct and grid paths)."""
        mask = (self.mask_token + self.pos * self.cfg.pos_gain).expand(z.shape[0], -1, -1)
        if self.direct is not None:
            mask = mask + self.direct(z.flatten(1))[:, None, :]
        if self.grid_path is not None:
            mask = mask + self.grid_path(z)
        return mask

    def audio_tokens(self, z: torch.Tensor) -> torch.Tensor:
        """(B, K, d_lat) -> (B, tokens, width): the transformer's audio tokens, before the output norm."""
        seq = torch.cat([self.from_latent(z) + self.latent_pos, self.mask_tokens(z)], dim=1)
        for block in self.blocks:
            seq = block(seq)
        return seq[:, self.cfg.num_latents:]

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        h = tokens_to_grid(self.proj_out(self.norm_out(self.audio_tokens(z))), self.cfg.grid)
        feats, _ = self.depatchifier(h)
        return feats


POSITION_PARAMS = ("encoder.pos", "decoder.pos", "cm.pos")  # the token-grid embeddings `pos_gain` scales


def is_grid_path(name: str) -> bool:
    """Whether a parameter name (as in Music2Latent2.named_parameters) belongs to a grid path."""
    return ".grid_path." in name


def chunk_causal_mask(chunks: int, tokens: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (n*tokens, n*tokens) mask, True = may attend: full inside a chunk, later chunks see earlier."""
    chunk_id = torch.arange(chunks, device=device).repeat_interleave(tokens)
    return chunk_id[:, None] >= chunk_id[None, :]


class ConsistencyModel(nn.Module):
    """f(x, sigma) = c_skip x + c_out F(c_in x, sigma) over one or two consecutive chunks."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        cond = cfg.width
        self.noise_embed = NoiseEmbedding(cond, cfg.noise_channels)
        self.freq_scale_in = FrequencyScaling()
        self.freq_scale_out = FrequencyScaling()
        self.patchifier = Patchifier(cfg.in_channels, cfg.channels, cfg.blocks, cfg.stem, cfg.down, cond,
                                     overlap=cfg.resample_overlap, edge=cfg.edge_padding)
        self.proj_in = zero_biases(nn.Linear(cfg.channels[-1], cfg.width))
        self.pos = nn.Parameter(torch.randn(1, cfg.tokens, cfg.width) * 0.02)
        self.segment = nn.Parameter(torch.randn(2, cfg.width) * 0.02)  # which chunk of the pair
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cond) for _ in range(cfg.depth_cm))
        self.norm_out = nn.LayerNorm(cfg.width)
        self.proj_out = nn.Linear(cfg.width, cfg.channels[-1])
        self.depatchifier = DePatchifier(cfg.channels, cfg.blocks, cfg.stem, cfg.down, cfg.in_channels, cond,
                                         overlap=cfg.resample_overlap, edge=cfg.edge_padding)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """x (B, n, 2, 1024, 64), sigma (B, n), features per level for the B*n chunks (row-major)."""
        b, n = x.shape[:2]
        flat_x = x.reshape(b * n, *x.shape[2:])
        flat_sigma = sigma.reshape(b * n).to(torch.float32)
        expand = (slice(None), None, None, None)
        cond = self.noise_embed(schedule.noise_embedding_input(flat_sigma))  # (B*n, cond)
        h = self.freq_scale_in(schedule.c_in(flat_sigma)[expand].to(flat_x.dtype) * flat_x)
        h, skips = self.patchifier(h, cond, features, chunks=n)
        tokens = (self.proj_in(grid_to_tokens(h)) + self.pos * self.cfg.pos_gain).reshape(b, n, self.cfg.tokens, -1)
        seq = (tokens + self.segment[:n, None, :]).reshape(b, n * self.cfg.tokens, self.cfg.width)
        chunk_cond = cond.reshape(b, n, -1)  # each chunk's tokens are modulated by that chunk's noise level
        mask = chunk_causal_mask(n, self.cfg.tokens, x.device) if n > 1 else None
        for block in self.blocks:
            seq = block(seq, mask, chunk_cond)
        seq = self.proj_out(self.norm_out(seq)).reshape(b * n, self.cfg.tokens, -1)
        _, out = self.depatchifier(tokens_to_grid(seq, self.cfg.grid), cond, skips, chunks=n)
        out = self.freq_scale_out(out).reshape(x.shape)
        c_skip = schedule.c_skip(sigma)[..., None, None, None]
        c_out = schedule.c_out(sigma)[..., None, None, None]
        return c_skip * x.float() + c_out * out.float()


class Music2Latent2(nn.Module):
    """The three modules together, behind the small interface the codec and the trainer use."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.cm = ConsistencyModel(cfg)

    def encode(self, chunks: torch.Tensor) -> torch.Tensor:
        return self.encoder(chunks)

    def decoder_features(self, latents: torch.Tensor) -> list[torch.Tensor]:
        return self.decoder(latents)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        return self.cm(x, sigma, features)

    def load_adapted(self, state: dict[str, torch.Tensor], source: ModelConfig) -> None:
        """Load the state of a model of config `source` into this one, which may differ from it in three
        ways that keep the function (fine-tuning a shipped model onto a new geometry, which starts from
        exactly what the old model computed):
        - resample_overlap turned on: each resampling layer's weights go to the middle taps of its wider
          kernel (docs/architecture.md, "Resampling overlap");
        - another pos_gain: the position parameters are rescaled, so they then learn pos_gain / old gain
          times faster ("Position gain");
        - grid paths added (grid_code > 0): they keep their initialisation, whose zero last layers add
          nothing ("Grid paths").
        Anything else (edge_padding aside, which has no parameters) must match."""
        cfg = self.config
        if replace(source, resample_overlap=cfg.resample_overlap, pos_gain=cfg.pos_gain, grid_code=cfg.grid_code,
                   edge_padding=cfg.edge_padding) != cfg:
            raise ValueError("the source model differs in more than resampling overlap, position gain, grid paths")
        if source.resample_overlap and not cfg.resample_overlap:
            raise ValueError("cannot load overlapping resampling layers into non-overlapping ones")
        if source.grid_code and source.grid_code != cfg.grid_code:
            raise ValueError("cannot drop or resize the source's grid paths")
        state = dict(state)
        if cfg.resample_overlap and not source.resample_overlap:
            for name, module in self.named_modules():
                key = f"{name}.weight"
                if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and key in state \
                        and state[key].shape != module.weight.shape:
                    state[key] = widen_resampling_weight(state[key], module.stride)
        for name in POSITION_PARAMS:
            if name in state:  # (a missing one is reported below)
                state[name] = state[name] * (source.pos_gain / cfg.pos_gain)
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected or any(not (is_grid_path(key) and not source.grid_code) for key in missing):
            raise ValueError(f"the state does not fit its config: missing {missing}, unexpected {unexpected}")

    def param_counts(self) -> dict[str, int]:
        counts = {name: sum(p.numel() for p in getattr(self, name).parameters())
                  for name in ("encoder", "decoder", "cm")}
        counts["total"] = sum(counts.values())
        return counts


def select_features(features: list[torch.Tensor], index: torch.Tensor | slice) -> list[torch.Tensor]:
    """Pick rows (chunks) from per-level features, e.g. to pair chunk t-1 with chunk t."""
    return [f[index] for f in features]
