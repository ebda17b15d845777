"""The ``"audioclip"`` family: AudioCLIP (Guzhov et al. 2021) from ``AudioCLIP-Full-Training.pt``.

The release file is a plain ``AudioCLIP`` state dict (CLIP RN50 + ESResNeXt-fbsp audio head).
This module runs its audio head and CLIP text transformer with the project's own code::

    fam = load_audioclip("AudioCLIP-Full-Training.pt")                 # BPE vocabulary from open_clip
    fam = load_audioclip(path, bpe_vocab="bpe_simple_vocab_16e6.txt.gz")

What it reproduces (AndreyGuzhov/AudioCLIP at 45327aa, ``model/audioclip.py``,
``model/esresnet``, ``model/clip``, ``utils/transforms.py``, ``protocols/``), in eval mode:
    * amplitude: the published zero-shot numbers come from the repo's dataset loaders, which give
      the model int16-scaled floats: ESC-50 (69.40) multiplies librosa's [-1, 1] floats by 32768
      (``amplitude="int16"``, the default), UrbanSound8K (68.78) min-max scales every clip to
      [-32768, 32767] (``amplitude="minmax"``). The model maps [-32768, 32767] back to [-1, 1]
      itself, so feeding [-1, 1] floats directly (as the demo notebook does) shrinks the input
      32768 times;
    * 44.1 kHz, 5 s windows (220 500 samples, the ESC-50 protocol's test length); a shorter clip
      is centred and padded with its first / last sample value (``RandomPadding(train=False)``);
    * front-end: frames of 1654 samples every 561 (zero-padded half before / half after when
      the last frame overhangs), periodic Blackman-Harris window, zero-padded to 2048, the
      learnable frequency-B-spline transform (``LinearFBSP``, normalised, 1025 bins) from the
      file, power of the first 1023 bins split into 3 bands of 341 (the three input channels),
      ``10 * log10(max(power, 1e-18))`` (zeros only);
    * ESResNeXt-50 (32 x 4d) with its five attention blocks, BatchNorm from running statistics,
      global average pooling, ``fc`` to the 1024-d embedding;
    * text: CLIP's byte-pair tokenizer (``<|startoftext|>`` ... ``<|endoftext|>``, 77 tokens,
      zero padding), causal transformer, ``ln_final`` at the end-of-text token, ``text_projection``.
      One text is one entity (``[[text]]`` in AudioCLIP's list-of-lists API). Differences: texts
      over 77 tokens are cut (keeping the end-of-text token) where the original raises, and
      ``ftfy`` text repair is not applied (ordinary text is unaffected).

The byte-pair vocabulary ``bpe_simple_vocab_16e6.txt.gz`` (OpenAI CLIP, MIT licence; also shipped
in the ``open_clip_torch`` wheel, MIT) is not vendored: pass its path, put it next to the
checkpoint, or have ``open_clip`` installed. The state dict is read with ``torch.load(weights_only=True)``; the image tower
(``visual.*``) and the image logit scales are dropped by name, other unknown keys are a warning,
missing ones an error.

Used by: clap_helpers.embedding.families.registry (``load_clap(..., family="audioclip")``).
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import math
import warnings
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import ModelFamily
from .registry import local_revision, register_family

__all__ = [
    "AMPLITUDES",
    "AudioClipFamily",
    "ClipBPE",
    "ESResNeXtTower",
    "detect_audioclip",
    "is_audioclip_state_dict",
    "load_audioclip",
]

SAMPLE_RATE = 44_100  # protocols/audioclip-*.json "sample_rate"
WINDOW_SAMPLES = 220_500  # protocols/audioclip-esc50.json RandomPadding/RandomCrop out_len (5 s)
# AudioCLIP.__init__ defaults (model/audioclip.py): n_fft 2048, hop 561, win 1654, blackmanharris.
N_FFT, HOP, WIN = 2048, 561, 1654
_BANDS = 3  # conv1.in_channels: the spectrum's first 3 * 341 bins as three channels
_LOG10_EPS = 1e-18  # _ESResNet.log10_eps
_CONTEXT = 77  # clip.tokenize context_length
AMPLITUDES = ("int16", "minmax")
_UNUSED = ("visual.", "logit_scale", "logit_scale_ai")  # image tower and its temperatures
_BH = (0.35875, 0.48829, 0.14128, 0.01168)  # Blackman-Harris coefficients (scipy.signal)


def _blackman_harris(n: int) -> torch.Tensor:
    """Periodic Blackman-Harris window (``scipy.signal.get_window('blackmanharris', n)``)."""
    k = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
    w = _BH[0] - _BH[1] * torch.cos(k) + _BH[2] * torch.cos(2 * k) - _BH[3] * torch.cos(3 * k)
    return w.float()


# ----------------------------------------------------------------------------------------------
# CLIP byte-pair tokenizer
# ----------------------------------------------------------------------------------------------
@lru_cache
def _byte_symbols() -> dict[int, str]:
    """Reversible byte -> printable unicode symbol table of GPT-2 / CLIP byte-level BPE."""
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class ClipBPE:
    """CLIP's tokenizer: lower-cased words, byte symbols, merges by rank, ``</w>`` word ends."""

    def __init__(self, path: str | Path, n_merges: int = 49152 - 256 - 2):
        import regex

        lines = gzip.open(path).read().decode("utf-8").split("\n")[1 : 1 + n_merges]
        merges = [tuple(line.split()) for line in lines if line.strip()]
        symbols = list(_byte_symbols().values())
        vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges)]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {t: i for i, t in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.sot, self.eot = self.encoder["<|startoftext|>"], self.encoder["<|endoftext|>"]
        self._pattern = regex.compile(
            r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
            regex.IGNORECASE,
        )
        self._cache: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self.encoder)

    def _bpe(self, token: str) -> list[str]:
        if token in self._cache:
            return self._cache[token]
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:], strict=False)}
            best = min(pairs, key=lambda p: self.ranks.get(p, math.inf))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self._cache[token] = word
        return word

    def encode(self, text: str) -> list[int]:
        text = " ".join(html.unescape(html.unescape(text)).split()).lower()
        table = _byte_symbols()
        ids = []
        for tok in self._pattern.findall(text):
            ids += [
                self.encoder[p] for p in self._bpe("".join(table[b] for b in tok.encode("utf-8")))
            ]
        return ids

    def __call__(self, texts: list[str], context: int = _CONTEXT) -> torch.Tensor:
        out = torch.zeros(len(texts), context, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.sot, *self.encode(t)][: context - 1] + [self.eot]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


def _default_bpe() -> Path | None:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    return path if path.is_file() else None


# ----------------------------------------------------------------------------------------------
# Towers (key names as in the file, under "audio." and the CLIP text names)
# ----------------------------------------------------------------------------------------------
class _Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, cout: int, stride: int, groups: int, down: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        if down:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.downsample(x) if hasattr(self, "downsample") else x))


class _Attention2d(nn.Module):
    """model/esresnet/attention.py: max-pool to the target size, depthwise + pointwise conv,
    BatchNorm, sigmoid; multiplies the layer output."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int]):
        super().__init__()
        pad = (kernel[0] // 2, kernel[1] // 2)
        self.conv_depth = nn.Conv2d(cin, cin, kernel, padding=pad, groups=cin)
        self.conv_point = nn.Conv2d(cin, cout, 1)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        return torch.sigmoid(
            self.bn(self.conv_point(self.conv_depth(F.adaptive_max_pool2d(x, size))))
        )


# Attention kernels after layer1..4 and after pooling (ResNetWithAttention.__init__).
_ATT_KERNELS = ((3, 1), (1, 5), (3, 1), (1, 5), (3, 5))


class ESResNeXtTower(nn.Module):
    """ESResNeXt-fbsp after its front-end: dB spectrogram ``(B, 3, 341, frames)`` -> (B, D).
    Sizes (widths, blocks per layer, groups) are read from the state dict."""

    def __init__(self, state: dict):
        super().__init__()
        s = {k[len("audio.") :]: v for k, v in state.items() if k.startswith("audio.")}
        stem = s["conv1.weight"].shape[0]
        self.conv1 = nn.Conv2d(_BANDS, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        cin = stem
        for li in range(1, 5):
            n = 1 + max(int(k.split(".")[1]) for k in s if k.startswith(f"layer{li}."))
            w = s[f"layer{li}.0.conv2.weight"]
            width, groups = w.shape[0], w.shape[0] // w.shape[1]
            cout = s[f"layer{li}.0.conv3.weight"].shape[0]
            blocks = [
                _Bottleneck(
                    cin if b == 0 else cout,
                    width,
                    cout,
                    2 if (b == 0 and li > 1) else 1,
                    groups,
                    b == 0 and f"layer{li}.0.downsample.0.weight" in s,
                )
                for b in range(n)
            ]
            setattr(self, f"layer{li}", nn.Sequential(*blocks))
            att_in = s[f"att{li}.conv_depth.weight"].shape[0]
            setattr(self, f"att{li}", _Attention2d(att_in, cout, _ATT_KERNELS[li - 1]))
            cin = cout
        self.att5 = _Attention2d(cin, s["att5.conv_point.weight"].shape[0], _ATT_KERNELS[4])
        self.fc = nn.Linear(cin, s["fc.weight"].shape[0])

    def forward(self, x_db: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x_db))), 3, 2, 1)
        for li in range(1, 5):
            y = getattr(self, f"layer{li}")(x)
            x = y * getattr(self, f"att{li}")(x, y.shape[-2:])
        pooled = F.adaptive_avg_pool2d(x, 1)
        pooled = pooled * self.att5(x, pooled.shape[-2:])
        return self.fc(pooled.flatten(1))


class _ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.heads = max(width // 64, 1)  # CLIP build_model: transformer_heads = width // 64
        self.attn = nn.MultiheadAttention(width, self.heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, W)
        b, n, w = x.shape
        q, k, v = F.linear(self.ln_1(x), self.attn.in_proj_weight, self.attn.in_proj_bias).chunk(
            3, dim=-1
        )
        q, k, v = (t.reshape(b, n, self.heads, w // self.heads).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, n, w)
        x = x + self.attn.out_proj(a)
        h = self.mlp.c_fc(self.ln_2(x))
        return x + self.mlp.c_proj(h * torch.sigmoid(1.702 * h))  # QuickGELU


class _ClipText(nn.Module):
    def __init__(self, state: dict):
        super().__init__()
        vocab, width = state["token_embedding.weight"].shape
        layers = 1 + max(
            int(k.split(".")[2]) for k in state if k.startswith("transformer.resblocks.")
        )
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.zeros(state["positional_embedding"].shape))
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.Sequential(*(_ResBlock(width) for _ in range(layers)))
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.zeros(state["text_projection"].shape))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.ln_final(self.transformer.resblocks(x))
        return x[torch.arange(x.shape[0]), tokens.argmax(-1)] @ self.text_projection


# ----------------------------------------------------------------------------------------------
# The family
# ----------------------------------------------------------------------------------------------
class AudioClipFamily(ModelFamily):
    """One loaded AudioCLIP checkpoint (see the module docstring)."""

    name = "audioclip"
    sample_rate = SAMPLE_RATE
    window_samples = WINDOW_SAMPLES

    def __init__(
        self,
        tower,
        text,
        bpe,
        fbsp: dict,
        *,
        model_id,
        revision,
        amplitude,
        logit_scale,
        key_report,
        bpe_path,
    ):
        self.audio_tower = tower.eval().requires_grad_(False)
        self.text_tower = text.eval().requires_grad_(False)
        self.bpe, self.bpe_path = bpe, str(bpe_path)
        self.model_id, self.revision, self.amplitude = model_id, revision, amplitude
        self.key_report, self._logit_scale = key_report, logit_scale
        self.dim = tower.fc.out_features
        self._fbsp = {k: v.float() for k, v in fbsp.items()}  # m, fb, fc (1025 each), bias
        self._window = _blackman_harris(WIN)
        self._weights: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.audio_tower.fc.weight.device

    def to(self, device: torch.device) -> AudioClipFamily:
        self.audio_tower.to(device)
        self.text_tower.to(device)
        return self

    @property
    def logit_scale(self) -> float:
        return self._logit_scale

    def namespace(self) -> dict:
        return {
            "amplitude": self.amplitude,
            "window_samples": WINDOW_SAMPLES,
            "padding": "centred, edge values",
            "frontend": {
                "n_fft": N_FFT,
                "hop": HOP,
                "win": WIN,
                "window": "blackmanharris",
                "log10_eps": _LOG10_EPS,
            },
            "text": {
                "context": _CONTEXT,
                "bpe": Path(self.bpe_path).name,
                "bpe_size": len(self.bpe),
            },
        }

    def _fbsp_weights(self, dev: torch.device) -> torch.Tensor:
        """LinearFBSP._materialize_weights for real input of N_FFT samples: (bins, N_FFT, 2)."""
        eps = 1e-8
        t = math.pi * torch.linspace(-1.0, 1.0, N_FFT, device=dev).reshape(1, -1, 1) + eps
        m, fb, fc = (self._fbsp[k].to(dev).reshape(-1, 1, 1) for k in ("m", "fb", "fc"))
        kernel = torch.cat((torch.cos(fc * t), -torch.sin(fc * t)), dim=-1)
        x = fb * t / (m + eps)
        win = torch.where(x == 0, torch.ones_like(x), torch.sin(x) / x)  # sinc, real
        # win ** m as a complex power of a real number (LinearFBSP.power with imaginary part 0)
        mag, phase = win.abs(), torch.atan2(torch.zeros_like(win), win)
        mag_out = (mag**2) ** (0.5 * m)
        ang = m * phase + 0.5 * 0.0 * (mag**2).log()
        wr, wi = mag_out * ang.cos(), mag_out * ang.sin()
        kr, ki = kernel[..., :1], kernel[..., 1:]
        w = fb.sqrt() * torch.cat((wr * kr - wi * ki, wr * ki + wi * kr), dim=-1)
        return w / N_FFT**0.5  # normalized=True

    @torch.inference_mode()
    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor]:
        """dB spectrogram ``(B, 3, 341, 392)`` of 5 s windows (short clips centred and padded)."""
        dev = self.device
        lens = [int(n) for n in torch.as_tensor(lengths).reshape(-1).tolist()]
        if len(lens) != waveforms.shape[0] or any(
            not 0 < n <= min(waveforms.shape[1], WINDOW_SAMPLES) for n in lens
        ):
            raise ValueError(
                f"lengths must be in 1..{WINDOW_SAMPLES} (one 5 s window), one per row; got {lens[:8]}"
            )
        x = torch.empty((len(lens), WINDOW_SAMPLES), dtype=torch.float32, device=dev)
        for i, n in enumerate(lens):
            clip = waveforms[i, :n].to(device=dev, dtype=torch.float32)
            if (
                self.amplitude == "minmax"
            ):  # utils/datasets/us8k.py: scale(wav, min, max, -32768, 32767)
                lo, hi = clip.min(), clip.max()
                clip = (
                    (clip - lo) * 65535.0 / (hi - lo) - 32768.0
                    if hi > lo
                    else torch.zeros_like(clip)
                )
            else:  # utils/datasets/esc50.py: librosa floats * 32768
                clip = clip * 32768.0
            left = int(
                round(0.5 * (WINDOW_SAMPLES - n))
            )  # RandomPadding(train=False), Python round
            x[i, :left] = clip[0]
            x[i, left : left + n] = clip
            x[i, left + n :] = clip[-1]
        with torch.autocast(dev.type, enabled=False):
            x = (x + 32768.0) * 2.0 / 65535.0 - 1.0  # _ESResNet: scale(x, -32768, 32767, -1, 1)
            frames = 1 + math.ceil((WINDOW_SAMPLES - WIN) / HOP)  # utils/transforms.frame_signal
            extra = (frames - 1) * HOP + WIN - WINDOW_SAMPLES
            x = F.pad(x, (extra // 2, extra - extra // 2))
            fr = x.unfold(-1, WIN, HOP) * self._window.to(dev)
            fr = F.pad(fr, ((N_FFT - WIN) // 2, N_FFT - WIN - (N_FFT - WIN) // 2))
            if self._weights is None or self._weights.device != dev:  # materialised once
                self._weights = self._fbsp_weights(dev)
            w = self._weights
            re, im = F.linear(fr, w[..., 0]), F.linear(fr, w[..., 1])  # (B, frames, bins)
            bias = self._fbsp.get("bias")
            if bias is not None and bias.numel() == 2 * w.shape[0]:  # LinearFBSP: an empty
                re, im = re + bias[:, 0].to(dev), im + bias[:, 1].to(dev)  # tensor when unused
            power = (re.square() + im.square()).transpose(1, 2)  # (B, bins, frames)
            per = power.shape[1] // _BANDS
            power = power[:, : _BANDS * per].reshape(power.shape[0], _BANDS, per, power.shape[-1])
            power = torch.where(power > 0.0, power, torch.full_like(power, _LOG10_EPS))
            return (torch.log10(power) * 10.0,)

    @torch.inference_mode()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        tokens = self.bpe(list(texts), self.text_tower.positional_embedding.shape[0]).to(
            self.device
        )
        with torch.autocast(self.device.type, enabled=False):
            return self.text_tower(tokens).float()

    def audio_embeddings(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Un-normalised (B, D) fp32 embeddings of windows (convenience for tests and checks)."""
        with torch.inference_mode():
            return self.audio_tower(*self.features(waveforms, lengths)).float()


def read_state_dict(path: str | Path, mmap: bool = False) -> dict:
    """The plain state dict, read with ``weights_only=True`` (nothing else is unpickled)."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError or RuntimeError
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise ValueError(
                f"{path}: refused to unpickle a non-tensor object; not an AudioCLIP file?"
            ) from None
        raise
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a plain state dict")
    return obj


def is_audioclip_state_dict(keys) -> bool:
    """Key names of an AudioCLIP file: the ESResNeXt-fbsp head and CLIP's text transformer."""
    keys = set(keys)
    return {"audio.fbsp.m", "audio.fc.weight", "token_embedding.weight", "text_projection"} <= keys


def detect_audioclip(model_id: str, config: dict | None = None) -> bool:
    """Registry hook: ``model_id`` is a local ``.pt``/``.pth`` file with AudioCLIP key names."""
    path = Path(str(model_id)).expanduser()
    if config is not None or not path.is_file() or path.suffix not in (".pth", ".pt"):
        return False
    try:
        return is_audioclip_state_dict(read_state_dict(path, mmap=True))
    except (ValueError, RuntimeError, OSError):
        return False


def load_audioclip(
    checkpoint: str | Path,
    *,
    bpe_vocab: str | Path | None = None,
    amplitude: str = "int16",
    device: str | torch.device = "cpu",
    revision: str | None = None,
) -> AudioClipFamily:
    """Load ``AudioCLIP-Full-Training.pt`` (see the module docstring).

    Args:
        checkpoint: the release file (a plain state dict).
        bpe_vocab: CLIP's ``bpe_simple_vocab_16e6.txt.gz``; default a ``bpe_simple_vocab*.txt.gz``
            next to the checkpoint, else the copy inside an installed ``open_clip`` package.
        amplitude: ``"int16"`` (ESC-50 protocol, default) or ``"minmax"`` (UrbanSound8K protocol).
        device: torch device for both towers.
        revision: cache-key revision; default a hash of the file's path, name, size and mtime.
    """
    if amplitude not in AMPLITUDES:
        raise ValueError(f"amplitude must be one of {AMPLITUDES}, got {amplitude!r}")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"AudioCLIP checkpoint not found: {checkpoint}")
    beside = sorted(path.parent.glob("bpe_simple_vocab*.txt.gz"))  # downloaded next to the .pt
    bpe_path = (
        Path(bpe_vocab).expanduser() if bpe_vocab else (beside[0] if beside else _default_bpe())
    )
    if bpe_path is None or not bpe_path.is_file():
        raise FileNotFoundError(
            "AudioCLIP needs CLIP's byte-pair vocabulary bpe_simple_vocab_16e6.txt.gz (MIT licence): "
            "pass bpe_vocab=<path> (the file is in github.com/openai/CLIP, clip/) or install "
            "open_clip_torch, which ships it"
        )
    state = read_state_dict(path)
    if not is_audioclip_state_dict(state):
        raise ValueError(f"{path}: no AudioCLIP weights (audio.fbsp, audio.fc, token_embedding)")
    tower, text = ESResNeXtTower(state), _ClipText(state)
    report: dict = {"missing": [], "unexpected": [], "dropped": 0}
    wanted = {f"audio.{k}": v for k, v in tower.state_dict().items()} | text.state_dict()
    fbsp_keys = (
        "audio.fbsp.m",
        "audio.fbsp.fb",
        "audio.fbsp.fc",
        "audio.fbsp.bias",
        "audio.window",
    )
    for k in state:
        if k in wanted or k in fbsp_keys or k == "logit_scale_at":
            continue
        if k.startswith(_UNUSED):
            report["dropped"] += 1
        else:
            report["unexpected"].append(k)
    report["missing"] = [k for k in [*wanted, *fbsp_keys[:3]] if k not in state]
    if report["missing"]:
        raise ValueError(
            f"{path}: missing weights {report['missing'][:10]} ({len(report['missing'])} in all)"
        )
    if report["unexpected"]:
        warnings.warn(f"{path}: unused keys {report['unexpected'][:10]}", stacklevel=2)
    tower.load_state_dict({k[len("audio.") :]: state[k] for k in wanted if k.startswith("audio.")})
    text.load_state_dict({k: state[k] for k in wanted if not k.startswith("audio.")})
    bpe = ClipBPE(bpe_path, n_merges=state["token_embedding.weight"].shape[0] - 512 - 2)
    # AudioCLIP.forward: clamp(logit_scale_at.exp(), 1, 100); initialised to log(100).
    scale = (
        float(state["logit_scale_at"].exp().clamp(1.0, 100.0))
        if "logit_scale_at" in state
        else 100.0
    )
    fam = AudioClipFamily(
        tower,
        text,
        bpe,
        {
            k: state[f"audio.fbsp.{k}"]
            for k in ("m", "fb", "fc", "bias")
            if f"audio.fbsp.{k}" in state
        },
        model_id=str(checkpoint),
        revision=revision or local_revision(path),
        amplitude=amplitude,
        logit_scale=scale,
        key_report=report,
        bpe_path=bpe_path,
    )
    return fam.to(torch.device(device))


def _load(
    model_id: str,
    *,
    device: torch.device,
    revision: str | None = None,
    bpe_vocab=None,
    amplitude: str = "int16",
) -> AudioClipFamily:
    return load_audioclip(
        model_id, bpe_vocab=bpe_vocab, amplitude=amplitude, device=device, revision=revision
    )


register_family(
    AudioClipFamily.name,
    _load,
    detect=detect_audioclip,
    description="AudioCLIP (ESResNeXt-fbsp + CLIP text) from AudioCLIP-Full-Training.pt",
)
