#!/usr/bin/env bash
# Download the datasets used by the notebooks, verified and resumable:
#   bash dataset.sh esc50|urbansound8k|fma_small|audioset|all [--dest downloads] [...]
# A thin wrapper around `python -m clap_helpers.data.download` (see `bash dataset.sh --help` for the
# options and the CLAP_MIRROR_* / CLAP_CHECKSUM_* environment variables). It uses the python of
# the repository's .venv when there is one, else python3.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="python3"
if [[ -x "$repo/.venv/bin/python" ]]; then
    python="$repo/.venv/bin/python"
fi
# The package is importable from the repository even when it is not installed.
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m clap_helpers.data.download "$@"
