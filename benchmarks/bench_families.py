"""Speed and size of each model family through the project's encoder: clips/s per family.

Usage::

    python benchmarks/bench_families.py [--families unfused larger pe-audio] [--clips 16]
        [--seconds 5] [--batch-size 4] [--device auto] [--precision fp32] [--model ID_OR_DIR ...]
        [--text-model FOLDER] [--json out.json]

Without ``--model`` it times full-size models with seeded random weights built in memory
(nothing downloaded, nothing written): ``unfused`` (``ClapConfig()``: the shapes of
``laion/clap-htsat-unfused``, HTSAT-tiny), ``larger`` (HTSAT-base: patch embedding 128, depths
2-2-12-2, hidden 1024, as ``laion/larger_clap_*``) and ``pe-audio`` (``PeAudioConfig()``, the
default configuration transformers documents as the ``facebook/pe-av-large`` style; the small and
base configurations are not in transformers and were not reachable offline). ``--model`` times
real checkpoints instead (any family ``load_clap`` knows, from the HF cache, a folder or a
checkpoint file; ``--text-model``: the text tower folder MS-CLAP files need offline).

Each model embeds ``--clips`` synthetic clips of ``--seconds`` (a tone, noise and clicks; in
memory, so decoding is not timed) through ``ClapEncoder.embed_waveforms`` once to warm up, then
again timed; text is timed on 50 prompts. Prints one line per model: parameters, audio clips/s,
text prompts/s.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

CONFIGS = ("unfused", "larger", "pe-audio")


def _random_family(kind: str, device: torch.device):
    from transformers import ClapAudioConfig, ClapConfig, ClapModel

    from clap_helpers.devtools.fixtures.tiny_clap import _make_feature_extractor
    from clap_helpers.devtools.fixtures.tiny_tokenizer import make_tokenizer
    from clap_helpers.embedding.families.laion import LaionClap
    from clap_helpers.embedding.frontend import LogMelFrontend

    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    if kind == "pe-audio":
        from transformers import PeAudioConfig, PeAudioModel

        from clap_helpers.embedding.families.pe_audio import PeAudio

        model = PeAudioModel(PeAudioConfig()).eval().to(device)
        return PeAudio(
            model, tokenizer, model_id=f"random:{kind}", revision="random", window_seconds=10
        )
    if kind == "larger":
        audio = ClapAudioConfig(
            patch_embeds_hidden_size=128, hidden_size=1024, depths=[2, 2, 12, 2]
        ).to_dict()
        config = ClapConfig(audio_config=audio)
    else:
        config = ClapConfig()
    model = ClapModel(config).eval().to(device)
    frontend = LogMelFrontend.from_feature_extractor(_make_feature_extractor(False)).to(device)
    return LaionClap(model, tokenizer, frontend, model_id=f"random:{kind}", revision="random")


def _clips(n: int, seconds: float, sr: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    out = []
    for i in range(n):
        x = 0.2 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.05 * rng.standard_normal(t.size)
        x[:: sr // (2 + i % 5)] += 0.5
        out.append(x.astype(np.float32))
    return out


def time_encoder(enc, clips: int, seconds: float, batch_size: int) -> dict:
    waves = _clips(clips, seconds, enc.sample_rate)
    enc.embed_waveforms(waves[: min(2, clips)], batch_size=batch_size)  # warm-up
    t0 = time.perf_counter()
    enc.embed_waveforms(waves, batch_size=batch_size)
    audio_s = time.perf_counter() - t0
    prompts = [f"This is a sound of thing number {i}." for i in range(50)]
    t0 = time.perf_counter()
    enc.embed_text(prompts, cache_dir=False)
    text_s = time.perf_counter() - t0
    params = sum(p.numel() for p in enc.family.audio_tower.parameters())
    return {
        "model": enc.model_id,
        "family": enc.family.name,
        "params_m": params / 1e6,
        "precision": enc.precision,
        "device": enc.device.type,
        "clips": clips,
        "seconds": seconds,
        "clips_per_s": clips / audio_s,
        "prompts_per_s": len(prompts) / text_s,
    }


def main(argv=None) -> int:
    from clap_helpers.embedding.devices import resolve_device, resolve_precision
    from clap_helpers.embedding.encoder import ClapEncoder
    from clap_helpers.embedding.loading import load_clap

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="*", default=list(CONFIGS), choices=CONFIGS)
    p.add_argument("--model", nargs="*", default=None, help="real checkpoints instead")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--text-model", default=None, help="text tower folder for --model files")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    rows = []
    if args.model:
        options = {"text_model": args.text_model} if args.text_model else {}
        encoders = (
            load_clap(m, device, args.precision, cache_dir=False, num_workers=0, **options)
            for m in args.model
        )
    else:
        precision = resolve_precision(args.precision, device)
        encoders = (
            ClapEncoder(
                _random_family(kind, device), device=device, precision=precision, cache_dir=False
            )
            for kind in args.families
        )
    for enc in encoders:
        row = time_encoder(enc, args.clips, args.seconds, args.batch_size)
        rows.append(row)
        print(
            f"{row['model']:<28} {row['family']:<10} model {row['params_m']:7.1f} M params  "
            f"{row['clips_per_s']:7.2f} clips/s ({row['seconds']:g} s, {row['precision']}, "
            f"{row['device']})  text {row['prompts_per_s']:7.1f} prompts/s",
            flush=True,
        )
        del enc
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
