"""MS-CLAP 2022 and 2023 (Microsoft CLAP) loaded from their official release files.

``CLAP_weights_2022.pth`` (CNN14 audio + BERT text) and ``CLAP_weights_2023.pth`` (HTSAT audio +
GPT-2 text) from the hub repo ``microsoft/msclap`` hold ``{'model': state_dict}`` with the keys of
the official ``msclap.models.clap.CLAP`` module. :func:`load_msclap` reads them with
``torch.load(weights_only=True)`` (no arbitrary unpickling), builds the project's own towers
(:mod:`.msclap_audio`, transformers' ``GPT2Model`` / ``BertModel`` built from the ``text_model``
config) and loads the state dict strictly: keys the official loader ignores silently (it uses
``strict=False``) are either dropped on purpose (:data:`KNOWN_UNUSED`) or reported.

Front-end and text path, as the official inference code computes them (github.com/microsoft/CLAP,
``msclap/CLAPWrapper.py``, ``models/*.py``, ``configs/config_20xx.yml``):

* audio at 44.1 kHz (``sampling_rate: 44100``); the project resamples with soxr (the official
  wrapper uses torchaudio's sinc ``Resample``: resampled audio differs slightly, native 44.1 kHz
  audio is identical);
* clips shorter than the native length (5 s in 2022, 7 s in 2023: ``duration``) are repeated
  whole and cut to it; longer clips are cut into consecutive windows by the encoder (the official
  wrapper takes one *random* crop);
* STFT n_fft = window 1024, hop 320, periodic Hann, centred frames with reflect padding, power
  spectrum (torchlibrosa ``Spectrogram``), Slaney mel filter bank with Slaney norm, 64 bands from
  50 Hz to 14 kHz, ``10 log10(max(x, 1e-10))`` (torchlibrosa ``LogmelFilterBank``, ref 1, no
  top_db). 2022 builds the filter bank for 44.1 kHz; 2023's HTSAT builds it from its own
  ``config.py`` for **32 kHz** (its yaml's ``fmax: 8000`` is never used), applied to 44.1 kHz
  audio. The file also stores the STFT kernels and the filter bank: they are checked against
  these constants at load (a mismatch is an error);
* text: 2023 appends ``' <|endoftext|>'``, pads with ``'!'`` (GPT-2 id 0) to 77 tokens and
  takes the hidden state at index ``count(ids != 0) - 1`` (the end-of-text token; a text that
  itself contains ``'!'`` moves it earlier, as in the official code); 2022 pads with BERT's
  ``[PAD]`` to 100 tokens and takes the ``[CLS]`` state. Texts longer than that are not
  truncated (as the official ``padding='max_length'`` without truncation); the
  batch is padded to its longest text, which leaves every embedding unchanged;
* both towers end in the projection head; embeddings are not normalised by the official code
  (the encoder L2-normalises); the logit scale is ``exp(logit_scale)`` from the file.

Used by: the family registry (``load_clap(path, family="msclap-2023")``) and notebooks through it.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..frontend import hann_window, mel_filter_bank, pad_or_repeat
from .base import ModelFamily
from .msclap_audio import (
    Cnn14,
    HtsatEncoder,
    MsClapAudioTower,
    Projection,
    cnn14_shape,
    htsat_shape,
)
from .registry import local_revision, register_family

__all__ = [
    "KNOWN_UNUSED",
    "MSCLAP_REPO",
    "VARIANTS",
    "KeyReport",
    "MsClap",
    "MsClapTextTower",
    "MsClapVariant",
    "detect_msclap",
    "detect_msclap_file",
    "load_msclap",
    "load_msclap_state_dict",
    "log_mel_of",
    "stft_kernels",
]

MSCLAP_REPO = "microsoft/msclap"  # CLAPWrapper.model_repo


@dataclass(frozen=True)
class MsClapVariant:
    """Constants of one release (configs/config_20xx.yml, models/config.py for HTSAT's mel)."""

    name: str
    filename: str  # CLAPWrapper.model_name
    text_model: str  # yml text_model
    text_len: int  # yml text_len
    duration_s: int  # yml duration: native clip length
    mel_sample_rate: int  # rate the mel filter bank is built for
    sample_rate: int = 44_100  # yml sampling_rate
    n_fft: int = 1024  # yml window_size (n_fft 1028 in the 2022 yml is unused)
    hop: int = 320  # yml hop_size
    n_mels: int = 64  # yml mel_bins
    f_min: float = 50.0  # yml fmin (HTSAT config.py fmin too)
    f_max: float = 14_000.0  # 2022 yml fmax; HTSAT config.py fmax (2023 yml's 8000 is unused)
    eot_suffix: str = ""  # appended to every text
    pad_token: str | None = None  # added as the tokenizer's pad token


VARIANTS = {
    "msclap-2022": MsClapVariant(
        "msclap-2022", "CLAP_weights_2022.pth", "bert-base-uncased", 100, 5, 44_100
    ),
    "msclap-2023": MsClapVariant(
        "msclap-2023",
        "CLAP_weights_2023.pth",
        "gpt2",
        77,
        7,
        32_000,  # HTSAT's config.py sample_rate builds the filter bank
        eot_suffix=" <|endoftext|>",  # CLAPWrapper.preprocess_text for 'gpt' text models
        pad_token="!",  # CLAPWrapper.load_clap: tokenizer.add_special_tokens({'pad_token': '!'})
    ),
}

# Keys the official model holds but the embedding never uses (dropped before the strict load):
# the clip-wise AudioSet classifiers, the legacy GPT-2 causal-mask buffers of old transformers
# versions, and BERT's old persistent position (and token type) id buffers. The front-end
# kernels are checked, then dropped.
KNOWN_UNUSED = (
    r"^audio_encoder\.base\.fc_audioset\.",
    r"^audio_encoder\.base\.htsat\.(tscam_conv|head)\.",
    r"^caption_encoder\.base\.h\.\d+\.attn\.(bias|masked_bias)$",
    r"^caption_encoder\.base\.embeddings\.(position_ids|token_type_ids)$",
)
_FRONTEND_KEYS = (
    "spectrogram_extractor.stft.conv_real.weight",
    "spectrogram_extractor.stft.conv_imag.weight",
    "logmel_extractor.melW",
)


@dataclass
class KeyReport:
    """What a load did with the file's keys."""

    dropped: list[str] = field(default_factory=list)  # KNOWN_UNUSED and front-end kernels
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.missing and not self.unexpected

    def __str__(self) -> str:
        def few(keys):
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {few(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {few(self.unexpected)}")
        return "; ".join(parts) or "all keys used"


# ----------------------------------------------------------------------------------------------
# Reading and detection
# ----------------------------------------------------------------------------------------------
def load_msclap_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an official file (``{'model': state_dict}``), read with
    ``weights_only=True``; a bare state dict is accepted too."""
    try:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a legacy (non-zip) torch file cannot be memory-mapped
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, not torch, or not weights-only
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{path}: cannot read it as a weights-only torch file ({reason})"
        ) from None
    sd = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: not an MS-CLAP checkpoint ({{'model': state_dict}} expected)")
    return sd


def detect_msclap(keys) -> str | None:
    """``"msclap-2022"`` / ``"msclap-2023"`` from a state dict's key names, else None."""
    keys = list(keys)
    if not any(k.startswith("caption_encoder.base.") for k in keys):
        return None
    if any(k.startswith("audio_encoder.base.htsat.") for k in keys):
        return "msclap-2023"
    if any(k.startswith("audio_encoder.base.conv_block1.") for k in keys):
        return "msclap-2022"
    return None


# ----------------------------------------------------------------------------------------------
# Front-end constants
# ----------------------------------------------------------------------------------------------
def stft_kernels(n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torchlibrosa's STFT conv kernels (n_fft//2+1, 1, n_fft): windowed cos and -sin (as stored
    in the official files under ``spectrogram_extractor.stft.conv_{real,imag}.weight``)."""
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)[:, None]
    phase = 2.0 * np.pi * ((k * n) % n_fft) / n_fft
    w = hann_window(n_fft)
    real = torch.from_numpy((np.cos(phase) * w)[:, None, :]).float()
    imag = torch.from_numpy((-np.sin(phase) * w)[:, None, :]).float()
    return real, imag


def _mel_fb(v: MsClapVariant) -> np.ndarray:
    """(n_fft//2+1, n_mels) float64: librosa's default (Slaney scale and norm) mel filters."""
    return mel_filter_bank(v.n_fft // 2 + 1, v.n_mels, v.f_min, v.f_max, v.mel_sample_rate)


def _check_frontend(sd: dict, prefix: str, v: MsClapVariant) -> None:
    """The file's STFT kernels and filter bank must equal the variant's constants."""
    real, imag = stft_kernels(v.n_fft)
    expected = {
        _FRONTEND_KEYS[0]: real,
        _FRONTEND_KEYS[1]: imag,
        _FRONTEND_KEYS[2]: torch.from_numpy(_mel_fb(v)).float(),
    }
    for key, want in expected.items():
        got = sd.get(prefix + key)
        if got is None:
            continue
        if got.shape != want.shape or not torch.allclose(got.float(), want, atol=1e-5, rtol=1e-4):
            raise ValueError(
                f"{prefix + key} in the checkpoint does not match the {v.name} front-end "
                f"(built for {v.mel_sample_rate} Hz, {v.f_min}-{v.f_max} Hz, n_fft {v.n_fft})"
            )


def log_mel_of(x: torch.Tensor, v: MsClapVariant, window=None, mel=None, device=None):
    """(B, T) -> (B, 1, 1 + T // hop, n_mels) float32 dB: reflect-padded centred frames,
    periodic Hann STFT, power, mel filter bank, ``10 log10(max(., 1e-10))``."""
    device = torch.device(device) if device is not None else x.device
    window = torch.from_numpy(hann_window(v.n_fft)).float() if window is None else window
    mel = torch.from_numpy(_mel_fb(v)).float() if mel is None else mel
    x = x.to(device=device, dtype=torch.float32)
    with torch.autocast(device.type, enabled=False), torch.no_grad():
        pad = v.n_fft // 2
        x = F.pad(x[:, None], (pad, pad), mode="reflect")[:, 0]
        spec = torch.stft(
            x, v.n_fft, v.hop, window=window.to(device), center=False, return_complex=True
        )
        power = spec.real.square() + spec.imag.square()  # (B, bins, frames)
        out = power.transpose(1, 2) @ mel.to(device)
        return out.clamp_min(1e-10).log10().mul(10.0)[:, None]


# ----------------------------------------------------------------------------------------------
# Text tower
# ----------------------------------------------------------------------------------------------
class MsClapTextTower(torch.nn.Module):
    """``caption_encoder``: a transformers GPT-2 / BERT body (``base``) + ``projection``.

    ``forward(input_ids, attention_mask, token_type_ids=None)`` -> (C, d_proj). GPT-2 pools at
    index ``count(input_ids != 0) - 1``, BERT at the first ([CLS]) position.
    """

    def __init__(self, base: torch.nn.Module, d_in: int, d_out: int, pooling: str) -> None:
        super().__init__()
        self.base = base
        self.projection = Projection(d_in, d_out)
        self.pooling = pooling

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.base(**kwargs)[0]
        if self.pooling == "eot":
            idx = torch.ne(input_ids, 0).sum(-1) - 1  # the official index rule
            out = hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
        else:
            out = hidden[:, 0]
        return self.projection(out)


def _text_tower(variant: MsClapVariant, text_model: str, sd: dict, d_proj: int):
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(text_model)
        tokenizer = AutoTokenizer.from_pretrained(text_model)
    except OSError as exc:
        raise OSError(
            f"cannot read the text model config/tokenizer {text_model!r} for {variant.name} "
            f"({exc}). Pass text_model=<a local folder with config.json and tokenizer files> or "
            "a hub id that is in the Hugging Face cache"
        ) from None
    want = "gpt2" if variant.name == "msclap-2023" else "bert"
    if config.model_type != want:
        raise ValueError(
            f"{variant.name} needs a {want} text model, {text_model} is {config.model_type!r}"
        )
    if variant.pad_token is not None:
        tokenizer.add_special_tokens({"pad_token": variant.pad_token})
    base = AutoModel.from_config(config)
    emb_key = "caption_encoder.base." + (
        "wte.weight" if want == "gpt2" else "embeddings.word_embeddings.weight"
    )
    if emb_key in sd and tuple(sd[emb_key].shape) != (config.vocab_size, config.hidden_size):
        raise ValueError(
            f"text model {text_model!r} has vocab x width {config.vocab_size} x "
            f"{config.hidden_size}, the checkpoint {tuple(sd[emb_key].shape)}"
        )
    pooling = "eot" if want == "gpt2" else "cls"
    return MsClapTextTower(base, config.hidden_size, d_proj, pooling), tokenizer


# ----------------------------------------------------------------------------------------------
# The family
# ----------------------------------------------------------------------------------------------
class MsClap(ModelFamily):
    """One MS-CLAP release on one device (see the module doc for the maths)."""

    fused = False

    def __init__(
        self,
        variant,
        audio_tower,
        text_tower,
        tokenizer,
        logit_scale: float,
        *,
        model_id: str,
        revision: str,
        text_model: str,
        report: KeyReport,
    ) -> None:
        self.variant = variant
        self.name = variant.name
        self.model_id = model_id
        self.revision = revision
        self.text_model = text_model
        self.sample_rate = variant.sample_rate
        self.window_samples = variant.duration_s * variant.sample_rate
        self.audio_tower = audio_tower.eval()
        self.text_tower = text_tower.eval()
        self.tokenizer = tokenizer
        self.dim = int(audio_tower.projection.linear1.weight.shape[0])
        self._logit_scale = float(logit_scale)
        self.report = report
        self._window = torch.from_numpy(hann_window(variant.n_fft)).float()
        self._mel = torch.from_numpy(_mel_fb(variant)).float()

    @property
    def device(self) -> torch.device:
        return next(self.audio_tower.parameters()).device

    @property
    def logit_scale(self) -> float:
        return self._logit_scale

    def namespace(self) -> dict:
        v = self.variant
        return {
            "family": v.name,
            "text_model": self.text_model,
            "sample_rate": v.sample_rate,
            "window_s": v.duration_s,
            "short_clips": "repeat",
            "n_fft": v.n_fft,
            "hop": v.hop,
            "mel": [v.n_mels, v.f_min, v.f_max, v.mel_sample_rate, "slaney"],
            "text": [v.eot_suffix, v.pad_token, v.text_len],
        }

    def to(self, device) -> MsClap:
        self.audio_tower.to(device)
        self.text_tower.to(device)
        return self

    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, T) at 44.1 kHz + lengths -> ((B, 1, frames, 64) log-mel,): each clip repeated
        whole and cut to the native length (a longer one: its centred window), then the
        torchlibrosa-equivalent STFT / mel / dB."""
        n = self.window_samples
        if waveforms.shape[1] < n:  # room for the repeated clip
            waveforms = F.pad(waveforms, (0, n - waveforms.shape[1]))
        x = pad_or_repeat(waveforms.float(), lengths, max_length=n, padding="repeat")
        return (self.log_mel(x),)

    def log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, 1, 1 + T // hop, n_mels) float32 dB (no repetition rule)."""
        return log_mel_of(x, self.variant, self._window, self._mel, self.device)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Official token ids, padded to ``text_len`` (or the longest text of the batch)."""
        v = self.variant
        enc = [self.tokenizer(t + v.eot_suffix)["input_ids"] for t in texts]
        length = max([v.text_len, *(len(e) for e in enc)])
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(enc), length), pad, dtype=torch.long)
        mask = torch.zeros((len(enc), length), dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, : len(e)] = torch.tensor(e, dtype=torch.long)
            mask[i, : len(e)] = 1
        out = {"input_ids": ids, "attention_mask": mask}
        if self.text_tower.pooling == "cls":
            out["token_type_ids"] = torch.zeros_like(ids)
        return out

    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return torch.zeros((0, self.dim))
        tok = {k: t.to(self.device) for k, t in self.tokenize(list(texts)).items()}
        limit = getattr(self.text_tower.base.config, "max_position_embeddings", None)
        limit = limit or getattr(self.text_tower.base.config, "n_positions", None)
        if limit is not None and tok["input_ids"].shape[1] > limit:
            raise ValueError(f"a text is longer than the text model's {limit} positions")
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            return self.text_tower(**tok).float()


def _resolve_file(checkpoint, variant: str | None, filename: str | None) -> Path:
    path = Path(str(checkpoint)).expanduser()
    if path.is_file():
        return path
    if (
        path.exists()
        or str(checkpoint).startswith((".", "/", "~"))
        or str(checkpoint).count("/") != 1
    ):
        raise FileNotFoundError(f"MS-CLAP checkpoint file not found: {checkpoint}")
    from huggingface_hub import hf_hub_download  # a hub repo id: one download into the cache

    name = filename or VARIANTS[variant or "msclap-2023"].filename
    return Path(hf_hub_download(str(checkpoint), name))


def _split(sd: dict, variant: MsClapVariant) -> tuple[dict, list[str]]:
    """Drop KNOWN_UNUSED and the (checked) front-end kernels; returns (kept, dropped)."""
    prefix = "audio_encoder.base." + ("htsat." if variant.name == "msclap-2023" else "")
    _check_frontend(sd, prefix, variant)
    frontend = {prefix + k for k in _FRONTEND_KEYS}
    unused = re.compile("|".join(KNOWN_UNUSED))
    dropped = [k for k in sd if k in frontend or unused.search(k)]
    return {k: v for k, v in sd.items() if k not in set(dropped)}, dropped


def _load_strict(module, sd: dict, prefix: str, report: KeyReport) -> None:
    part = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    result = module.load_state_dict(part, strict=False)
    report.missing += [prefix + k for k in result.missing_keys]
    report.unexpected += [prefix + k for k in result.unexpected_keys]


def load_msclap(
    checkpoint,
    *,
    variant: str | None = None,
    text_model: str | None = None,
    device: torch.device | str = "cpu",
    revision: str | None = None,
    filename: str | None = None,
    strict: bool = True,
) -> MsClap:
    """Load an official MS-CLAP file as an :class:`MsClap` family on ``device``.

    checkpoint: the ``.pth`` file, or the hub repo id ``"microsoft/msclap"`` (``filename``
    defaults to the variant's official file; downloaded once into the Hugging Face cache).
    variant: ``"msclap-2022"`` / ``"msclap-2023"``; detected from the key names when None (a
    contradiction is an error). text_model: hub id (offline cache) or local folder with the text
    tower's config and tokenizer (default: the official ``gpt2`` / ``bert-base-uncased``).
    Missing or unexpected keys (after dropping :data:`KNOWN_UNUSED`) are an error, or a warning
    with ``strict=False``; the report stays on ``family.report``.
    """
    path = _resolve_file(checkpoint, variant, filename)
    sd = load_msclap_state_dict(path)
    found = detect_msclap(sd)
    if found is None:
        raise ValueError(
            f"{path}: no MS-CLAP 2022/2023 key layout (audio_encoder.base.htsat.* "
            "or audio_encoder.base.conv_block1.*, caption_encoder.base.*)"
        )
    if variant is not None and variant != found:
        raise ValueError(f"{path} is an {found} checkpoint, not {variant}")
    v = VARIANTS[found]
    kept, dropped = _split(sd, v)
    d_proj = int(kept["audio_encoder.projection.linear1.weight"].shape[0])
    if found == "msclap-2023":
        shape = htsat_shape(kept, "audio_encoder.base.htsat.")
        base = HtsatEncoder(shape["embed_dim"], shape["depths"], shape["heads"], shape["window"])
        d_in = shape["embed_dim"] * 2 ** (len(shape["depths"]) - 1)
    else:
        shape = cnn14_shape(kept, "audio_encoder.base.")
        base = Cnn14(shape["channels"], shape["out_emb"], v.n_mels)
        d_in = shape["out_emb"]
    audio = MsClapAudioTower(base, d_in, d_proj)
    text_model = text_model or v.text_model
    text, tokenizer = _text_tower(v, text_model, kept, d_proj)
    report = KeyReport(dropped=dropped)
    _load_strict(audio, kept, "audio_encoder.", report)
    _load_strict(text, kept, "caption_encoder.", report)
    others = [k for k in kept if not k.startswith(("audio_encoder.", "caption_encoder."))]
    report.unexpected += [k for k in others if k != "logit_scale"]
    if "logit_scale" not in kept:
        report.missing.append("logit_scale")
    if not report.clean:
        if strict:
            raise ValueError(f"{path}: checkpoint keys do not fit {found}: {report}")
        warnings.warn(f"{path}: {report}", stacklevel=2)
    scale = float(kept["logit_scale"].float().exp()) if "logit_scale" in kept else 1 / 0.07
    family = MsClap(
        v,
        audio,
        text,
        tokenizer,
        scale,
        model_id=str(checkpoint),
        revision=local_revision(path) if revision is None else revision,
        text_model=text_model,
        report=report,
    )
    return family.to(torch.device(device))


# ----------------------------------------------------------------------------------------------
# Registration with the family registry
# ----------------------------------------------------------------------------------------------
_DETECTED: dict[tuple, str | None] = {}


def detect_msclap_file(model_id: str) -> str | None:
    """The variant of a local checkpoint file from its key names (memory-mapped read, cached per
    file state), else None (folders, hub ids, other files)."""
    path = Path(str(model_id)).expanduser()
    if not path.is_file():
        return None
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DETECTED:
        try:
            _DETECTED[key] = detect_msclap(load_msclap_state_dict(path))
        except Exception:  # noqa: BLE001 - not a (readable) MS-CLAP file: not ours
            _DETECTED[key] = None
    return _DETECTED[key]


def _register(name: str, description: str) -> None:
    def loader(model_id, *, device, revision=None, **kwargs):
        return load_msclap(model_id, variant=name, device=device, revision=revision, **kwargs)

    def detect(model_id, config) -> bool:
        return config is None and detect_msclap_file(model_id) == name

    register_family(name, loader, detect=detect, description=description)


_register("msclap-2022", "MS-CLAP 2022 (CNN14 + BERT) from CLAP_weights_2022.pth; text_model=")
_register("msclap-2023", "MS-CLAP 2023 (HTSAT + GPT-2) from CLAP_weights_2023.pth; text_model=")
