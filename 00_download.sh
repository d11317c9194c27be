#!/usr/bin/env bash
# 00_download.sh — download the ILSVRC2012 archives from your own image-net.org links into
# ROOT/downloads/: resumable, verified, optionally over several connections.
#
# Usage:   00_download.sh [options] SPLIT...        SPLIT: train val test devkit all
#          00_download.sh --source hf [--hf-revision REV] SPLIT...   (Hugging Face: train val test all)
#          00_download.sh --source kaggle [SPLIT...]                 (Kaggle: the one zip)
# Example: cp urls.sh.example urls.sh && chmod 600 urls.sh   # then paste your links into urls.sh
#          00_download.sh --root /data/imagenet --connections 4 val devkit
#          HF_TOKEN=hf_... 00_download.sh --root /data/imagenet --source hf val
#
# The bytes are fetched with curl by the package's one fetch engine (imagenet_prep/transport.py,
# shared with 01_unzip.sh --stream) and hashed as they are written; `00_download.sh --help` lists
# the options, docs/download.md says what lies on disk and what a rerun does. The work is done by
# imagenet_prep/download.py, which must sit beside this script.
set -euo pipefail
trap 'exit 130' INT  # a Ctrl-C now: stopped, quietly

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
if [[ ! -f $here/imagenet_prep/download.py ]]; then
  printf '00_download.sh: error: needs the folder imagenet_prep/ beside it (%s is missing): copy or clone the whole repository folder, not the script alone\n' \
    "$here/imagenet_prep" >&2
  exit 1
fi
for f in __init__.py download.py transport.py urls.py md5state.py facts.py console.py files.py \
  progress.py extract.py images.py tarstream.py release.tsv sourcefetch.py hub.py kaggle.py webapi.py \
  credentials.py sourcenames.py hf_release.tsv; do
  [[ -f $here/imagenet_prep/$f ]] || { printf '00_download.sh: error: %s is missing (an incomplete copy?): copy or clone the whole repository folder again\n' "$here/imagenet_prep/$f" >&2; exit 1; }
done
command -v python3 >/dev/null 2>&1 || { echo "00_download.sh: error: need 'python3' (not found in PATH): it runs the Python package imagenet_prep/ beside it" >&2; exit 1; }
# the package from this folder only (-I: not the current folder, PYTHONPATH or the user's site).
# No traceback for a Ctrl-C before the run is set up: Python starts with SIGINT ignored (a Ctrl-C
# in its first milliseconds is lost), then ends quietly with exit code 130 on one, also while the
# site-packages load (-S, then site.main() once that handler is in place)
trap '' INT
exec python3 -I -S -c 'import signal, sys; signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
import runpy, site; site.main(); sys.path.insert(0, sys.argv.pop(1))
runpy.run_module("imagenet_prep.download", run_name="__main__", alter_sys=True)' "$here" "$@"
