#!/usr/bin/env bash
# 01_unzip.sh — unpack the ILSVRC2012 archives into ROOT/train/WNID/, ROOT/val/, ROOT/test/, ROOT/devkit/.
#
# Usage:   01_unzip.sh [options] SPLIT...        SPLIT: train val test devkit all
# Example: 01_unzip.sh --root /data/imagenet all
#          sbatch --array=0-7 --wrap '01_unzip.sh --root /data/imagenet train'   # 8 shards
#
# train is read straight from ILSVRC2012_img_train.tar: the images of each class tar (WNID.tar) are
# written to ROOT/train/WNID/ without ever writing the inner tar, several classes at a time. A class
# is built in ROOT/train/.WNID.tmp-HOST.PID and renamed into place when complete, so a class folder
# under its final name is always complete. Kill it at any moment; a rerun finishes the job.
# val, test and devkit are extracted into ROOT/.SPLIT.tmp-HOST.PID and renamed into place.
# Bookkeeping (locks, per-class records, "done" markers) lives in ROOT/.01_unzip/.
# The archives are only read, never changed; --remove-archive deletes one after its split is verified.
set -euo pipefail

readonly PROG=01_unzip.sh
readonly SPLITS=(train val test devkit)
readonly MAX_SHARDS=10000  # --shard K/N: N at most this (the release has 1,000 classes)
readonly MAX_JOBS=1024     # --jobs N: at most this

root=${IMAGENET_ROOT:-.}  # --root DIR: data folder (default: $IMAGENET_ROOT, else the current dir)
archive=""                # --archive PATH: the archive to read (default: ROOT/downloads/<official name>)
jobs=""                   # --jobs N: classes extracted in parallel (default: cores available, nproc)
shard=""                  # --shard K/N: extract only share K of N (default: SLURM array task, else 0/1)
remove_archive=0          # --remove-archive: delete the archive once its split is complete and verified

log() { printf '%s %s %s\n' "$PROG" "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '%s %s error: %s\n' "$PROG" "$(date +%H:%M:%S)" "$*" >&2; exit 1; }
need_cmd() { command -v "$1" >/dev/null 2>&1 || die "need '$1' (not found in PATH)"; }

usage() {
  cat <<EOF
Usage: $PROG [options] SPLIT...
Unpack ILSVRC2012 archives from ROOT/downloads/ into ROOT. SPLIT is one of: train val test devkit all

  train   ILSVRC2012_img_train.tar            -> ROOT/train/WNID/WNID_N.JPEG  (1,000 folders)
  val     ILSVRC2012_img_val.tar              -> ROOT/val/ILSVRC2012_val_%08d.JPEG
  test    ILSVRC2012_img_test_v10102019.tar   -> ROOT/test/ILSVRC2012_test_%08d.JPEG
          (or ILSVRC2012_img_test.tar)
  devkit  ILSVRC2012_devkit_t12.tar.gz        -> ROOT/devkit/ILSVRC2012_devkit_t12/...
          (or ILSVRC2012_devkit_t12.tar, ILSVRC2017_devkit.tar.gz)

Options:
  --root DIR         data folder (default: \$IMAGENET_ROOT, else the current directory)
  --archive PATH     read this archive instead of ROOT/downloads/<official name> (one SPLIT only)
  --jobs N           classes extracted in parallel (default: cores available to this process)
  --shard K/N        extract only share K of N of the train classes (0 <= K < N); shares can run
                     at the same time on one ROOT. Default: from SLURM_ARRAY_TASK_ID,
                     SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_COUNT when set, else 0/1 (everything)
  --remove-archive   delete the archive once its split is complete and verified (default: keep)
  -h, --help         show this help

A rerun skips what is complete, clears leftovers of interrupted work and finishes the rest; a
finished split says "already done". Exit codes: 0 ok, 1 failure, 2 usage.
EOF
}

usage_error() {
  printf '%s: %s\n\n' "$PROG" "$1" >&2
  usage >&2
  exit 2
}

# Sets shard_k and shard_n from --shard, else from a SLURM array task, else 0 and 1.
resolve_shard() {
  local id min step count v
  if [[ -n $shard ]]; then
    # at most 5 digits each: the numbers reach bash arithmetic only once checked (no overflow)
    [[ $shard =~ ^([0-9]{1,5})/([0-9]{1,5})$ ]] ||
      usage_error "--shard wants K/N with 0 <= K < N <= $MAX_SHARDS, e.g. --shard 0/8 (got '$shard')"
    shard_k=$((10#${BASH_REMATCH[1]}))
    shard_n=$((10#${BASH_REMATCH[2]}))
    ((shard_n >= 1 && shard_n <= MAX_SHARDS && shard_k < shard_n)) ||
      usage_error "--shard K/N needs 0 <= K < N <= $MAX_SHARDS (got '$shard')"
  elif [[ -n ${SLURM_ARRAY_TASK_ID:-} && -n ${SLURM_ARRAY_TASK_COUNT:-} ]]; then
    id=${SLURM_ARRAY_TASK_ID}
    min=${SLURM_ARRAY_TASK_MIN:-0}
    step=${SLURM_ARRAY_TASK_STEP:-1}
    count=${SLURM_ARRAY_TASK_COUNT}
    for v in "$id" "$min" "$step" "$count"; do
      [[ $v =~ ^[0-9]{1,7}$ ]] || die "SLURM_ARRAY_TASK_* must be numbers of at most 7 digits (got '$v'); pass --shard K/N instead"
    done
    shard_k=$(((10#$id - 10#$min) / (10#$step > 0 ? 10#$step : 1)))
    shard_n=$((10#$count))
    ((shard_n >= 1 && shard_n <= MAX_SHARDS && shard_k >= 0 && shard_k < shard_n)) ||
      die "cannot derive a shard from SLURM_ARRAY_TASK_ID=$id (MIN=$min STEP=$step COUNT=$count); pass --shard K/N"
    log "SLURM array task $id: shard $shard_k/$shard_n"
  else
    shard_k=0
    shard_n=1
  fi
}

main() {
  local splits=() s seen
  local cmdline="$0 $*"
  while (($#)); do
    case $1 in
      -h|--help) usage; exit 0 ;;
      --root) (($# >= 2)) || usage_error "--root needs a value"; root=$2; shift ;;
      --root=*) root=${1#*=} ;;
      --archive) (($# >= 2)) || usage_error "--archive needs a value"; archive=$2; shift ;;
      --archive=*) archive=${1#*=} ;;
      --jobs) (($# >= 2)) || usage_error "--jobs needs a value"; jobs=$2; shift ;;
      --jobs=*) jobs=${1#*=} ;;
      --shard) (($# >= 2)) || usage_error "--shard needs a value"; shard=$2; shift ;;
      --shard=*) shard=${1#*=} ;;
      --remove-archive) remove_archive=1 ;;
      --) shift; splits+=("$@"); break ;;
      -*) usage_error "unknown option '$1'" ;;
      *) splits+=("$1") ;;
    esac
    shift
  done
  ((${#splits[@]})) || usage_error "name at least one SPLIT"
  local chosen=()
  for s in "${splits[@]}"; do
    case $s in
      all) chosen+=("${SPLITS[@]}") ;;
      train|val|test|devkit) chosen+=("$s") ;;
      *) usage_error "unknown split '$s' (one of: ${SPLITS[*]} all)" ;;
    esac
  done
  # unique, in the order devkit, train, val, test (the small one first, then the big one)
  local ordered=()
  for s in devkit train val test; do
    for seen in "${chosen[@]}"; do
      if [[ $seen == "$s" ]]; then ordered+=("$s"); break; fi
    done
  done
  if [[ -n $archive ]] && ((${#ordered[@]} != 1)); then
    usage_error "--archive names one archive: give exactly one SPLIT with it"
  fi
  if [[ -z $jobs ]]; then
    jobs=$(nproc 2>/dev/null || echo 1)
  fi
  if ! [[ $jobs =~ ^[0-9]{1,4}$ ]] || ((10#$jobs < 1 || 10#$jobs > MAX_JOBS)); then
    usage_error "--jobs wants a number from 1 to $MAX_JOBS (got '$jobs')"
  fi
  jobs=$((10#$jobs))
  resolve_shard
  need_cmd python3
  [[ -d $root ]] || die "ROOT '$root' is not a folder; create it, or pass --root DIR (the folder holding downloads/)"
  root=$(cd "$root" && pwd -P)

  log "$cmdline"
  log "ROOT=$root splits=${ordered[*]} jobs=$jobs shard=$shard_k/$shard_n"
  local rc=0
  unzip_py "$root" "$jobs" "$shard_k" "$shard_n" "$remove_archive" "$archive" "${ordered[@]}" || rc=$?
  log "finished in ${SECONDS}s (exit $rc)"
  return "$rc"
}

# The extraction itself lives in the package beside this script (imagenet_prep/unzip.py).
# Arguments: ROOT JOBS SHARD_K SHARD_N REMOVE_ARCHIVE ARCHIVE SPLIT...
unzip_py() {
  local here
  here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
  if [[ ! -f $here/imagenet_prep/unzip.py ]]; then
    die "$PROG needs the folder imagenet_prep/ beside it ($here/imagenet_prep is missing): copy or clone" \
      "the whole repository folder, not the script alone"
  fi
  PYTHONPATH=$here${PYTHONPATH:+:$PYTHONPATH} python3 -m imagenet_prep.unzip "$@"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
