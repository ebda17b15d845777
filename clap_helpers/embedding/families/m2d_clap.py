"""The ``"m2d-clap"`` family: M2D-CLAP (Niizumi et al.) from its official release checkpoint.

Loads the release file itself (e.g. ``m2d_clap_vit_base-80x608p16x16-240128/checkpoint-300.pth``,
a ``{'model', 'epoch', 'args'}`` dict), with the project's own code (no timm, nnAudio or einops)::

    fam = load_m2d_clap("m2d_clap_vit_base-80x608p16x16-240128/checkpoint-300.pth")
    fam = load_m2d_clap(path, text_model="/models/gte-base")      # local text tower folder

What it reproduces (the official inference path, ``examples/portable_m2d.py`` of nttcslab/m2d,
``PortableM2D(weight_file, flat_features=True)`` + ``encode_clap_audio`` / ``encode_clap_text``)
    * configuration from the checkpoint's folder name, ``<model>-<F>x<T>p<f>x<t>[p<sr>][p<X>[pTI]]``:
      input ``F`` mel bins x ``T`` frames, patches ``f`` x ``t``, ``16k``/``32k`` audio, text
      encoder ``A`` (GTE-base, 2024, default) or ``B`` (BERT-base, 2025), ``TI``: text encoder
      weights inside the file (``name=`` overrides the folder name);
    * front-end: log(mel power + float32 eps) of a centred STFT (periodic Hann, reflect padding
      of each clip at its own ends), Slaney mel filters, then ``(x - mean) / std`` with the file's
      ``norm_stats`` (default ``[-7.1, 4.2]``, the official constant for files without them);
    * ViT encoder, patch tokens of one window; short clips: frames padded with zeros (in
      normalised units) to a whole patch, the positional table cut to the clip's patches, and
      the padded frames' patches *count* in the mean pooling, as officially; then ``audio_proj``;
    * text: GTE mean-pooled over the attention mask (``A``) or BERT's first token (``B``), then
      ``text_proj`` when the file has one.

Where it differs: a clip longer than the native window (608 frames = 97 120 samples for
``80x608``) is cut by the encoder into consecutive windows whose embeddings are averaged; the
official code concatenates all windows' patch tokens before one mean pooling. A batch mixing
lengths is padded and masked in attention and pooling, so each row equals the clip's own
one-clip result (the official code only batches equal lengths). Clips under 201 samples (16 kHz)
are zero-extended to 201 before the reflect padding the official code would refuse.

Loading is safe: ``torch.load(weights_only=True)`` with only ``argparse.Namespace`` allow-listed
(the release file pickles its training arguments); anything else pickled is refused. Keys the
inference path does not use (decoder, target encoder, mask token ...) are dropped by name; any
other unexpected key is reported in a warning, missing ones are an error
(:attr:`M2DClapFamily.key_report`).

Used by: clap_helpers.embedding.families.registry (``load_clap(..., family="m2d-clap")``).
"""

from __future__ import annotations

import argparse
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..frontend import hann_window, mel_filter_bank
from .base import ModelFamily
from .registry import local_revision, register_family, resolve_revision

__all__ = [
    "DEFAULT_NORM_STATS",
    "M2DAudioTower",
    "M2DClapFamily",
    "M2DConfig",
    "detect_m2d_clap",
    "is_m2d_clap_state_dict",
    "load_m2d_clap",
    "parse_m2d_name",
    "read_checkpoint",
]

#: Log-mel normalisation for files without ``norm_stats`` (portable_m2d.py ``get_backbone``:
#: "The [-7.1, 4.2] is for 2022 models").
DEFAULT_NORM_STATS = (-7.1, 4.2)

#: Front-end per sample-rate tag (portable_m2d.py ``get_to_melspec``: nnAudio MelSpectrogram with
#: center=True, power=2, reflect padding, Hann window, Slaney mel scale and norm).
_FRONTENDS = {
    "16k": dict(sample_rate=16000, n_fft=400, hop=160, n_mels=80, f_min=50.0, f_max=8000.0),
    "32k": dict(sample_rate=32000, n_fft=800, hop=320, n_mels=80, f_min=50.0, f_max=16000.0),
}

#: Text encoder per name suffix (portable_m2d.py ``parse_clap_type`` / ``get_text_encoder``):
#: default hub id and pooling (GTETextEncoder: mean over the mask; BertXEncoder: token 0).
_TEXT_ENCODERS = {
    "A": ("thenlper/gte-base", "mean"),
    "B": ("google-bert/bert-base-uncased", "cls"),
}
_TEXT_MAX_TOKENS = 512  # GTETextEncoder / BertXEncoder max_length

#: Checkpoint keys of the pre-training model that inference does not use (M2D_CLAP_ViT in
#: patch_m2d.diff: MAE decoder, EMA target encoder, mask token, offline predictor).
_UNUSED_PREFIXES = ("decoder_", "target_", "mask_token", "offline_predictor")

_NAME = re.compile(r"^(?P<model>[^-]+)-(?P<params>[0-9x]+p[0-9x]+(?:p[0-9A-Za-z]+)*)(?:-|$)")


@dataclass(frozen=True)
class M2DConfig:
    """What a checkpoint's folder name says (see :func:`parse_m2d_name`)."""

    model: str
    input_size: tuple[int, int]  # (mel bins, frames)
    patch_size: tuple[int, int]
    sr: str = "16k"
    text_encoder: str = "A"
    text_inside: bool = False

    @property
    def name(self) -> str:
        s = f"{self.input_size[0]}x{self.input_size[1]}p{self.patch_size[0]}x{self.patch_size[1]}"
        s += f"p{self.sr}"
        return s + f"p{self.text_encoder}" + ("pTI" if self.text_inside else "")


def parse_m2d_name(name: str) -> M2DConfig:
    """Parse ``m2d_clap_vit_base-80x608p16x16-240128`` style names (portable_m2d.py
    ``parse_sizes_by_name`` + ``parse_clap_type``): ``80x608`` input, ``16x16`` patches, then
    optional ``p16k``/``p32k``, ``pA``/``pB`` (text encoder) and ``pTI`` (text weights inside)."""
    m = _NAME.match(name)
    if m is None:
        raise ValueError(
            f"cannot read the M2D-CLAP configuration from {name!r}: expected the release folder "
            "name such as 'm2d_clap_vit_base-80x608p16x16-240128' (pass name=... to load_m2d_clap)"
        )
    parts = m["params"].split("p")
    (fb, fr), (pf, pt) = (tuple(int(v) for v in p.split("x")) for p in parts[:2])
    sr = parts[2] if len(parts) > 2 else "16k"
    extra = parts[3:]
    if sr not in _FRONTENDS:
        raise ValueError(f"{name!r}: unknown sample-rate tag {sr!r} (known: {sorted(_FRONTENDS)})")
    text = extra[0] if extra else "A"
    if text not in _TEXT_ENCODERS:
        raise ValueError(
            f"{name!r}: text encoder {text!r} is not supported (A = GTE-base, B = BERT-base; "
            "N = NV-Embed-v2 needs sentence-transformers and is not supported)"
        )
    if len(extra) > 1 and extra[1:] != ["TI"]:
        raise ValueError(f"{name!r}: unknown extra parameters {extra[1:]}")
    return M2DConfig(m["model"], (fb, fr), (pf, pt), sr, text, len(extra) > 1)


# ----------------------------------------------------------------------------------------------
# Safe checkpoint reading
# ----------------------------------------------------------------------------------------------
def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """The checkpoint's state dict, read with ``weights_only=True`` and only
    ``argparse.Namespace`` allow-listed (the release file stores its training ``args``).
    Any other pickled object is refused with a ValueError."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError or RuntimeError
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise ValueError(
                f"{path}: refused to unpickle an object that is not a tensor, a plain container "
                f"or argparse.Namespace; not an official M2D-CLAP file? ({str(exc).splitlines()[0]})"
            ) from None
        raise
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict (or a {{'model': state_dict}} checkpoint)")
    return state


def is_m2d_clap_state_dict(keys) -> bool:
    """Key names of an M2D-CLAP checkpoint: a ViT (``pos_embed``, ``patch_embed.proj``) with an
    ``audio_proj`` head."""
    keys = set(keys)
    return (
        "pos_embed" in keys
        and "patch_embed.proj.weight" in keys
        and any(k.startswith("audio_proj.") for k in keys)
    )


def detect_m2d_clap(model_id: str, config: dict | None = None) -> bool:
    """Registry hook: ``model_id`` is a local ``.pth``/``.pt`` file with M2D-CLAP key names."""
    path = Path(str(model_id)).expanduser()
    if config is not None or not path.is_file() or path.suffix not in (".pth", ".pt"):
        return False
    try:
        return is_m2d_clap_state_dict(read_checkpoint(path, mmap=True))
    except (ValueError, RuntimeError, OSError):
        return False


# ----------------------------------------------------------------------------------------------
# Audio tower (key names as in the checkpoint: patch_embed, cls_token, pos_embed, blocks, norm,
# audio_proj; timm ViT blocks: pre-norm, GELU MLP, qkv with bias, scale head_dim ** -0.5)
# ----------------------------------------------------------------------------------------------
class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = _Mlp(dim, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: tuple[int, int]):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)


class _AudioToSemantic(nn.Module):
    """portable_m2d.py ``AudioToSemantic`` (2025 ablations): a semantic token prepended to the
    patch tokens, one-head blocks (LayerNorm eps 1e-5), that token's output normalised."""

    def __init__(self, dim: int, depth: int, hidden: int):
        super().__init__()
        self.sem_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.sem_blocks = nn.ModuleList(_Block(dim, 1, hidden, 1e-5) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.sem_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        keep = torch.cat([valid.new_ones(valid.shape[0], 1), valid], dim=1)[:, None, None, :]
        mask = None if bool(valid.all()) else keep
        for blk in self.sem_blocks:
            x = blk(x, mask)
        return self.norm(x[:, 0])


def _mlp_projector(state: dict, prefix: str) -> nn.Module | None:
    """``Linear, ReLU, Linear`` (keys ``<prefix>.0`` / ``.2``), a ``Linear`` (``<prefix>.weight``)
    or None, sized from the checkpoint's tensors (portable_m2d.py ``make_it_CLAP``)."""
    if f"{prefix}.0.weight" in state:
        w0, w2 = state[f"{prefix}.0.weight"], state[f"{prefix}.2.weight"]
        return nn.Sequential(
            nn.Linear(w0.shape[1], w0.shape[0]), nn.ReLU(), nn.Linear(w2.shape[1], w2.shape[0])
        )
    if f"{prefix}.weight" in state:
        w = state[f"{prefix}.weight"]
        return nn.Linear(w.shape[1], w.shape[0])
    return None


class M2DAudioTower(nn.Module):
    """ViT encoder + ``audio_proj``: ``(lms (B, 1, F, T), time_patches (B,))`` -> (B, D).

    ``lms`` is the normalised log-mel, ``T`` a multiple of the time patch and at most the native
    frames; ``time_patches`` the patch columns of each row that hold its clip (the rest are
    masked out of attention and pooling)."""

    def __init__(self, cfg: M2DConfig, state: dict):
        super().__init__()
        dim = state["pos_embed"].shape[-1]
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
        # Heads: the official factories hard-code 12 (vit_base, 768) and 16 (vit_large, 1024),
        # i.e. 64 dimensions per head, which also sizes smaller test models.
        self.heads = max(dim // 64, 1)
        self.grid = (cfg.input_size[0] // cfg.patch_size[0], cfg.input_size[1] // cfg.patch_size[1])
        self.patch_embed = _PatchEmbed(dim, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], dim))
        self.blocks = nn.ModuleList(_Block(dim, self.heads, hidden, 1e-6) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.norm_stats = nn.Parameter(torch.tensor(DEFAULT_NORM_STATS), requires_grad=False)
        if "audio_proj.sem_token" in state:
            sem_depth = 1 + max(
                int(k.split(".")[2]) for k in state if k.startswith("audio_proj.sem_blocks.")
            )
            sem_hidden = state["audio_proj.sem_blocks.0.mlp.fc1.weight"].shape[0]
            self.audio_proj = _AudioToSemantic(dim, sem_depth, sem_hidden)
        else:
            self.audio_proj = _mlp_projector(state, "audio_proj") or nn.Identity()
        lins = [m for m in self.audio_proj.modules() if isinstance(m, nn.Linear)]
        self.out_dim = lins[-1].out_features if lins else dim

    def forward(self, lms: torch.Tensor, time_patches: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(lms)  # (B, D, Fp, Tp)
        b, d, fp, tp = x.shape
        x = x.flatten(2).transpose(1, 2)  # tokens in (frequency, time) order, time fastest
        pos = self.pos_embed[:, 1:].reshape(1, self.grid[0], self.grid[1], d)[:, :, :tp]
        x = x + pos.reshape(1, fp * tp, d)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        x = torch.cat([cls, x], dim=1)
        valid = torch.arange(tp, device=x.device)[None, :] < time_patches.to(x.device)[:, None]
        valid = valid[:, None, :].expand(b, fp, tp).reshape(b, fp * tp)
        full = bool(valid.all())
        mask = None if full else torch.cat([valid.new_ones(b, 1), valid], dim=1)[:, None, None, :]
        for blk in self.blocks:
            x = blk(x, mask)
        tokens = self.norm(x)[:, 1:]
        if isinstance(self.audio_proj, _AudioToSemantic):
            return self.audio_proj(tokens, valid)
        w = valid.to(tokens.dtype)[..., None]
        pooled = (tokens * w).sum(1) / w.sum(1)
        return self.audio_proj(pooled)


# ----------------------------------------------------------------------------------------------
# Text tower
# ----------------------------------------------------------------------------------------------
class _TextTower(nn.Module):
    def __init__(self, model: nn.Module, tokenizer, pooling: str, proj: nn.Module | None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.text_proj = proj or nn.Identity()

    @torch.inference_mode()
    def forward(self, texts: list[str]) -> torch.Tensor:
        dev = next(self.model.parameters()).device
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=_TEXT_MAX_TOKENS,
            return_tensors="pt",
        ).to(dev)
        with torch.autocast(dev.type, enabled=False):
            hidden = self.model(**batch).last_hidden_state.float()
            if self.pooling == "mean":  # GTETextEncoder.average_pool
                m = batch["attention_mask"][..., None].to(hidden.dtype)
                emb = (hidden * m).sum(1) / m.sum(1)
            else:  # BertXEncoder: the [CLS] position
                emb = hidden[:, 0]
            return self.text_proj(emb).float()


def _load_text_tower(
    cfg: M2DConfig, state: dict, text_model: str | None, report: dict
) -> _TextTower:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    default, pooling = _TEXT_ENCODERS[cfg.text_encoder]
    source = (
        str(Path(text_model).expanduser())
        if text_model and Path(text_model).expanduser().exists()
        else (text_model or default)
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        if cfg.text_inside:
            model = AutoModel.from_config(AutoConfig.from_pretrained(source))
        else:
            model = AutoModel.from_pretrained(source)
    except OSError as exc:
        raise OSError(
            f"M2D-CLAP text tower {source!r} is neither a local folder nor in the Hugging Face "
            f"cache ({exc.__class__.__name__}). Download it once (e.g. `hf download {default}`), "
            "or pass text_model=<folder with its config, tokenizer and weights>; set HF_HOME to "
            "where the cache is and HF_HUB_OFFLINE=1 to stay offline."
        ) from None
    if cfg.text_inside:  # BertXEncoder state dict stored as text_encoder.text_encoder.* (pTI files)
        prefix = "text_encoder.text_encoder."
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        sub = {k: v for k, v in sub.items() if not k.endswith("position_ids")}
        missing, unexpected = model.load_state_dict(sub, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        report["missing"] += [prefix + k for k in missing]
        report["unexpected"] += [prefix + k for k in unexpected]
    proj = _mlp_projector(state, "text_proj")
    if proj is not None:
        proj.load_state_dict(
            {k[len("text_proj.") :]: v for k, v in state.items() if k.startswith("text_proj.")}
        )
    tower = _TextTower(model.eval(), tokenizer, pooling, proj)
    tower.revision = resolve_revision(source, None, model.config)  # commit or local-file hash
    return tower


# ----------------------------------------------------------------------------------------------
# The family
# ----------------------------------------------------------------------------------------------
class M2DClapFamily(ModelFamily):
    """One loaded M2D-CLAP checkpoint (see the module docstring)."""

    name = "m2d-clap"
    openvino = False  # features vary in length and the attention mask is data-dependent

    def __init__(
        self,
        cfg: M2DConfig,
        tower: M2DAudioTower,
        text: _TextTower,
        *,
        model_id: str,
        revision: str,
        text_model: str,
        logit_scale: float,
        key_report: dict,
    ):
        self.config = cfg
        self.audio_tower = tower.eval().requires_grad_(False)
        self.text_tower = text.eval().requires_grad_(False)
        self.model_id = model_id
        self.revision = revision
        self.text_model = text_model
        self.key_report = key_report
        self._logit_scale = logit_scale
        fe = _FRONTENDS[cfg.sr]
        self.sample_rate = fe["sample_rate"]
        self.n_fft, self.hop = fe["n_fft"], fe["hop"]
        self.unit_frames = cfg.input_size[1]
        # The longest clip whose centred STFT has at most the native frames: 1 + n // hop frames.
        self.window_samples = (self.unit_frames - 1) * self.hop
        self.dim = tower.out_dim
        fb = mel_filter_bank(
            self.n_fft // 2 + 1, fe["n_mels"], fe["f_min"], fe["f_max"], self.sample_rate
        )
        self._mel = torch.tensor(fb, dtype=torch.float32)  # float32 like librosa's default
        self._window = torch.tensor(hann_window(self.n_fft), dtype=torch.float32)
        self.norm_stats = tuple(float(v) for v in tower.norm_stats.detach().cpu())

    @property
    def device(self) -> torch.device:
        return self.audio_tower.pos_embed.device

    def to(self, device: torch.device) -> M2DClapFamily:
        self.audio_tower.to(device)
        self.text_tower.to(device)
        return self

    @property
    def logit_scale(self) -> float:
        return self._logit_scale

    def namespace(self) -> dict:
        return {
            "config": self.config.name,
            "frontend": _FRONTENDS[self.config.sr],
            "norm_stats": list(self.norm_stats),
            "log_eps": float(torch.finfo(torch.float32).eps),
            "text_model": self.text_model,
            "text_revision": self.text_tower.revision,
            "text_pooling": _TEXT_ENCODERS[self.config.text_encoder][1],
            "window_samples": self.window_samples,
        }

    @torch.inference_mode()
    def features(
        self, waveforms: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised log-mel ``(B, 1, n_mels, T)`` and ``time_patches`` (B,) int64."""
        dev = self.device
        x = waveforms.to(device=dev, dtype=torch.float32)
        lens = [int(n) for n in torch.as_tensor(lengths).reshape(-1).tolist()]
        if len(lens) != x.shape[0] or any(not 0 < n <= x.shape[1] for n in lens):
            raise ValueError(f"lengths must be in 1..{x.shape[1]}, one per row; got {lens[:8]}")
        pad = self.n_fft // 2
        frames = [1 + n // self.hop for n in lens]
        if max(frames) > self.unit_frames:
            raise ValueError(
                f"a window holds at most {self.window_samples} samples ({self.unit_frames} frames); "
                f"got {max(lens)}: cut long clips into windows first"
            )
        padded = x.new_zeros((x.shape[0], max(max(lens), pad + 1) + 2 * pad))
        for i, n in enumerate(lens):
            clip = x[i, :n]
            if n <= pad:  # reflect padding needs more samples than it pads
                clip = F.pad(clip, (0, pad + 1 - n))
            row = F.pad(clip[None, None], (pad, pad), mode="reflect")[0, 0]
            padded[i, : row.shape[0]] = row
        with torch.autocast(dev.type, enabled=False):
            spec = torch.stft(
                padded,
                self.n_fft,
                self.hop,
                window=self._window.to(dev),
                center=False,
                return_complex=True,
            )[..., : max(frames)]
            power = spec.real.square() + spec.imag.square()
            mel = torch.matmul(self._mel.to(dev).T, power)  # (B, n_mels, frames)
            lms = (mel + torch.finfo(torch.float32).eps).log()
            lms = (lms - self.norm_stats[0]) / self.norm_stats[1]
        # Frames are zero-padded (normalised units) to whole patches, as officially; a window of
        # more frames than whole patches (1001 frames = 62 patches + 9) drops the rest, as the
        # official patch convolution does (official code fails for 993..1000 frames there).
        pf, grid_t = self.config.patch_size[1], self.audio_tower.grid[1]
        counts = [min(math.ceil(f / pf), grid_t) for f in frames]
        out = lms.new_zeros((lms.shape[0], 1, lms.shape[1], max(counts) * pf))
        for i, (f, c) in enumerate(zip(frames, counts, strict=True)):
            keep = min(f, c * pf)
            out[i, 0, :, :keep] = lms[i, :, :keep]
        return out, torch.tensor(counts, dtype=torch.int64, device=dev)

    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        return self.text_tower(list(texts))

    def audio_embeddings(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Un-normalised (B, D) fp32 embeddings of windows (convenience for tests and checks)."""
        with torch.inference_mode():
            return self.audio_tower(*self.features(waveforms, lengths)).float()


def load_m2d_clap(
    checkpoint: str | Path,
    *,
    text_model: str | None = None,
    device: str | torch.device = "cpu",
    revision: str | None = None,
    name: str | None = None,
) -> M2DClapFamily:
    """Load an official M2D-CLAP release checkpoint (see the module docstring).

    Args:
        checkpoint: the ``checkpoint-*.pth`` file, inside its release folder (whose name holds
            the configuration) unless ``name`` is given.
        text_model: hub id (from the offline HF cache) or local folder of the text encoder;
            default a folder ``gte-base`` (``bert-base-uncased`` for ``B``) beside the release
            folder, else the hub id ``thenlper/gte-base`` (``A``) or
            ``google-bert/bert-base-uncased`` (``B``).
        device: torch device for both towers.
        revision: cache-key revision; default a hash of the file's path, name, size and mtime.
        name: configuration name to use instead of the folder name (e.g.
            ``"m2d_clap_vit_base-80x608p16x16-240128"``).

    Raises:
        ValueError: unreadable name, unsafe pickle, missing weights or shapes that do not fit.
        OSError: the text tower is not available offline.
    """
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"M2D-CLAP checkpoint not found: {checkpoint}")
    if name is None:
        try:
            cfg = parse_m2d_name(path.parent.name)
        except ValueError:
            cfg = parse_m2d_name(path.stem)  # official fallback: the file's own name
    else:
        cfg = parse_m2d_name(name)
    state = read_checkpoint(path)
    if not is_m2d_clap_state_dict(state):
        raise ValueError(f"{path}: no M2D-CLAP weights (pos_embed, patch_embed, audio_proj)")
    report: dict = {"missing": [], "unexpected": [], "dropped": 0, "default_norm_stats": False}
    tower = M2DAudioTower(cfg, state)
    want = tower.state_dict()
    if "norm_stats" not in state:
        state = {**state, "norm_stats": torch.tensor(DEFAULT_NORM_STATS)}
        report["default_norm_stats"] = True
    used = {k: v for k, v in state.items() if k in want}
    text_keys = ("text_proj.", "text_encoder.", "logit_scale")
    for k in state:
        if k in want or k.startswith(text_keys):
            continue
        if k.startswith(_UNUSED_PREFIXES):
            report["dropped"] += 1
        else:
            report["unexpected"].append(k)
    report["missing"] += [k for k in want if k not in used]
    bad = [k for k, v in used.items() if v.shape != want[k].shape]
    if bad:
        raise ValueError(
            f"{path}: shapes do not fit the configuration {cfg.name} for {bad[:5]} (e.g. "
            f"{tuple(used[bad[0]].shape)} vs {tuple(want[bad[0]].shape)}): wrong folder name?"
        )
    tower.load_state_dict(used, strict=False)
    dev = torch.device(device)
    if text_model is None:  # a folder named like the default hub id beside the release folder
        beside = path.parent.parent / _TEXT_ENCODERS[cfg.text_encoder][0].split("/")[-1]
        text_model = str(beside) if beside.is_dir() else None
    text = _load_text_tower(cfg, state, text_model, report)
    if report["missing"]:
        raise ValueError(
            f"{path}: missing weights {report['missing'][:10]} ({len(report['missing'])} in all)"
        )
    if report["unexpected"]:
        warnings.warn(
            f"{path}: unused keys {report['unexpected'][:10]} ({len(report['unexpected'])} in all)",
            stacklevel=2,
        )
    # CLIP temperature stored as its log (M2D_CLAP_ViT.logit_scale); init log(1 / 0.07).
    scale = float(state["logit_scale"].exp()) if "logit_scale" in state else 1 / 0.07
    fam = M2DClapFamily(
        cfg,
        tower,
        text,
        model_id=str(checkpoint),
        revision=revision or local_revision(path),
        text_model=text_model or _TEXT_ENCODERS[cfg.text_encoder][0],
        logit_scale=scale,
        key_report=report,
    )
    return fam.to(dev)


def _load(
    model_id: str,
    *,
    device: torch.device,
    revision: str | None = None,
    text_model: str | None = None,
    name: str | None = None,
) -> M2DClapFamily:
    return load_m2d_clap(
        model_id, text_model=text_model, device=device, revision=revision, name=name
    )


register_family(
    M2DClapFamily.name,
    _load,
    detect=detect_m2d_clap,
    description="M2D-CLAP (ViT on 16 kHz log-mel + GTE/BERT) from its official release .pth",
)
