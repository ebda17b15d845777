"""Supervised baselines: CNNs trained from scratch on log-mel spectrograms (notebook 09).

``features`` (cached log-mel), ``augment`` (SpecAugment), ``models`` (CNN4, CNN8, ResNet18,
checkpoints), ``training`` (the loop: schedule, early stopping, metrics), ``protocol`` (the fold
protocol and its tables). The public names of all five are available here, e.g.
``ch.supervised.train_folds(...)``; ``ch.cnn`` is the same namespace.
"""

from .._lazy import attach

MODULES = {m: m for m in ("features", "augment", "models", "training", "protocol")}
NAMES = {
    **dict.fromkeys(
        (
            "FEATURE_VERSION",
            "FeatureWarning",
            "LogMelSet",
            "feature_settings",
            "logmel_features",
            "make_frontend",
        ),
        "features",
    ),
    "SpecAugment": "augment",
    **dict.fromkeys(
        (
            "BasicBlock",
            "CNN4",
            "CNN8",
            "MODELS",
            "ResNet18",
            "SpectrogramClassifier",
            "build_model",
            "load_model",
            "model_names",
            "save_model",
        ),
        "models",
    ),
    **dict.fromkeys(
        (
            "METRICS",
            "TrainConfig",
            "classification_metrics",
            "evaluate",
            "fit",
            "load_checkpoint",
            "save_checkpoint",
        ),
        "training",
    ),
    **dict.fromkeys(
        ("versus_clap_table", "summary_table", "train_folds", "validation_split"), "protocol"
    ),
}
__all__ = sorted([*MODULES, *NAMES])
__getattr__, __dir__ = attach(__name__, MODULES, NAMES)
