"""MS-CLAP's audio encoders (CNN14 for 2022, HTSAT for 2023) and the projection head of both towers.

Module and parameter names follow the official release files (``CLAP_weights_2022.pth`` /
``CLAP_weights_2023.pth`` of the hub repo ``microsoft/msclap``) so that the file's
``audio_encoder.*`` entries load into :class:`MsClapAudioTower` with their own names (the front-end
kernels and classification heads are dropped by :mod:`.msclap` before loading). Architectures were
read from github.com/microsoft/CLAP (``msclap/models/audio.py``, ``htsat.py``, ``clap.py``); this
is an independent implementation of the eval-mode inference path only (no dropout, SpecAugment,
mixup, random crops or the clip-wise classifier).

Widths, depths, heads and window size are read from the state dict's shapes, so the full-size
models and the tiny test fixtures use the same code. Input of every tower: the log-mel
(B, 1, frames, 64) computed by :class:`clap_helpers.embedding.families.msclap.MsClap`.

Used by: clap_helpers.embedding.families.msclap and clap_helpers.devtools.fixtures.tiny_msclap.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Cnn14",
    "HtsatEncoder",
    "MsClapAudioTower",
    "Projection",
    "cnn14_shape",
    "htsat_shape",
]

# HTSAT geometry hard-coded by the official model (htsat.py: HTSAT_Swin_Transformer defaults, as
# HTSATWrapper builds it from config.py only): 256 x 256 "image", 4 x 4 patches with stride 4,
# the 64 mel bins folded 4 times (freq_ratio = spec_size // mel_bins).
HTSAT_SPEC_SIZE = 256
HTSAT_PATCH = 4
HTSAT_MEL_BINS = 64
HTSAT_FREQ_RATIO = HTSAT_SPEC_SIZE // HTSAT_MEL_BINS  # 4
HTSAT_MLP_RATIO = 4.0
SHIFT_MASK_VALUE = -100.0  # value the official Swin code puts between different shifted regions


class Projection(nn.Module):
    """MS-CLAP's projection head (clap.py ``Projection``): LayerNorm(l1(x) + l2(gelu(l1(x))))."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embed1 = self.linear1(x)
        return self.layer_norm(embed1 + self.linear2(F.gelu(embed1)))


# ----------------------------------------------------------------------------------------------
# CNN14 (PANNs; MS-CLAP 2022)
# ----------------------------------------------------------------------------------------------
class _ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool) if pool > 1 else x


class Cnn14(nn.Module):
    """CNN14 body up to its ``fc1`` embedding: log-mel (B, 1, T, mel) -> (B, out_emb).

    bn0 over the mel axis, six conv blocks (2 x 2 average pooling after the first five), mean over
    frequency, max + mean over time, ``relu(fc1(.))`` (audio.py ``Cnn14.forward`` in eval mode).
    """

    def __init__(self, channels: tuple[int, ...], out_emb: int, mel_bins: int = 64) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(mel_bins)
        ins = (1, *channels[:-1])
        for i, (c_in, c_out) in enumerate(zip(ins, channels, strict=True), start=1):
            self.add_module(f"conv_block{i}", _ConvBlock(c_in, c_out))
        self.n_blocks = len(channels)
        self.fc1 = nn.Linear(channels[-1], out_emb)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(1, self.n_blocks + 1):
            x = getattr(self, f"conv_block{i}")(x, 2 if i < self.n_blocks else 1)
        x = x.mean(dim=3)
        x = x.amax(dim=2) + x.mean(dim=2)
        return F.relu(self.fc1(x))


def cnn14_shape(sd: dict[str, torch.Tensor], prefix: str) -> dict:
    """CNN14 widths from a state dict: ``channels`` per conv block and ``out_emb``."""
    channels, i = [], 1
    while f"{prefix}conv_block{i}.conv1.weight" in sd:
        channels.append(int(sd[f"{prefix}conv_block{i}.conv1.weight"].shape[0]))
        i += 1
    if not channels or f"{prefix}fc1.weight" not in sd:
        raise ValueError(f"no CNN14 weights under {prefix!r}")
    return {"channels": tuple(channels), "out_emb": int(sd[f"{prefix}fc1.weight"].shape[0])}


# ----------------------------------------------------------------------------------------------
# HTSAT (Swin transformer on the folded log-mel; MS-CLAP 2023)
# ----------------------------------------------------------------------------------------------
def _windows(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, w * w, C), windows in row-major order."""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def _unwindows(x: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    """Inverse of :func:`_windows`: (B * nW, w * w, C) -> (B, H, W, C)."""
    c = x.shape[-1]
    b = x.shape[0] // ((h // w) * (wd // w))
    x = x.view(b, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, c)


def _relative_position_index(w: int) -> torch.Tensor:
    """(w*w, w*w) index into the (2w-1)^2 bias table (Swin's relative position index)."""
    coords = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (w - 1)
    return rel[..., 0] * (2 * w - 1) + rel[..., 1]


def _shift_mask(h: int, wd: int, w: int, shift: int) -> torch.Tensor:
    """(nW, w*w, w*w) additive mask of shifted windows: 0 within a region, -100 across."""
    region = torch.zeros(1, h, wd, 1)
    cuts = ((0, -w), (-w, -shift), (-shift, None))
    label = 0
    for hs in cuts:
        for ws in cuts:
            region[:, slice(*hs), slice(*ws), :] = label
            label += 1
    ids = _windows(region, w).squeeze(-1)  # (nW, w*w)
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.where(diff != 0, SHIFT_MASK_VALUE, 0.0)


class _WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", _relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1)  # (heads, n, n)
        if mask is not None:  # (nW, n, n): windows of one item are consecutive in the batch
            nw = mask.shape[0]
            bias = (bias[None] + mask[:, None]).repeat(bw // nw, 1, 1, 1)  # (bw, heads, n, n)
        q = q * (c // self.heads) ** -0.5  # scaled before the product, as the official code
        attn = torch.softmax(q @ k.transpose(-2, -1) + bias, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _SwinBlock(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int], heads: int, window: int, shift: int):
        super().__init__()
        self.resolution = resolution
        if min(resolution) <= window:  # the official rule: one window covers the whole map
            window, shift = min(resolution), 0
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * HTSAT_MLP_RATIO))
        mask = _shift_mask(*resolution, window, shift) if shift > 0 else None
        self.register_buffer("attn_mask", mask)  # saved in the official files for shifted blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, wd = self.resolution
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, wd, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(_windows(y, self.window), self.attn_mask)
        y = _unwindows(y, self.window, h, wd)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * wd, c)
        return x + self.mlp(self.norm2(x))


class _PatchMerging(nn.Module):
    def __init__(self, resolution: tuple[int, int], dim: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, wd = self.resolution
        b, _, c = x.shape
        x = x.view(b, h, wd, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c)))


class _BasicLayer(nn.Module):
    def __init__(self, dim, resolution, depth, heads, window, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            _SwinBlock(dim, resolution, heads, window, 0 if i % 2 == 0 else window // 2)
            for i in range(depth)
        )
        self.downsample = _PatchMerging(resolution, dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, HTSAT_PATCH, stride=HTSAT_PATCH)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class _Htsat(nn.Module):
    """HTSAT-Swin body (htsat.py ``HTSAT_Swin_Transformer``) up to its ``latent_output``."""

    def __init__(self, embed_dim: int, depths, heads, window: int, mel_bins: int = 64) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(mel_bins)
        self.patch_embed = _PatchEmbed(embed_dim)
        grid = HTSAT_SPEC_SIZE // HTSAT_PATCH
        self.layers = nn.ModuleList()
        for i, (depth, nh) in enumerate(zip(depths, heads, strict=True)):
            res = (grid // 2**i, grid // 2**i)
            last = i == len(depths) - 1
            self.layers.append(_BasicLayer(embed_dim * 2**i, res, depth, nh, window, not last))
        self.norm = nn.LayerNorm(embed_dim * 2 ** (len(depths) - 1))

    @staticmethod
    def to_image(x: torch.Tensor) -> torch.Tensor:
        """Log-mel (B, 1, T <= 1024, 64) -> the folded (B, 1, 256, 256) input (``reshape_wav2img``):
        bicubic stretch of time to 1024 frames (align_corners), then four 256-frame slices stacked
        along frequency."""
        target_t = HTSAT_SPEC_SIZE * HTSAT_FREQ_RATIO
        if x.shape[2] > target_t or x.shape[3] != HTSAT_MEL_BINS:
            raise ValueError(f"HTSAT takes at most {target_t} frames x 64 mels, got {x.shape}")
        if x.shape[2] < target_t:
            x = F.interpolate(x, (target_t, x.shape[3]), mode="bicubic", align_corners=True)
        b, c = x.shape[:2]
        x = x.transpose(2, 3).reshape(b, c, HTSAT_MEL_BINS, HTSAT_FREQ_RATIO, HTSAT_SPEC_SIZE)
        return x.transpose(2, 3).reshape(b, c, HTSAT_SPEC_SIZE, HTSAT_SPEC_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        x = self.patch_embed(self.to_image(x))
        for layer in self.layers:
            x = layer(x)
        # latent_output: average pool over every position (the official fold-and-flatten before the
        # pooling only reorders positions)
        return self.norm(x).mean(dim=1)


class HtsatEncoder(nn.Module):
    """The ``htsat`` wrapper level of the official module tree (keys ``base.htsat.*``)."""

    def __init__(self, embed_dim: int, depths, heads, window: int) -> None:
        super().__init__()
        self.htsat = _Htsat(embed_dim, depths, heads, window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.htsat(x)


_BLOCK = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$")


def htsat_shape(sd: dict[str, torch.Tensor], prefix: str) -> dict:
    """HTSAT sizes from a state dict: ``embed_dim``, ``depths``, ``heads``, ``window``."""
    key = f"{prefix}patch_embed.proj.weight"
    if key not in sd:
        raise ValueError(f"no HTSAT weights under {prefix!r}")
    depth: dict[int, int] = {}
    heads: dict[int, int] = {}
    window = None
    for k, v in sd.items():
        m = _BLOCK.search(k) if k.startswith(prefix) else None
        if m:
            i, j = int(m.group(1)), int(m.group(2))
            depth[i] = max(depth.get(i, 0), j + 1)
            heads[i] = int(v.shape[1])
            if i == 0:
                window = round((v.shape[0] ** 0.5 + 1) / 2)
    n = len(depth)
    if n == 0 or sorted(depth) != list(range(n)):
        raise ValueError(f"HTSAT layers under {prefix!r} are incomplete: {sorted(depth)}")
    return {
        "embed_dim": int(sd[key].shape[0]),
        "depths": tuple(depth[i] for i in range(n)),
        "heads": tuple(heads[i] for i in range(n)),
        "window": int(window),
    }


class MsClapAudioTower(nn.Module):
    """Audio encoder + projection (keys ``base.*`` and ``projection.*`` of the file's
    ``audio_encoder.*``): log-mel (B, 1, T, 64) -> (B, d_proj), not normalised."""

    def __init__(self, base: nn.Module, d_in: int, d_out: int) -> None:
        super().__init__()
        self.base = base
        self.projection = Projection(d_in, d_out)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.projection(self.base(log_mel))
