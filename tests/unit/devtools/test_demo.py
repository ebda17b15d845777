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


def test_summary_rows_wrap_under_the_results_column():
    from clap_helpers.devtools.demo import summary_rows

    long = "; ".join(f"top{k} {{label 0.200, template 0.160, descriptive 0.000}}" for k in (1, 3))
    lines = summary_rows([("03_augmented_labels", "ok", 10.0, long), ("01", "ok", 1.0, "n 4")], 80)
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].startswith("notebook")
    indent = lines[1].index("top1")
    assert len(lines) > 3 and lines[2].startswith(" " * indent) and lines[2][indent] != " "
    assert " ".join(line.strip() for line in lines[1:-1]).endswith(long)
