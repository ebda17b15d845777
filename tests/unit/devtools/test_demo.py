"""The `make demo` summary line shows each notebook's key numbers."""

from clap_helpers.devtools.demo import summarise


def test_summary_shows_scalars_dicts_and_means():
    line = summarise(
        {
            "n": 50,
            "n_failed": 1,
            "top1": {"template": 0.25, "descriptive": 0.5},
            "modes": {"zs": {"mean": 0.2, "std": 0.1}, "linear": {"mean": 0.9}},
            "present": ["esc50", "fma_small"],
            "figures": ["a.png"],  # not a summary key
            "augment": True,
        }
    )
    assert line == (
        "present 2; n 50; n_failed 1; top1 {template 0.250, descriptive 0.500}; "
        "modes {zs 0.200, linear 0.900}"
    )
    assert summarise({"figures": []}) == "(no summary numbers)"
