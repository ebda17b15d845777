"""Evaluation: from embeddings to numbers, all through one scoring core.

``scoring`` (cosine scores, predictions, top-k: zero-shot is the case prototypes = text),
``zeroshot`` (accuracy, mAP, per-fold and per-class tables), ``prompts`` (label -> text),
``adapt`` (few-shot and supervised adaptation, cross-validated), ``label_free`` (adaptation without
labels), ``robustness`` (background noise), ``compare`` (runs side by side), ``model_comparison``
(model families x datasets x prompt strategies, notebook 11), ``results`` (the one results-file
format and the published numbers), ``tables`` (results tables formatted for people),
``simulator`` (CLAP-like synthetic embeddings).
"""

from .._lazy import attach

MODULES = {
    m: m
    for m in (
        "scoring",
        "zeroshot",
        "prompts",
        "adapt",
        "label_free",
        "robustness",
        "compare",
        "model_comparison",
        "results",
        "tables",
        "simulator",
    )
}
__all__ = sorted(MODULES)
__getattr__, __dir__ = attach(__name__, MODULES)
