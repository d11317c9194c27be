#!/usr/bin/env bash
# run.sh — the test suite, as CI runs it (.ci/run): python3 -m pytest tests, from the checkout.
#
# Usage: bash tests/run.sh [PYTEST ARGS...]   (default: tests; paths are taken from the checkout)
# e.g.:  bash tests/run.sh tests/test_04_verify.py -k full        bash tests/run.sh -m slow
#
# The tests need the packages of requirements.txt (numpy, scipy, tqdm, pytest, Pillow, pyarrow,
# webdataset). Where python3 lacks one (Debian's refuses `pip install`), the first run makes the
# virtual environment .venv/ in the checkout with them (Debian and Ubuntu need the package
# python3-venv for it) and the tests run in it: its python3 comes first on PATH, for the scripts
# the tests start too. A set-up that was stopped midway is completed by the next run.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO

die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }

main() {
  local bin
  command -v python3 >/dev/null 2>&1 || die "need 'python3' (not found in PATH)"
  cd "$REPO"
  bin=$(python3 -m imagenet_prep.bootstrap --prog run.sh tests) ||
    die "the Python packages of requirements.txt are not there (the message above says why)"
  [[ -z $bin ]] || export PATH="$bin:$PATH"
  (($#)) || set -- tests
  exec python3 -m pytest "$@"
}

main "$@"
