"""The package's warnings read as one line naming the file, shown once per message."""

from __future__ import annotations

import io
import uuid
import warnings

from clap_helpers import diagnostics
from clap_helpers.data.audio import AudioWarning
from clap_helpers.embedding.encoder import EmbeddingWarning
from clap_helpers.evaluation.compare import CollinearTextWarning
from clap_helpers.supervised import FeatureWarning


def _shown(emit) -> str:
    """What Python prints for the warnings ``emit`` raises, with the filters of a fresh kernel."""
    out = io.StringIO()
    with warnings.catch_warnings():
        warnings.resetwarnings()
        diagnostics.install()
        warnings.showwarning = lambda *a, **k: out.write(warnings.formatwarning(*a[:4]))
        emit()
    return out.getvalue()


def test_every_warning_class_of_the_package_is_a_clap_warning():
    for cls in (AudioWarning, EmbeddingWarning, CollinearTextWarning, FeatureWarning):
        assert issubclass(cls, diagnostics.ClapWarning) and issubclass(cls, UserWarning)


def test_one_line_without_the_helper_source():
    text = _shown(
        lambda: warnings.warn("a.mp3: truncated\n  (skipped)", EmbeddingWarning, stacklevel=1)
    )
    assert text == "EmbeddingWarning: a.mp3: truncated (skipped)\n"


def test_the_same_message_is_shown_once_a_new_one_again():
    tag = uuid.uuid4().hex  # "once" remembers messages for the whole process

    def emit():
        for _ in range(3):
            warnings.warn(f"x{tag}.wav: silent", AudioWarning, stacklevel=1)
        warnings.warn(f"y{tag}.wav: silent", AudioWarning, stacklevel=1)

    assert _shown(emit).splitlines() == [
        f"AudioWarning: x{tag}.wav: silent",
        f"AudioWarning: y{tag}.wav: silent",
    ]


def test_once_survives_other_packages_changing_the_filters():
    """CPython clears its "once" memory whenever the filters change (scipy and sympy add filters
    on import, i.e. while a model loads): the message must still be shown only once."""
    tag = uuid.uuid4().hex

    def emit():
        warnings.warn(f"z{tag}.wav: truncated", EmbeddingWarning, stacklevel=1)
        warnings.filterwarnings("ignore", message="unrelated message of another package")
        warnings.warn(f"z{tag}.wav: truncated", EmbeddingWarning, stacklevel=1)

    assert _shown(emit).splitlines() == [f"EmbeddingWarning: z{tag}.wav: truncated"]


def test_other_warnings_keep_pythons_format():
    text = _shown(lambda: warnings.warn("plain", UserWarning, stacklevel=1))
    assert "UserWarning: plain" in text and "test_diagnostics.py" in text


def test_name_files_gives_names_and_a_count():
    items = [(f"/data/set/{i}.wav", "silent") for i in range(5)]
    assert diagnostics.name_files(items[:2]) == "0.wav: silent; 1.wav: silent"
    assert diagnostics.name_files(items) == "0.wav: silent; 1.wav: silent; 2.wav: silent and 2 more"


def test_quiet_loading_hides_the_bar_and_restores_it():
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    with diagnostics.quiet_loading():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()


def test_bars_off_follows_the_caller_and_tqdm_disable(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert diagnostics.bars_off(False) and not diagnostics.bars_off(True)
    monkeypatch.setenv("TQDM_DISABLE", "1")  # what make demo's kernels get
    assert diagnostics.bars_off(True)
