#!/usr/bin/env bash
# 01_unzip.sh — unpack the ILSVRC2012 archives into ROOT/train/WNID/, ROOT/val/, ROOT/test/, ROOT/devkit/.
#
# Usage:   01_unzip.sh [options] SPLIT...        SPLIT: train val test devkit all
# Example: 01_unzip.sh --root /data/imagenet all
#          sbatch --array=0-7 --wrap '01_unzip.sh --root /data/imagenet train'   # 8 shards
#          01_unzip.sh --root /data/imagenet --source hf all   # the Hugging Face files (docs/sources.md)
#
# train is read straight from ILSVRC2012_img_train.tar: the images of each class tar (WNID.tar) are
# written to ROOT/train/WNID/ without ever writing the inner tar, several classes at a time. Each
# class, and val, test and the devkit, is built under a hidden temporary name and renamed into place
# when complete. Kill it at any moment; a rerun finishes the job. `01_unzip.sh --help` lists the
# options. The work is done by imagenet_prep/unzip.py, which must sit beside this script.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
if [[ ! -f $here/imagenet_prep/unzip.py ]]; then
  printf '01_unzip.sh: error: needs the folder imagenet_prep/ beside it (%s is missing): copy or clone the whole repository folder, not the script alone\n' \
    "$here/imagenet_prep" >&2
  exit 1
fi
command -v python3 >/dev/null 2>&1 || { echo "01_unzip.sh: error: need 'python3' (not found in PATH)" >&2; exit 1; }
# the package from this folder, before anything of the same name in the current folder or PYTHONPATH;
# bootstrap.start: a quiet Ctrl-C until the run is set up, and python3 from .venv/ beside this
# script when the python3 on PATH lacks the packages of requirements.txt (see imagenet_prep/bootstrap.py)
exec python3 -c 'import runpy, sys; sys.path.insert(0, sys.argv.pop(1))
from imagenet_prep import bootstrap; bootstrap.start("01_unzip.sh")
runpy.run_module("imagenet_prep.unzip", run_name="__main__", alter_sys=True)' "$here" "$@"
