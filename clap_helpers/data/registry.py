"""The dataset registry: one record per dataset, the only place that knows a dataset's layout.

Each :class:`DatasetRecord` says where the dataset comes from (archives and checksums, or the
AudioSet segment lists), what it costs to download, how it lies on disk (top folder, metadata file,
audio folders), the names users type for it, the key of its prompt descriptions, the classes that
serve as stationary backgrounds, and the published accuracies to compare against. Loaders,
download, overview, prompts, adaptation and robustness read these records; adding a dataset means
adding a record here and a metadata parser in :mod:`clap_helpers.data.loaders`.

This module imports nothing beyond the standard library, so ``bash dataset.sh`` can run it with a
bare ``python3``.

Used by: every notebook (01-11), through the modules above.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = [
    "Archive",
    "AudioSetLayout",
    "DatasetRecord",
    "Published",
    "RECORDS",
    "NAMES",
    "record",
    "canonical_name",
]

_NAN = math.nan


@dataclass(frozen=True)
class Archive:
    """One downloadable archive and the top-level folder it unpacks to (its final name in dest)."""

    env_key: str  # mirror variables: CLAP_MIRROR_<env_key>, CLAP_CHECKSUM_<env_key>
    url: str
    checksum: str  # "md5:<hex>" or "sha1:<hex>"
    filename: str  # name of the archive in dest while it is downloaded / kept
    folder: str
    key_file: str  # path inside folder that must exist for the folder to count as present


@dataclass(frozen=True)
class AudioSetLayout:
    """Where the AudioSet subset's files go inside its folder (written by the downloader)."""

    csv_url: str = "http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/"
    csv_folder: str = "csv"  # segment lists and class_labels_indices.csv, as downloaded
    audio_folder: str = "audio"  # {YTID}_{start_ms}.wav
    manifest: str = "manifest.csv"  # path,YTID,start_seconds,end_seconds,labels,split
    unavailable: str = "unavailable.csv"  # YTID,start_seconds,reason
    class_labels: str = "class_labels_indices.csv"
    splits: tuple[str, ...] = ("balanced_train", "eval")
    extra_split: str = "unbalanced_train"  # with --unbalanced
    label_sep: str = ";"  # joins a manifest row's labels (display names contain commas)
    default_classes: tuple[str, ...] = (
        "Aircraft",
        "Baby cry, infant cry",
        "Bird",
        "Car",
        "Cat",
        "Child speech, kid speaking",
        "Dog",
        "Drum",
        "Electric guitar",
        "Explosion",
        "Fart",
        "Female speech, woman speaking",
        "Glass",
        "Guitar",
        "Helicopter",
        "Male speech, man speaking",
        "Pigeon, dove",
        "Ringtone",
        "Siren",
        "Telephone",
        "Walk, footsteps",
        "Water",
    )

    def segments_file(self, split: str) -> str:
        return f"{split}_segments.csv"


@dataclass(frozen=True)
class Published:
    """One published top-1 accuracy (%) on a dataset, with what the method uses besides prompts."""

    model: str
    method: str  # "zero-shot", "linear probe" or "training-free"
    top1: float
    uses: str = ""  # "nothing", "labels", "unlabelled audio (transductive)", ...
    note: str = ""


@dataclass(frozen=True)
class DatasetRecord:
    """Everything the project knows about one dataset.

    Paths are relative to the data root (``downloads/`` by default).
    """

    name: str  # the canonical name: dataset.sh argument, loader key, cache namespace
    title: str  # for people: "ESC-50"
    folder: str  # top folder the downloader creates (the first archive's)
    metadata_file: str  # its presence means "downloaded"
    audio_folders: tuple[str, ...]  # every clip must lie inside one of these
    metadata_folder: str | None  # delete before re-downloading damaged metadata (None: rewritten)
    archives: tuple[Archive, ...]
    description: str  # one line for the download command's help
    contents: str  # what it holds (notebook 01)
    download_size: str  # what it costs (notebook 01, README)
    aliases: tuple[str, ...] = ()  # other names users type ("us8k")
    prompt_key: str = ""  # key of clap_helpers.evaluation.prompts.DESCRIPTIONS
    background_classes: tuple[str, ...] = ()  # stationary ambient classes (notebook 08)
    published: tuple[Published, ...] = ()
    audioset: AudioSetLayout | None = None


_CLAP_PAPER = "LAION-CLAP (paper, 630k + AudioSet)"
_CLAP_RERUN = "laion/clap-htsat-unfused (third-party re-run through transformers)"
_AUDIOCLIP_NOTE = "fine-tuned (not a linear probe): 97.15 / 90.07"
_LARGER_GENERAL = "laion/larger_clap_general (MTEB/MAEB harness, own protocol)"
_MAEB_NOTE = "MTEB/MAEB zero-shot harness: its prompts and protocol, not the paper's"


def _published(zero_shot: dict[str, float], linear: dict[str, float], notes: dict[str, str]):
    rows = [Published(m, "zero-shot", v, "nothing", notes.get(m, "")) for m, v in zero_shot.items()]
    rows += [Published(m, "linear probe", v, "labels", notes.get(m, "")) for m, v in linear.items()]
    return tuple(rows)


RECORDS: dict[str, DatasetRecord] = {
    "esc50": DatasetRecord(
        name="esc50",
        title="ESC-50",
        folder="ESC-50-master",
        metadata_file="ESC-50-master/meta/esc50.csv",
        audio_folders=("ESC-50-master/audio",),
        metadata_folder="ESC-50-master",
        archives=(
            Archive(
                "ESC50",
                "https://github.com/karoldvl/ESC-50/archive/master.zip",
                "md5:7771e4b9d86d0945acce719c7a59305a",
                "ESC-50-master.zip",
                "ESC-50-master",
                "meta/esc50.csv",
            ),
        ),
        description="ESC-50: 2000 clips of 5 s, 50 classes (about 600 MB)",
        contents="2000 WAV clips of 5 s, 50 classes, 5 folds",
        download_size="about 600 MB",
        aliases=("esc", "esc-50"),
        prompt_key="esc50",
        background_classes=("rain", "sea_waves", "wind", "crickets"),
        published=_published(
            {
                _CLAP_PAPER: 91.0,
                _CLAP_RERUN: 91.55,
                "MS-CLAP 2023": 93.9,
                "MS-CLAP 2022": 82.6,
                "M2D-CLAP (2024)": 75.45,
                "AudioCLIP": 69.40,
                "Wav2CLIP": 41.4,
                _LARGER_GENERAL: 90.5,
            },
            {
                _CLAP_PAPER: 97.3,
                "MS-CLAP 2023": 97.7,
                "MS-CLAP 2022": 93.8,
                "M2D-CLAP (2024)": 96.3,
            },
            {"AudioCLIP": _AUDIOCLIP_NOTE, _LARGER_GENERAL: _MAEB_NOTE},
        )
        + (
            Published(
                "MS-CLAP 2023 + LLM class descriptions (Olvera et al., DCASE 2024)",
                "training-free",
                96.35,
                "labels (other folds pick description vs label per class)",
            ),
            Published(
                "Proto-LC (Kushwaha & Fuentes, Interspeech 2023)",
                "training-free",
                96.0,
                "unlabelled audio (transductive)",
            ),
        ),
    ),
    "urbansound8k": DatasetRecord(
        name="urbansound8k",
        title="UrbanSound8K",
        folder="UrbanSound8K",
        metadata_file="UrbanSound8K/metadata/UrbanSound8K.csv",
        audio_folders=("UrbanSound8K/audio",),
        metadata_folder="UrbanSound8K",
        archives=(
            Archive(
                "URBANSOUND8K",
                "https://zenodo.org/record/1203745/files/UrbanSound8K.tar.gz",
                "md5:9aa69802bbf37fb986f71ec1483a196e",
                "UrbanSound8K.tar.gz",
                "UrbanSound8K",
                "metadata/UrbanSound8K.csv",
            ),
        ),
        description="UrbanSound8K: 8732 clips of at most 4 s, 10 classes (about 6 GB)",
        contents="8732 WAV clips of at most 4 s, 10 classes, 10 folds",
        download_size="about 6 GB",
        aliases=("us8k", "urbansound", "urban8k"),
        prompt_key="us8k",
        background_classes=("air_conditioner", "engine_idling"),
        published=_published(
            {
                _CLAP_PAPER: 77.0,
                _CLAP_RERUN: 75.16,
                "MS-CLAP 2023": 82.3,
                "MS-CLAP 2022": 75.3,
                "M2D-CLAP (2024)": 72.40,
                "AudioCLIP": 68.78,
                "Wav2CLIP": 40.4,
                _LARGER_GENERAL: 79.6,
            },
            {
                _CLAP_PAPER: 86.9,
                "MS-CLAP 2023": 88.4,
                "MS-CLAP 2022": 84.2,
                "M2D-CLAP (2024)": 88.8,
            },
            {"AudioCLIP": _AUDIOCLIP_NOTE, _LARGER_GENERAL: _MAEB_NOTE},
        ),
    ),
    "fma_small": DatasetRecord(
        name="fma_small",
        title="FMA-small",
        folder="fma_small",
        metadata_file="fma_metadata/tracks.csv",
        audio_folders=("fma_small",),
        metadata_folder="fma_metadata",
        archives=(
            Archive(
                "FMA_SMALL",
                "https://os.unil.cloud.switch.ch/fma/fma_small.zip",
                "sha1:ade154f733639d52e35e32f5593efe5be76c6d70",
                "fma_small.zip",
                "fma_small",
                "000/000002.mp3",
            ),
            Archive(
                "FMA_METADATA",
                "https://os.unil.cloud.switch.ch/fma/fma_metadata.zip",
                "sha1:f0df49ffe5f2a6008d7dc83c6915b31835dfe733",
                "fma_metadata.zip",
                "fma_metadata",
                "tracks.csv",
            ),
        ),
        description="FMA-small: 8000 tracks of 30 s, 8 genres (7.2 GB) + fma_metadata (342 MB)",
        contents="8000 MP3 tracks of 30 s, 8 genres, training/validation/test split",
        download_size="7.2 GB audio + 342 MB metadata",
        aliases=("fma", "fmasmall"),
        prompt_key="fma",
    ),
    "audioset": DatasetRecord(
        name="audioset",
        title="AudioSet subset",
        folder="audioset",
        metadata_file="audioset/manifest.csv",
        audio_folders=("audioset/audio",),
        metadata_folder=None,
        archives=(),
        description="AudioSet subset: N clips of 10 s per class from YouTube (needs yt-dlp and ffmpeg)",
        contents="10 s YouTube segments, 22 classes, multi-label, balanced_train/eval",
        download_size="up to about 0.9 GB (20 clips per class and split), via yt-dlp + ffmpeg",
        aliases=("audiosetsubset",),
        prompt_key="audioset",
        audioset=AudioSetLayout(),
    ),
}
"""Every dataset the project knows, by canonical name."""

NAMES: tuple[str, ...] = tuple(RECORDS)
"""Canonical dataset names, in the order the notebooks present them."""

_ALIASES: dict[str, str] = {
    re.sub(r"[^a-z0-9]", "", alias): rec.name
    for rec in RECORDS.values()
    for alias in (rec.name, *rec.aliases)
}


def canonical_name(name: str) -> str:
    """The canonical name for a name or alias ("ESC-50", "us8k", "FMA" -> "esc50", ...).

    Raises ``ValueError`` naming the known datasets if ``name`` is none of them.
    """
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    if key not in _ALIASES:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(NAMES)}")
    return _ALIASES[key]


def record(name: str) -> DatasetRecord:
    """The :class:`DatasetRecord` of a dataset, by name or alias."""
    return RECORDS[canonical_name(name)]
