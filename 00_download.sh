#!/usr/bin/env bash
# 00_download.sh — download the ILSVRC2012 archives from your own image-net.org links into
# ROOT/downloads/: resumable, verified, optionally over several connections.
#
# Usage:   00_download.sh [options] SPLIT...        SPLIT: train val test devkit all
# Example: cp urls.sh.example urls.sh && chmod 600 urls.sh   # then paste your links into urls.sh
#          00_download.sh --root /data/imagenet --connections 4 val devkit
#
# One of the numbered entry points of this repository: it needs the package imagenet_prep/ beside
# it (copy or clone the whole folder) and python3. From there it takes the links (urls.py reads
# urls.sh: read, never run), the release facts (release.tsv, read here with `read`), the curl
# retry, stall and backoff policy that 01_unzip.sh --stream uses too (transport.py) and the MD5 of
# a growing file (md5follow.py). The bytes are fetched here, with curl.
#
# Bytes arrive in ROOT/downloads/NAME.part; with --connections N also in piece files
# NAME.part.START-END, appended to NAME.part in order as they complete (none outlives a success).
# Meanwhile a follower hashes NAME.part as it grows and saves its MD5 state in NAME.part.md5state,
# so the check at the end reads almost nothing again. Kill it at any moment: a rerun continues every
# piece from the bytes already on disk, and the MD5 from its saved state. Retries (with backoff)
# happen in a loop around curl, so no received byte is ever thrown away. The file is renamed to NAME
# only after its size and MD5 check out; then NAME.md5 records the check and a rerun says "already
# done" without touching the network (so it does for a split that 01_unzip.sh extracted and whose
# archive it removed). Full URLs are never printed (they may carry a token), nor put on a command
# line. Nothing from outside (server, urls.sh, environment) reaches bash arithmetic before it is
# checked to be a plain number: (( )) evaluates array subscripts, and with them $( ).
#
# Variables: constants and options are readonly once set (the options right after parsing). Each
# split runs in a process of its own, which sets the split's values (its link, names, expected size
# and MD5) once and makes them readonly. A function returns a result through a variable its caller
# names (local -n); a signal handler gets the split it must stop inside its trap string.
set -euo pipefail

readonly PROG=00_download.sh
readonly LINK_FIELDS=10   # per split from imagenet_prep.urls: split url name host md5 md5_from
                          # size size_from urls_from url_from
readonly MAX_DIGITS=18    # longest number taken from outside: below 2^63, so no overflow
readonly MAX_FILE_SIZE=1125899906842624  # 1 PiB: no file of the release comes near; sizes above are refused
readonly PIECES_PER_CONNECTION=8  # pieces per connection: joins overlap the download
readonly LOCK_WAIT=3      # seconds to wait for NAME.lock (a killed run's helpers may still be stopping)
readonly STOP_WAIT=50     # tenths of a second to wait for helpers to stop after TERM, then KILL
# 00's own knobs, from the environment (see --help); check_knobs refuses a malformed one before use.
# The curl policy's knobs (DOWNLOAD_SPEED_*, _CONNECT_TIMEOUT, _RETRY_DELAY*, _RETRIES) are read
# and checked by imagenet_prep/transport.py (read_policy).
readonly PROGRESS_STEP=${DOWNLOAD_PROGRESS_STEP:-5}     # % between progress lines in a log
readonly PROGRESS_POLL=${DOWNLOAD_PROGRESS_POLL:-2}     # seconds between progress checks
readonly MIN_SEGMENT=${DOWNLOAD_MIN_SEGMENT:-16777216}  # never split into pieces smaller than this
readonly FOLLOW_MD5=${DOWNLOAD_MD5_FOLLOW:-1}           # 1: hash NAME.part while it grows; 0: md5sum after
# python3 -m imagenet_prep.MODULE with the package of this folder only: -I keeps the current folder,
# PYTHONPATH and the user's site-packages out of the way (a folder named imagenet_prep where the user
# stands must not stand in for ours).
readonly PY_RUN='import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); runpy.run_module("imagenet_prep." + sys.argv.pop(1), run_name="__main__", alter_sys=True)'

log() { printf '%s %(%H:%M:%S)T %s\n' "$PROG" -1 "$*" >&2; }
die() { printf '%s %(%H:%M:%S)T error: %s\n' "$PROG" -1 "$*" >&2; exit 1; }
err() { printf '%s %(%H:%M:%S)T error: %s\n' "$PROG" -1 "$*" >&2; }
need_cmd() { command -v "$1" >/dev/null 2>&1 || die "need '$1' (not found in PATH)"; }

# --- the repository folder -------------------------------------------------------------------------

# check_package: HERE, the folder of this script, holds what 00 uses of imagenet_prep/, and python3
# is there to run it. Says exactly what is missing: the unit a user copies is the folder.
check_package() {
  local src=${BASH_SOURCE[0]} f here
  [[ $src == */* ]] || src=./$src
  here=$(CDPATH='' cd -- "${src%/*}" && pwd -P) || die "cannot find the folder of $src"
  declare -gr HERE=$here
  if [[ ! -d $HERE/imagenet_prep ]]; then
    die "needs the folder imagenet_prep/ beside it ($HERE/imagenet_prep is missing): copy or clone" \
      "the whole repository folder, not the script alone"
  fi
  for f in __init__.py urls.py transport.py md5follow.py md5state.py facts.py console.py files.py release.tsv; do
    [[ -f $HERE/imagenet_prep/$f ]] || die "$HERE/imagenet_prep/$f is missing (an incomplete copy?):" \
      "copy or clone the whole repository folder again"
  done
  command -v python3 >/dev/null 2>&1 || die "need 'python3' (not found in PATH): $PROG runs" \
    "the Python package imagenet_prep/ beside it"
}

py() { python3 -I -c "$PY_RUN" "$HERE" "$@"; }          # py MODULE ARG...
py_exec() { exec python3 -I -c "$PY_RUN" "$HERE" "$@"; }  # the same, in place of this (sub)shell

# read_release: the splits, their variables' suffixes and the --help table from
# imagenet_prep/release.tsv, the one home of the release facts (imagenet_prep/facts.py reads it too):
# tab-separated split, suffix, archive, bytes, md5, images, classes; '#' comments; '-' for unknown.
# The first row of a split is its current archive. Sets the readonly SPLITS, SUFFIX and HELP_TABLE.
read_release() {
  local file=$HERE/imagenet_prep/release.tsv line n=0 table="" size
  local -a f splits=()
  local -A suffix=()
  while IFS= read -r line || [[ -n $line ]]; do
    n=$((n + 1))
    [[ -z $line || $line == \#* ]] && continue
    IFS=$'\t' read -ra f <<<"$line"
    if ((${#f[@]} != 7)) || ! [[ ${f[0]} =~ ^[a-z]+$ && ${f[1]} =~ ^[A-Za-z0-9_]+$ && ${f[3]} =~ ^(-|[0-9]{1,18})$ ]]; then
      die "$file, line $n: not a row of split, suffix, archive, bytes, md5, images, classes" \
        "(tab-separated); restore the file from the repository"
    fi
    [[ -z ${suffix[${f[0]}]:-} ]] || continue
    splits+=("${f[0]}")
    suffix[${f[0]}]=${f[1]}
    size=""
    [[ ${f[3]} == - ]] || size=" ($(human "${f[3]}"))"
    printf -v line '  %-7s %-25s %s%s' "${f[0]}" "DOWNLOAD_URL_${f[1]}" "${f[2]}" "$size"
    table+=$line$'\n'
  done <"$file"
  ((${#splits[@]})) || die "$file holds no archive; restore the file from the repository"
  declare -gra SPLITS=("${splits[@]}")
  declare -gA SUFFIX=()
  for line in "${splits[@]}"; do SUFFIX[$line]=${suffix[$line]}; done
  readonly SUFFIX
  declare -gr HELP_TABLE=${table%$'\n'}
}

usage() {
  cat <<EOF
Usage: $PROG [options] SPLIT...
Download ILSVRC2012 archives into ROOT/downloads/. SPLIT is one of: ${SPLITS[*]} all

$HELP_TABLE

The links come from --urls FILE, else \$IMAGENET_URLS, else ./urls.sh, else urls.sh in this
repository folder (start from urls.sh.example); a variable already set in the environment wins over
the file. The file is read, not run: NAME="value" lines (or NAME='value', export NAME=...), comments
and blank lines. The file name is the last part of the link's path. MD5_<split> / SIZE_<split> in
urls.sh (e.g. MD5_val, MD5_devkit_t12) override the checksums of the official archives
(imagenet_prep/release.tsv), for mirrors. Needs python3 and the folder imagenet_prep/ beside this
script: copy or clone the whole repository folder.

Options:
  --root DIR         data folder (default: \$IMAGENET_ROOT, else the current directory)
  --urls FILE        file with the DOWNLOAD_URL_* links (default: see above)
  --connections N    fetch N byte ranges of a file at once (default: 1), in pieces of at
                     least 16 MiB (8 per connection) that are appended to NAME.part as they
                     complete; needs free space for the file plus one piece
  --retries N        attempts in a row without progress before giving up (default: 10, or
                     \$DOWNLOAD_RETRIES)
  --no-verify        do not check MD5 (default: check); needed for a file with no known checksum
  -h, --help         show this help

Environment: DOWNLOAD_SPEED_LIMIT (1024 B/s) and DOWNLOAD_SPEED_TIME (60 s): slower than that for
that long counts as a stall and is retried; DOWNLOAD_CONNECT_TIMEOUT (30 s); DOWNLOAD_RETRY_DELAY
(5 s, doubled per failed attempt up to DOWNLOAD_RETRY_DELAY_MAX, 300 s) — the policy of
imagenet_prep/transport.py, shared with 01_unzip.sh --stream; DOWNLOAD_PROGRESS_STEP (5 %: one
progress line per step when stderr is not a terminal); DOWNLOAD_MD5_FOLLOW (1: hash NAME.part
while it downloads, state in NAME.part.md5state; 0: read it again with md5sum at the end).

A rerun continues NAME.part where it stopped and says "already done" for a verified file without
touching the network (NAME.md5 records the check; delete it to check again), and for a split that
01_unzip.sh extracted and verified before it removed the archive (--remove-archive). A file that
is full size but fails its checksum is moved to NAME.bad and the split fails; a rerun downloads it
again. A web page received instead of the archive (an expired link, a login page) is set aside as
NAME.html. NAME.lock keeps a second $PROG off the same file; it is removed when the run ends or
is stopped. Exit codes: 0 all requested splits present and verified, 1 failure, 2 usage,
130 stopped by Ctrl-C, 143 stopped by SIGTERM (129 by SIGHUP).
EOF
}

usage_error() {  # usage_error MESSAGE...
  printf '%s: %s\n\n' "$PROG" "$*" >&2
  usage >&2
  exit 2
}

# --- small helpers ---------------------------------------------------------------------------------

fsize() { stat -c %s -- "$1" 2>/dev/null || echo 0; }

human() {  # bytes -> "6.3 GiB"
  awk -v b="$1" 'BEGIN { split("B KiB MiB GiB TiB PiB", u); i = 1
    while (b >= 1024 && i < 6) { b /= 1024; i++ }
    if (i == 1) printf "%d B", b; else printf "%.1f %s", b, u[i] }'
}

free_bytes() { df -P -B1 -- "$1" | awk 'NR == 2 && $4 ~ /^[0-9]+$/ { print $4 }'; }

now() { printf '%s' "${EPOCHREALTIME:-$(date +%s.%N)}"; }

seconds_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }  # T0 T1 -> "0.21"

md5_of() { local h; h=$(md5sum -- "$1") || return 1; printf '%s' "${h%% *}"; }

# to_count VAR VALUE: set VAR to VALUE if it is a whole number of at most MAX_DIGITS digits, in
# plain decimal (leading zeros dropped, so that bash does not read it as octal); else return 1.
# Every number from a server, urls.sh or the environment passes here before any arithmetic.
to_count() {
  local digits_=$2
  [[ $digits_ =~ ^[0-9]+$ ]] || return 1
  digits_=${digits_#"${digits_%%[!0]*}"}
  digits_=${digits_:-0}
  ((${#digits_} <= MAX_DIGITS)) || return 1
  printf -v "$1" '%s' "$digits_"
}

# check_knob NAME VALUE KIND: die unless VALUE, from environment variable NAME, is of KIND: count
# (a whole number >= 1, no leading zero), percent (1 to 100), seconds (e.g. 5 or 0.5) or switch
# (0 or 1). The value itself is not shown.
check_knob() {
  local name=$1 value=$2 kind=$3 n what
  case $kind in
    count) what="a whole number of at least 1 (no leading zero)"
      to_count n "$value" && [[ $n == "$value" ]] && ((n >= 1)) && return 0 ;;
    percent) what="a whole number from 1 to 100"
      to_count n "$value" && [[ $n == "$value" ]] && ((n >= 1 && n <= 100)) && return 0 ;;
    seconds) what="a number of seconds such as 5 or 0.5"
      [[ $value =~ ^[0-9]{1,6}(\.[0-9]{1,6})?$ ]] && return 0 ;;
    switch) what="0 or 1"
      [[ $value == [01] ]] && return 0 ;;
  esac
  die "$name in the environment must be $what; fix it, or unset it to use the default (see --help)"
}

check_knobs() {  # 00's own knobs; the curl policy's are checked by read_policy
  check_knob DOWNLOAD_PROGRESS_STEP "$PROGRESS_STEP" percent
  check_knob DOWNLOAD_PROGRESS_POLL "$PROGRESS_POLL" seconds
  check_knob DOWNLOAD_MIN_SEGMENT "$MIN_SEGMENT" count
  check_knob DOWNLOAD_MD5_FOLLOW "$FOLLOW_MD5" switch
}

# read_policy: the curl policy from imagenet_prep/transport.py (which checks the DOWNLOAD_* values
# and names a bad one), each value checked again here before use; --retries N wins over
# $DOWNLOAD_RETRIES. Sets the readonly SPEED_LIMIT, SPEED_TIME, CONNECT_TIMEOUT, RETRY_DELAY_MAX
# (a fallback pause) and RETRIES, and CURL_BASE; the pauses come from `decide` (after_failure).
read_policy() {
  local out name value re_count='^[1-9][0-9]{0,8}$' re_seconds='^[0-9]{1,6}(\.[0-9]{1,6})?$'
  local -A got=()
  out=$(DOWNLOAD_RETRIES=${RETRIES_ARG:-${DOWNLOAD_RETRIES:-}} py transport settings 2>&1) \
    || die "${out#error: }"
  while IFS='=' read -r name value; do
    case $name in
      DOWNLOAD_SPEED_LIMIT | DOWNLOAD_SPEED_TIME | DOWNLOAD_RETRIES) [[ $value =~ $re_count ]] || value="" ;;
      DOWNLOAD_CONNECT_TIMEOUT | DOWNLOAD_RETRY_DELAY | DOWNLOAD_RETRY_DELAY_MAX) [[ $value =~ $re_seconds ]] || value="" ;;
      *) continue ;;
    esac
    got[$name]=$value
  done <<<"$out"
  for name in DOWNLOAD_SPEED_LIMIT DOWNLOAD_SPEED_TIME DOWNLOAD_CONNECT_TIMEOUT DOWNLOAD_RETRY_DELAY \
    DOWNLOAD_RETRY_DELAY_MAX DOWNLOAD_RETRIES; do
    [[ -n ${got[$name]:-} ]] || die "internal: imagenet_prep/transport.py gave no usable $name"
  done
  declare -gr SPEED_LIMIT=${got[DOWNLOAD_SPEED_LIMIT]} SPEED_TIME=${got[DOWNLOAD_SPEED_TIME]}
  declare -gr CONNECT_TIMEOUT=${got[DOWNLOAD_CONNECT_TIMEOUT]} RETRY_DELAY_MAX=${got[DOWNLOAD_RETRY_DELAY_MAX]}
  declare -gr RETRIES=${got[DOWNLOAD_RETRIES]}
  declare -gra CURL_BASE=(-L -f --connect-timeout "$CONNECT_TIMEOUT" --speed-limit "$SPEED_LIMIT"
    --speed-time "$SPEED_TIME")
}

# read_links VAR: the links of the wanted splits, checked, from imagenet_prep/urls.py (the one
# parser of urls.sh; it says what is wrong, by line and variable, never by value): VAR gets
# LINK_FIELDS fields per split, in the order of WANT. The links come through a pipe, never a file.
read_links() {
  local -n links_out_=$1
  local -a args=()
  local status
  [[ -z $URLS_ARG ]] || args+=(--urls "$URLS_ARG")
  ((VERIFY)) || args+=(--no-verify)
  mapfile -d '' -t links_out_ < <(
    rc=0
    py urls "${args[@]}" "${WANT[@]}" || rc=$?
    printf 'exit=%s\0' "$rc"
  )
  status=${links_out_[-1]:-}
  unset 'links_out_[-1]'
  [[ $status == exit=0 ]] || exit 1  # imagenet_prep/urls.py said why
  ((${#links_out_[@]} == LINK_FIELDS * ${#WANT[@]})) || die "internal: imagenet_prep/urls.py gave" \
    "${#links_out_[@]} fields for ${#WANT[@]} split(s)"
}

# --- processes -------------------------------------------------------------------------------------
# Each split runs in a process group of its own (its process, queue workers, curl, head, progress,
# MD5 follower, watchdog). Stopping a split is one `kill -- -PGID`: nothing of it can be missed or
# outlive it, whichever of its processes died first. There are no TERM traps below the main process:
# bash 5.2 can fail to parse a trap that fires while it expands a $( ), and then dies without its
# clean-up.

# stat_of PID: "STATE PPID PGID" of a process from /proc; 1 when it is gone.
stat_of() {
  local line
  { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
  line=${line##*) }  # the command name, in parentheses, may hold spaces
  local -a f
  read -ra f <<<"$line"
  printf '%s %s %s' "${f[0]}" "${f[1]}" "${f[2]}"
}

alive() {  # alive PID: the process exists and is not a zombie
  local st
  st=$(stat_of "$1") || return 1
  [[ $st != Z* ]]
}

# group_members PGID SKIP: the live processes of process group PGID, one per line, but SKIP and
# the process running this function.
group_members() {
  local self=$BASHPID f line pid
  local -a st
  for f in /proc/[0-9]*/stat; do
    { read -r line <"$f"; } 2>/dev/null || continue
    pid=${line%% *}
    read -ra st <<<"${line##*) }"
    [[ ${st[2]} == "$1" && ${st[0]} != Z && $pid != "$self" && $pid != "$2" ]] && printf '%s\n' "$pid"
  done
  return 0
}

# stop_group PGID [SKIP]: TERM process group PGID (and CONT, in case Ctrl-Z stopped it), wait until
# it is empty (SKIP, the caller, aside), after STOP_WAIT tenths of a second KILL what is left.
stop_group() {
  local i
  local -a pids
  kill -TERM -- "-$1" 2>/dev/null || return 0
  kill -CONT -- "-$1" 2>/dev/null || true
  for ((i = 0; i < STOP_WAIT; i++)); do
    mapfile -t pids < <(group_members "$1" "${2:-}")
    ((${#pids[@]})) || return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

# drop_lock LOCK: remove LOCK if no process holds it (left by a split that was stopped or killed).
drop_lock() {
  local fd
  [[ -e $1 ]] || return 0
  { exec {fd}>>"$1"; } 2>/dev/null || return 0
  if flock -n "$fd" 2>/dev/null; then rm -f -- "$1"; fi
  exec {fd}>&-
}

# watch_main MAIN SPLIT LOCK: a watchdog in the split's group. If the main process goes away without
# stopping the split (kill -9, the OOM killer), it stops the group (the MD5 follower saves its state
# on the TERM), removes LOCK and the temporary folder: nothing of the run outlives it, and a rerun
# finds the file free.
watch_main() {
  local main=$1 split=$2 lock=$3 st
  # Ctrl-Z then kill -9 of the main process orphans the stopped group: the kernel sends it HUP and
  # CONT. This process outlives the HUP to clean up after the CONT.
  trap '' HUP
  while st=$(stat_of "$split"); do
    st=${st#* }
    [[ ${st%% *} == "$main" ]] || break
    sleep 0.5 >/dev/null 2>&1 || true
  done
  if ! alive "$split"; then  # the split ended: the main process cleans up, if it is still there
    alive "$main" && exit 0
  fi
  trap '' TERM INT PIPE  # the group is stopped from here; this process finishes the clean-up
  stop_group "$split" "$BASHPID"
  drop_lock "$lock"
  rm -rf -- "$TMPD"
  log "$SPLIT: $PROG (process $main) was killed; stopped the download of $NAME (rerun to continue)" || true
}

# on_signal SIGNAL [PID LOCK]: TERM, INT or HUP in the main process: stop the split's process group
# PID (the trap names the split that runs), remove its lock if nothing holds it any more, exit
# 128 + the signal's number (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
on_signal() {
  trap '' TERM INT HUP
  if [[ -n ${2:-} ]]; then
    stop_group "$2"
    drop_lock "$3"
  fi
  log "interrupted; rerun the same command to continue where it stopped"
  case $1 in
    INT) exit 130 ;;
    HUP) exit 129 ;;
    *) exit 143 ;;
  esac
}

# on_stop PID: Ctrl-Z (TSTP) reaches the terminal's foreground group, the main process only: stop the
# split's group too, then this process; once fg / bg continues it (kill returns), continue the split's
# group. No trap on CONT: bash 5.2 runs only the CONT trap when TERM and CONT arrive together (as GNU
# timeout sends them), and the TERM is lost: the download would go on to the end.
on_stop() {
  if [[ -n ${1:-} ]]; then kill -STOP -- "-$1" 2>/dev/null || true; fi
  kill -STOP "$BASHPID"
  if [[ -n ${1:-} ]]; then kill -CONT -- "-$1" 2>/dev/null || true; fi
}

# set_traps [PID LOCK]: the main process's handlers, naming the split that runs (if any).
set_traps() {
  local pidarg="" named=""
  if (($#)); then
    printf -v pidarg ' %q' "$1"
    printf -v named ' %q %q' "$1" "$2"
  fi
  # shellcheck disable=SC2064  # the values are meant to be fixed now, in the trap string
  {
    trap "on_signal INT$named" INT
    trap "on_signal TERM$named" TERM
    trap "on_signal HUP$named" HUP
    trap "on_stop$pidarg" TSTP
  }
}

# --- curl ------------------------------------------------------------------------------------------

# run_curl RES [--cap N FILE | --bar] ARG...: curl on $URL with ARG... The URL goes in on stdin
# (-K -), never on the command line where `ps` would show it. With --cap, the body goes through
# `head -c N` onto the end of FILE: at most N bytes are written, whatever the server sends. With
# --bar, curl draws its progress bar on the terminal. Results in the associative array RES: rc
# (curl's exit code; 0 once the N bytes are in), code (last HTTP status, 000 for none), hdr (file
# with the response headers), msg (curl's error line, without the URL), curl (curl's own exit code:
# 23 with --cap when it still had bytes to write after the N).
# shellcheck disable=SC2034  # VAR_ is a nameref (local -n): the caller reads what is assigned
run_curl() {
  local -n res_=$1
  shift
  local cap="" capfile="" bar=0 before=0 url=${URL//\\/\\\\} base=$TMPD/curl.$BASHPID st rc=0 code msg raw
  if [[ $1 == --cap ]]; then
    cap=$2 capfile=$3
    shift 3
    before=$(fsize "$capfile")
  elif [[ $1 == --bar ]]; then
    bar=1
    shift
  fi
  url=${url//\"/\\\"}
  : >"$base.err"
  : >"$base.hdr"
  rm -f -- "$base.rc"
  if [[ -n $cap ]]; then
    { set +e
      printf 'url = "%s"\n' "$url" | curl -sS -D "$base.hdr" "$@" -o - -K - 2>"$base.err" \
        | head -c "$cap" 2>"$base.herr" >>"$capfile"
      printf '%s %s\n' "${PIPESTATUS[1]}" "${PIPESTATUS[2]}" >"$base.rc"; } &
  elif ((bar)); then
    printf 'url = "%s"\n' "$url" | curl --progress-bar -D "$base.hdr" "$@" -K - >/dev/null &
  else
    printf 'url = "%s"\n' "$url" | curl -sS -D "$base.hdr" "$@" -K - >/dev/null 2>"$base.err" &
  fi
  wait "$!" || rc=$?
  raw=$rc
  if [[ -n $cap ]]; then
    st="143 0"  # no status: the pipeline was killed
    [[ ! -f $base.rc ]] || read -r st <"$base.rc" || true
    [[ $st =~ ^[0-9]{1,3}\ [0-9]{1,3}$ ]] || st="143 0"
    rc=${st%% *} raw=${st%% *}
    if [[ ${st#* } != 0 ]]; then  # head could not write: the disk
      rc=23
      cp -f -- "$base.herr" "$base.err" 2>/dev/null || true
    elif (($(fsize "$capfile") - before == cap)); then
      rc=0  # all N bytes are in; curl's complaint about the closed pipe does not matter
    fi
  fi
  code=$(awk '/^HTTP\/[0-9.]+ [0-9][0-9][0-9]/ { c = $2 } END { print c }' "$base.hdr")
  [[ $code =~ ^[0-9]{3}$ ]] || code=000
  msg=$(grep -v '^$' "$base.err" | tail -n 1 || true)
  msg=$(scrub_links "${msg//"$URL"/"$SHOW"}")
  res_=([rc]="$rc" [code]="$code" [hdr]="$base.hdr" [msg]="$msg" [curl]="$raw")
}

scrub_links() {  # scrub_links TEXT: TEXT with every remaining scheme://... replaced by <link>
  local t=$1 re='[A-Za-z][A-Za-z0-9+.-]*://[^[:space:]]*'
  while [[ $t =~ $re ]]; do t=${t//"${BASH_REMATCH[0]}"/<link>}; done
  printf '%s' "$t"
}

# nap SECONDS: sleep, in the background so that a signal is handled at once, without the lock's fd.
nap() {
  sleep "$1" {LOCK_FD}>&- &
  wait "$!" || true
}

# after_failure RES FAILS WHAT [AT]: a curl attempt (results in RES, see run_curl) failed while WHAT;
# FAILS attempts in a row brought no byte. imagenet_prep/transport.py decides (the one policy); this
# adds the context: the split, the file and host, the variable and where it is set. Returns 0 after
# the pause when another attempt is worth it, 1 after saying why not (a permanent failure, or the
# attempts used up).
after_failure() {
  local -n fail_=$1
  local fails=$2 what=$3 at=${4:-} answer action reason why count=""
  answer=$(DOWNLOAD_RETRIES=$RETRIES py transport decide "${fail_[rc]}" "${fail_[code]}" "$fails" 2>&1) \
    || answer="stop ${answer#error: }"
  action=${answer%% *} reason=${answer#* }
  case $action in
    retry)
      [[ $reason =~ ^[0-9]{1,9}(\.[0-9]{1,6})?$ ]] || reason=$RETRY_DELAY_MAX
      why=${fail_[msg]:-curl exit code ${fail_[rc]}}
      [[ ${fail_[rc]} == 0 ]] && why="the connection ended early"
      ((fails > 0)) && count=" ($fails of $RETRIES attempts in a row without progress)"
      log "$SPLIT: $why; retrying in ${reason}s${at:+ from byte $at}$count"
      nap "$reason"
      return 0 ;;
    give-up)
      err "$SPLIT: giving up on $SHOW after $RETRIES attempts in a row without progress while $what:" \
        "$reason (${fail_[msg]}). Rerun later (it continues where it stopped) or check" \
        "DOWNLOAD_URL_$SUF in $URL_FROM." ;;
    *)
      if [[ ${fail_[rc]} == 23 ]]; then  # a full disk: say where, and how much is free there
        err "$SPLIT: $reason: cannot write to $DL while $what ($(human "$(free_bytes "$DL")") free" \
          "there). Free some space and rerun: the download continues where it stopped. (${fail_[msg]})"
      else
        err "$SPLIT: $reason: $SHOW, while $what (${fail_[msg]}). The link is DOWNLOAD_URL_$SUF in" \
          "$URL_FROM; rerun once it is fixed."
      fi ;;
  esac
  return 1
}

# header_value FILE NAME: value of a header in the last response of a curl -D dump.
header_value() {
  awk -v want="$(tr '[:upper:]' '[:lower:]' <<<"$2")" '
    /^HTTP\// { v = "" }
    { line = $0; sub(/\r$/, "", line); i = index(line, ":")
      if (i > 0 && tolower(substr(line, 1, i - 1)) == want) {
        v = substr(line, i + 1); sub(/^[ \t]+/, "", v); sub(/[ \t]+$/, "", v) } }
    END { print v }' "$1"
}

# web_page_error [FILE [KEPT]]: say that the link answered with a web page; FILE (what came, if
# given) becomes NAME.html; KEPT says what stays on disk for the rerun.
web_page_error() {
  local saved="" kept=${2:+ $2.}
  if [[ -n ${1:-} && -e $1 ]]; then
    if mv -f -- "$1" "$FINAL.html"; then saved=" (it was saved as $FINAL.html)"; else rm -f -- "$1"; fi
  fi
  err "$SPLIT: the link answered with a web page (HTML), not with $NAME$saved: it has expired, or" \
    "the site wants you to log in.$kept Log in at image-net.org, copy a fresh link for $NAME into" \
    "DOWNLOAD_URL_$SUF ($URL_FROM) and rerun."
}

# kept_note: what a stop leaves on disk for the rerun, for a message.
kept_note() {
  local n pieces=""
  n=$(stat -c %s -- "$PART" "$PART".[0-9]*-[0-9]* 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
  [[ -z $(list_segments) ]] || pieces=" and its pieces"
  printf '%s' "The $(human "$n") already in $NAME.part$pieces are kept as they are (nothing was discarded)"
}

# whole_again HDR [SAMPLE]: the last response in HDR, a 200 to a resume (or, with SAMPLE, its first
# bytes: to a fresh start), is the whole of NAME again, as a server that ignores byte ranges sends
# it: not a web page (by its Content-Type or its first bytes) and a Content-Length equal to the
# known size of NAME. Else it says what came instead and what is kept, and returns 1: a login page
# of an expired link, or another file, must never make the bytes already here be thrown away.
whole_again() {
  local ctype len="" what
  ctype=$(header_value "$1" Content-Type)
  if [[ ${ctype,,} == text/html* || ${ctype,,} == application/xhtml* ]] \
    || { [[ -n ${2:-} ]] && looks_like_html "$2"; }; then
    web_page_error "" "$(kept_note)"
    return 1
  fi
  what=$(header_value "$1" Content-Length)
  [[ -z $what ]] || to_count len "$what" || { bad_number Content-Length; return 1; }
  [[ -n $len && -n $END_TOTAL && $len == "$END_TOTAL" ]] && return 0
  what="unknown length (no Content-Length)"
  [[ -z $len ]] || what="$len bytes"
  if [[ -z $END_TOTAL ]]; then
    err "$SPLIT: $HOST ignores byte ranges and does not tell the size of $NAME, so it cannot be" \
      "checked that starting over would bring the same file. $(kept_note). Set SIZE_$SUF in" \
      "$URLS_FROM if you know the size, or remove $PART* to start over."
  else
    err "$SPLIT: $HOST ignored the byte range of a resume and sent a whole file (HTTP 200) of" \
      "$what, but $NAME has $END_TOTAL bytes: the link now leads to another file, or the server" \
      "changed it. $(kept_note). Check DOWNLOAD_URL_$SUF in $URL_FROM (a fresh link?) and rerun;" \
      "remove $PART* only if you want to start over."
  fi
  return 1
}

# restart_ok: starting NAME over from byte 0 would throw away what NAME.part and its pieces hold:
# allowed only when the link still serves the whole file (whole_again). One small GET looks at what a
# start from byte 0 would get: its headers and first 512 bytes. Returns 1 after saying why not.
restart_ok() {
  local sample=$TMPD/$SPLIT.sample
  local -A res=()
  : >"$sample" || { err "$SPLIT: cannot write in $TMPD; check TMPDIR"; return 1; }
  run_curl res --cap 512 "$sample" "${CURL_BASE[@]}" --max-time 300
  if [[ ${res[rc]} != 0 ]]; then
    err "$SPLIT: $HOST ignored a byte range, and asking what a fresh start of $NAME would bring" \
      "failed (${res[msg]:-curl exit code ${res[rc]}}). $(kept_note). Rerun later."
    return 1
  fi
  whole_again "${res[hdr]}" "$sample" || return 1
  same_start "$sample"
}

# same_start SAMPLE: the first bytes of what the link sends now (SAMPLE) are those NAME.part begins
# with. A mirror without SIZE_<s> gives no size to check a 200 against; another file under the same
# name still shows in its first bytes (a tar header names its first member), and NAME.part is kept.
same_start() {
  local n
  n=$(fsize "$PART")
  ((n <= 512)) || n=512
  (($(fsize "$1") >= n)) || n=$(fsize "$1")
  ((n == 0)) || cmp -s -n "$n" -- "$1" "$PART" && return 0
  err "$SPLIT: $HOST ignores byte ranges, and what it sends now does not begin with the bytes" \
    "$NAME.part begins with: the link leads to another file than the one begun. $(kept_note)." \
    "Check DOWNLOAD_URL_$SUF in $URL_FROM (a fresh link?) and rerun; remove $PART* only to start over."
  return 1
}

looks_like_html() {  # looks_like_html FILE: FILE starts like an HTML (or XML) page, not an archive
  local start re='^[[:space:]]*<(!doctype[[:space:]]+html|html|head|body|!--|\?xml|title|meta)'
  start=$(head -c 512 -- "$1" | tr -d '\0' | tr '[:upper:]' '[:lower:]') || return 1
  start=${start#$'\xef\xbb\xbf'}
  [[ $start =~ $re ]]
}

# probe_headers HDR TOTALVAR: the last response in HDR is not a web page; TOTALVAR gets its
# Content-Length ("" if none), checked to be a plain number.
# shellcheck disable=SC2034  # VAR_ is a nameref (local -n): the caller reads what is assigned
probe_headers() {
  local -n len_out_=$2
  local ctype len
  ctype=$(header_value "$1" Content-Type)
  if [[ ${ctype,,} == text/html* || ${ctype,,} == application/xhtml* ]]; then
    web_page_error
    return 1
  fi
  len=$(header_value "$1" Content-Length)
  len_out_=""
  [[ -z $len ]] || to_count len_out_ "$len" || { bad_number Content-Length; return 1; }
}

bad_number() {  # bad_number HEADER: the server sent a HEADER that is not a plain number
  err "$SPLIT: $HOST sent a $1 header for $NAME that is not a plain number of bytes; refusing to" \
    "go on (a broken server, or one trying to make the shell run it; the value is not shown)." \
    "Check DOWNLOAD_URL_$SUF in $URL_FROM."
}

# probe TOTALVAR RANGESVAR [RANGED]: learn the total size (TOTALVAR, "" unknown) and whether byte
# ranges work (RANGESVAR: yes / no / "" unknown), without fetching the body; RANGED=1 asks with a
# one-byte ranged GET at once. Returns 1 on a permanent failure (message printed).
# shellcheck disable=SC2034  # VAR_ is a nameref (local -n): the caller reads what is assigned
probe() {
  local -n total_=$1 ranges_=$2
  local fails=0 ranged_get=${3:-0} range_total
  local -A res=()
  total_="" ranges_=""
  while :; do
    if ((!ranged_get)); then
      run_curl res "${CURL_BASE[@]}" -I -o /dev/null --max-time 300
      if ((res[rc] == 0)); then
        probe_headers "${res[hdr]}" total_ || return 1
        case $(header_value "${res[hdr]}" Accept-Ranges) in
          bytes) ranges_=yes ;;
          none) ranges_=no ;;
        esac
        [[ $total_ == 0 ]] || return 0
        ranged_get=1  # "0 bytes" to a HEAD: some servers say so; ask with a GET
        continue
      fi
      # some signed links allow only GET: fall through to a one-byte ranged GET
      if [[ ${res[rc]} == 22 && ${res[code]} == 4?? && ${res[code]} != 408 && ${res[code]} != 429 ]]; then
        ranged_get=1
        continue
      fi
    else
      run_curl res "${CURL_BASE[@]}" -r 0-0 -o /dev/null --max-filesize 1 --max-time 300
      # --max-filesize stops a body over 1 byte (exit 63) before -f sees an error status (22)
      [[ ${res[rc]} != 63 || ${res[code]} != [45]?? ]] || res[rc]=22
      if [[ (${res[rc]} == 0 || ${res[rc]} == 63) && ${res[code]} == 206 ]]; then
        probe_headers "${res[hdr]}" total_ || return 1
        range_total=$(header_value "${res[hdr]}" Content-Range)
        range_total=${range_total##*/}
        total_=""
        [[ -z $range_total || $range_total == "*" ]] || to_count total_ "$range_total" \
          || { bad_number Content-Range; return 1; }
        ranges_=yes
        return 0
      elif [[ (${res[rc]} == 63 || ${res[rc]} == 0) && ${res[code]} == 200 ]]; then
        probe_headers "${res[hdr]}" total_ || return 1
        ranges_=no
        return 0
      elif [[ ${res[rc]} == 22 && ${res[code]} == 416 ]]; then
        return 0  # an empty file, or a server that hides the size: the download will tell
      fi
    fi
    fails=$((fails + 1))
    after_failure res "$fails" "asking for the size of $NAME" || return 1
  done
}

# fetch_range OUT START END MODE: make OUT hold bytes [START, END) of the file (END "" = to the end),
# continuing after the bytes already in OUT. MODE single: the whole file, plain resume. MODE head:
# NAME.part in a ranged download (the joiner may append behind it, so it is never cut back). MODE
# piece: a NAME.part.START-END file; once the joiner appended and removed it, it is done. Whenever
# END is known the bytes are counted: nothing past END is written, whatever the server sends.
# Returns 0 done, 1 failed (message printed), 3 the server ignored the Range and offers the whole
# file again (nothing was written; the caller decides whether to start over).
fetch_range() {
  local out=$1 start=$2 end=$3 mode=$4
  local have now off fails=0
  local -A res=()
  while :; do
    have=$(fsize "$out")
    # a piece is removed only once complete and appended to NAME.part by the joiner
    [[ $mode == piece && ! -e $out ]] && return 0
    if [[ -n $end ]] && ((start + have >= end)); then
      ((start + have > end)) || return 0
      range_too_long "$out" "$((end - start))" "$mode"
      return
    fi
    off=$((start + have))
    fetch_once res "$out" "$off" "$end" "$mode"
    [[ $mode == piece && ! -e $out ]] && return 0
    now=$(fsize "$out")
    if ((off == 0 && now > 0)) && looks_like_html "$out"; then
      web_page_error "$out"
      return 1
    fi
    if ((res[rc] == 0)); then
      [[ -z $end ]] && return 0
      if ((start + now >= end)); then
        [[ $mode != single ]] || ! sent_more res "$((end - off))" || return 1
        continue
      fi
    elif ((res[rc] == 33)); then
      ignored_range res "$mode" || return 1
      return 3
    elif [[ ${res[rc]} == 22 && ${res[code]} == 416 ]]; then
      [[ -z $end ]] && return 0  # size unknown: the server says nothing is left
      err "$SPLIT: $HOST answers 416 (range not satisfiable) at byte $off of $NAME although it reported" \
        "$END_TOTAL bytes: the server misreports the file's length. Try again later or get a fresh" \
        "link; ${out##*/} is kept (remove it to start over)."
      return 1
    fi
    if ((now > have)); then fails=0; else fails=$((fails + 1)); fi
    after_failure res "$fails" "downloading $NAME" "$((start + now))" || return 1
  done
}

# fetch_once RES OUT OFF END MODE: one curl attempt from byte OFF into OUT (see fetch_range). With END
# known the body goes through --cap (at most END - OFF bytes); in a ranged download the Range asks
# for [OFF, END). Only one connection to a file of unknown size, on a terminal, shows curl's bar.
# shellcheck disable=SC2034  # VAR_ is a nameref (local -n): the caller reads what is assigned
fetch_once() {
  local -n once_=$1
  local out=$2 off=$3 end=$4 mode=$5
  if [[ $mode != single ]]; then
    run_curl once_ --cap "$((end - off))" "$out" "${CURL_BASE[@]}" -C "$off" -H "Range: bytes=$off-$((end - 1))"
  elif [[ -n $end ]]; then
    run_curl once_ --cap "$((end - off))" "$out" "${CURL_BASE[@]}" -C "$off"
  elif [[ -t 2 ]]; then
    run_curl once_ --bar "${CURL_BASE[@]}" -C "$off" -o "$out"
  else
    run_curl once_ "${CURL_BASE[@]}" -C "$off" -o "$out"
  fi
}

# range_too_long OUT LEN MODE: OUT holds more than its LEN bytes. A piece is cut back to them (what
# lies past its end is the next piece's, in a file of its own); NAME.part in a ranged download may
# be ahead of its range while a piece is appended: it is done. NAME.part alone is never cut: said.
range_too_long() {
  local out=$1 len=$2 mode=$3
  case $mode in
    head) return 0 ;;
    piece) truncate -s "$len" -- "$out" && return 0
      err "$SPLIT: cannot cut $out back to its $len bytes; remove it and rerun" ;;
    *) err "$SPLIT: $NAME.part holds $(fsize "$out") bytes, more than the $len bytes of $NAME. It is" \
      "kept as it is; move it away (mv $PART $PART.bad) and rerun to download $NAME again." ;;
  esac
  return 1
}

# sent_more RES CAP: the answer in RES (its CAP bytes written) had more than CAP bytes: a larger
# Content-Length, or curl still writing when the cap was reached. Says so (nothing past the file's
# size was written) and returns 0.
sent_more() {
  local -n more_=$1
  local len="" what
  what=$(header_value "${more_[hdr]}" Content-Length)
  [[ -z $what ]] || to_count len "$what" || len=""
  if [[ -n $len ]] && ((len > $2)); then
    what="it announced $len bytes from byte $((END_TOTAL - $2)), $((len - $2)) more than the file has"
  elif [[ ${more_[curl]} == 23 ]]; then
    what="it went on sending after the last byte"
  else
    return 1
  fi
  err "$SPLIT: $HOST sent more than the $END_TOTAL bytes of $NAME ($what): the file on the server" \
    "is not the one expected, or the server misreports its length. $NAME.part holds its first" \
    "$END_TOTAL bytes, nothing past them. Check DOWNLOAD_URL_$SUF in $URL_FROM; rerun to check" \
    "what is there (remove $PART to download it again)."
  return 0
}

# ignored_range RES MODE: a resume was answered 200 (curl exit 33: nothing was written). Returns 0
# when that answer is the whole file again (whole_again), so that starting over is worth asking;
# else 1 after the message, said once for all the connections of a ranged download.
ignored_range() {
  local -n ign_=$1
  local said=$TMPD/$SPLIT.said.$BASHPID
  whole_again "${ign_[hdr]}" 2>"$said" && { rm -f -- "$said"; return 0; }
  if [[ $2 == single ]] || (set -C && : >"$TMPD/$SPLIT.said") 2>/dev/null; then cat -- "$said" >&2; fi
  rm -f -- "$said"
  return 1
}

# --- progress --------------------------------------------------------------------------------------

# progress_watch TOTAL T0_BYTES PARENT: a line every PROGRESS_STEP % (log) or a live line (terminal),
# from the size of NAME.part and its range files. Ends when PARENT ends or on TERM.
progress_watch() {
  local total=$1 base=$2 parent=$3 step=$PROGRESS_STEP next cur pct t0 rate tty=0 poll=$PROGRESS_POLL
  [[ -t 2 ]] && tty=1 && poll=${DOWNLOAD_PROGRESS_POLL:-0.5}
  t0=$(now)
  next=0
  while kill -0 "$parent" 2>/dev/null; do
    sleep "$poll"
    cur=$(stat -c %s -- "$PART" "$PART".[0-9]*-[0-9]* 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
    rate=$(awk -v c="$cur" -v b="$base" -v t0="$t0" -v t="$(now)" \
      'BEGIN { d = t - t0; printf "%.1f", (d > 0 ? (c - b) / d / 1048576 : 0) }')
    if [[ -z $total || $total == 0 ]]; then
      ((tty)) && printf '\r%s: %s, %s MiB/s   ' "$NAME" "$(human "$cur")" "$rate" >&2
      continue
    fi
    pct=$((cur * 100 / total))
    ((pct > 100)) && pct=100  # a piece being appended counts twice for a moment
    if ((tty)); then
      printf '\r%s: %3d%% %s of %s, %s MiB/s   ' "$NAME" "$pct" "$(human "$cur")" "$(human "$total")" "$rate" >&2
    elif ((pct >= next)); then
      log "$NAME: $pct% ($(human "$cur") of $(human "$total"), $rate MiB/s)"
      next=$(((pct / step + 1) * step))
    fi
  done
}

# start_progress PIDVAR MODE TOTAL T0_BYTES: the progress watcher (PIDVAR: its pid, "" for none:
# one connection to a file of unknown size, on a terminal, shows curl's own bar).
# shellcheck disable=SC2034  # VAR_ is a nameref (local -n): the caller reads what is assigned
start_progress() {
  local -n watcher_=$1
  local me=$BASHPID
  watcher_=""
  [[ $2 == single && -t 2 && -z $3 ]] && return 0
  progress_watch "$3" "$4" "$me" {LOCK_FD}>&- &  # a leftover sleep must not hold the lock
  watcher_=$!
}

stop_progress() {  # stop_progress PID
  [[ -n $1 ]] || return 0
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  [[ -t 2 ]] && printf '\n' >&2
  return 0
}

# --- the MD5 while downloading ---------------------------------------------------------------------
# A follower (imagenet_prep/md5follow.py) hashes NAME.part as it grows — as curl writes it, or as
# pieces are appended in order — and keeps its state in NAME.part.md5state. At the end only what it
# had not reached is read. It is one more process of the split's group (it dies with it, and on its
# own when the split's process is gone); on TERM it saves its state, so a rerun continues from there.
# NAME.part is never rewritten in place while it runs: starting over makes a new file (empty_part),
# which the follower tells by its inode. The state file never survives a success (drop_md5_state).

# start_follower PIDVAR: start the follower if the MD5 is to be checked (PIDVAR: its pid, or "").
# shellcheck disable=SC2034  # VAR_ is a nameref (local -n): the caller reads what is assigned
start_follower() {
  local -n follower_=$1
  follower_=""
  ((VERIFY && FOLLOW_MD5)) && [[ -n $EXP_MD5 ]] || return 0
  py_exec md5follow --log-as "$PROG" follow "$PART" "$STATE" {LOCK_FD}>&- &
  follower_=$!
}

stop_follower() {  # stop_follower PID: TERM it and wait: it saves its state on the way out
  [[ -n $1 ]] || return 0
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

drop_md5_state() { rm -f -- "$STATE" "$DL/.$NAME.part.md5state.tmp-"*; }

# part_md5 MD5VAR HOWVAR SIZE: the MD5 of NAME.part (SIZE bytes) into MD5VAR, and how it was had into
# HOWVAR, for the log. The follower's state spares reading what it hashed; without a resumable MD5
# here (md5follow exits 3, and says why), or with DOWNLOAD_MD5_FOLLOW=0, md5sum reads the whole file.
# shellcheck disable=SC2034  # VAR_ is a nameref (local -n): the caller reads what is assigned
part_md5() {
  local -n md5_out_=$1 how_=$2
  local size=$3 out="" rc=0 left errs=$TMPD/$SPLIT.md5.err
  local -a lines=()
  how_=""
  if ((FOLLOW_MD5)); then
    out=$(py md5follow finish "$PART" "$STATE" 2>"$errs") || rc=$?
    mapfile -t lines <<<"$out"
    if ((rc == 0)) && [[ ${lines[0]:-} =~ ^[0-9a-f]{32}$ ]] && to_count left "${lines[1]:-}"; then
      md5_out_=${lines[0]}
      how_="followed while downloading; $(human "$left") left to hash at the end"
      ((left < size || size == 0)) || how_="a full read: no saved MD5 state covered any of it"
      return 0
    fi
    out=$(tail -n 1 "$errs" 2>/dev/null) || true
    log "$SPLIT: note: ${out#error: }; checking the MD5 with md5sum, a second read of $(human "$size")"
  fi
  md5_out_=$(md5_of "$PART") || { err "$SPLIT: cannot read $PART to check its MD5; rerun"; return 1; }
  how_="a full read with md5sum"
}

# --- one file --------------------------------------------------------------------------------------

preflight() {  # preflight NEED WHAT
  local need=$1 what=$2 free
  free=$(free_bytes "$DL")
  if [[ -n $free ]] && ((need > free)); then
    err "$SPLIT: not enough free space in $DL for $NAME: $(human "$need") needed ($what)," \
      "only $(human "$free") free. Free some space there, or use --root on a bigger disk."
    return 1
  fi
  return 0
}

# empty_part: NAME.part back to 0 bytes, to start over: a new, empty file (a new inode, which tells
# the MD5 follower that nothing it hashed still counts), never the old one cut in place.
empty_part() {
  rm -f -- "$PART" && : >"$PART" && return 0
  err "$SPLIT: cannot write $PART; check the permissions and free space of $DL"
  return 1
}

# start_over WHY: discard NAME.part and its pieces, and fetch NAME from byte 0 — only once the link
# is seen to serve the whole file again (restart_ok); else nothing is touched and it returns 1.
# WHY: what the server did, for the log. STARTED_OVER tells the final count that it happened.
start_over() {
  restart_ok || return 1
  log "$SPLIT: $1: discarding the $(human "$(fsize "$PART")") in $NAME.part and starting over," \
    "so no byte is duplicated"
  remove_segments
  empty_part || return 1
  STARTED_OVER=1
}

# download_single RANGES: NAME.part gets the whole file over one connection (RANGES: whether the
# server serves byte ranges: yes / no / "" unknown).
download_single() {
  local ranges=$1 have rc=0 restarts=0 best=0 got watcher answer delay
  have=$(fsize "$PART")
  if [[ $ranges == no ]] && ((have > 0)); then
    start_over "$HOST does not support resuming (no byte ranges)" || return 1
    have=0
  fi
  if [[ -n $END_TOTAL ]]; then
    preflight "$((END_TOTAL - have))" "$(human "$((END_TOTAL - have))") left to fetch" || return 1
  fi
  ((have > 0)) && log "$SPLIT: resuming $NAME at byte $have ($(human "$have") already here)"
  start_progress watcher single "$END_TOTAL" "$have"
  while :; do
    rc=0
    fetch_range "$PART" 0 "$END_TOTAL" single || rc=$?
    ((rc == 3)) || break
    # the server sent the whole file again to a resume: start over (each time it gets no further
    # than before counts as an attempt without progress; the policy's pause and limit apply)
    got=$(fsize "$PART")
    if ((got > best)); then best=$got restarts=0; else restarts=$((restarts + 1)); fi
    answer=$(DOWNLOAD_RETRIES=$RETRIES py transport decide 33 200 "$restarts" 2>/dev/null) || answer="give-up"
    if [[ $answer != retry\ * ]]; then
      err "$SPLIT: $HOST cannot resume (it ignores byte ranges), and the connection broke $RETRIES" \
        "times in a row no further than $(human "$best") into $NAME. Giving up: rerun later, or use a" \
        "link to a server that can resume (--retries N allows more attempts)."
      rc=1
      break
    fi
    delay=${answer#retry }
    [[ $delay =~ ^[0-9]{1,9}(\.[0-9]{1,6})?$ ]] || delay=$RETRY_DELAY_MAX
    start_over "$HOST ignored the byte range of a resume (it sent the whole file again)" \
      || { rc=1; break; }
    nap "$delay"
  done
  stop_progress "$watcher"
  return "$rc"
}

# A ranged download: NAME.part holds [0, S1) and piece files NAME.part.START-END hold the rest,
# fetched by CONNECTIONS workers that take the next piece from a queue. The pieces are created
# last-first, so an interrupted set-up still tiles [first START, TOTAL). While the workers run, each
# finished piece is appended to NAME.part in order and removed (peak disk: file + one piece).
list_segments() {
  local f b
  for f in "$PART".[0-9]*-[0-9]*; do
    [[ -e $f ]] || continue
    b=${f##*.part.}
    [[ $b =~ ^([0-9]{1,18})-([0-9]{1,18})$ ]] || continue
    printf '%s %s %s\n' "$((10#${BASH_REMATCH[1]}))" "$((10#${BASH_REMATCH[2]}))" "$f"
  done | sort -n -k1,1
}

remove_segments() { rm -f -- "$PART".[0-9]*-[0-9]*; }

# join_ready: append every finished piece that is next in line; 1 if an append failed.
join_ready() {
  local b e f
  while read -r b e f; do
    (($(fsize "$PART") == b && $(fsize "$f") == e - b)) || return 0
    if ! cat -- "$f" >>"$PART"; then
      err "$SPLIT: cannot append to $PART (disk full? $(human "$(free_bytes "$DL")") free); rerun to continue"
      return 1
    fi
    rm -f -- "$f"
  done < <(list_segments)
  return 0
}

# queue_worker QUEUE PARENT: take items ("START END MODE OUT" lines of file QUEUE) until none is
# left; the next item's number is in QUEUE.next, under QUEUE.lock.
queue_worker() {
  local queue=$1 parent=$2 k fd rc start end mode out
  local -a items
  mapfile -t items <"$queue"
  exec {fd}>>"$queue.lock"
  while kill -0 "$parent" 2>/dev/null; do
    flock "$fd"
    k=$(<"$queue.next")
    [[ $k =~ ^[0-9]{1,9}$ ]] || k=${#items[@]}  # (our own file; checked all the same)
    echo $((k + 1)) >"$queue.next"
    flock -u "$fd"
    ((k < ${#items[@]})) || return 0
    read -r start end mode out <<<"${items[k]}"
    rc=0
    fetch_range "$out" "$start" "$end" "$mode" || rc=$?
    ((rc == 0)) || return "$rc"
  done
  return 143  # the script is gone: stop
}

# plan_pieces N: cut what NAME.part lacks into piece files for N connections. Returns 2 when the
# file is too small to be worth cutting (then one connection fetches it).
plan_pieces() {
  local n=$1 have rem p i b e
  have=$(fsize "$PART")
  rem=$((END_TOTAL - have))
  p=$((n * PIECES_PER_CONNECTION))
  ((rem / p < MIN_SEGMENT)) && p=$((rem / MIN_SEGMENT))
  ((p > n)) && p=$((p / n * n))  # whole rounds: no connection idles at the end
  ((p >= 2)) || return 2
  : >>"$PART" || { err "$SPLIT: cannot write $PART; check the permissions of $DL"; return 1; }
  for ((i = p - 1; i >= 1; i--)); do
    b=$((have + rem * i / p))
    e=$((have + rem * (i + 1) / p))
    : >"$PART.$b-$e" || { err "$SPLIT: cannot create $PART.$b-$e; check $DL"; return 1; }
  done
  log "$SPLIT: fetching $NAME in $p pieces over $((p < n ? p : n)) connections"
}

# run_workers N QUEUE: N queue workers over QUEUE, joining pieces while they run. Returns 0 done,
# 1 failed (message printed), 3 the server ignored a byte range.
run_workers() {
  local n=$1 queue=$2 i p rc fail=0 ignored=0 alive me=$BASHPID items
  local -a pids=()
  echo 0 >"$queue.next"
  items=$(wc -l <"$queue")
  ((n > items)) && n=$items
  for ((i = 0; i < n; i++)); do
    queue_worker "$queue" "$me" &
    pids+=("$!")
  done
  while :; do  # join finished pieces while the others arrive
    join_ready || fail=1
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive && !fail)) || break
    nap 0.2
  done
  for p in "${pids[@]}"; do
    ((fail)) && kill "$p" 2>/dev/null
    rc=0
    wait "$p" || rc=$?
    ((rc == 3)) && ignored=1
    ((rc != 0 && rc != 3)) && fail=1
  done
  ((fail == 0)) || return 1
  ((ignored == 0)) || return 3
  join_ready || return 1
}

# queue_pieces QUEUE MAXVAR HAVEVAR: with the piece files checked (pieces_fit), cut back a NAME.part
# that an interrupted join left too long, and write the work into QUEUE (one
# "START END MODE OUT" line per item). MAXVAR: the longest piece; HAVEVAR: bytes already on disk.
# shellcheck disable=SC2034  # VAR_ is a nameref (local -n): the caller reads what is assigned
queue_pieces() {
  local queue=$1 b e f i got
  local -n longest_=$2 have_=$3
  local -a starts=() ends=() paths=()
  while read -r b e f; do
    starts+=("$b") ends+=("$e") paths+=("$f")
  done < <(list_segments)
  got=$(fsize "$PART")
  if ((got > starts[0])); then  # a join was interrupted: what is past the piece's start is in it
    if ((got > ends[0])) || (($(fsize "${paths[0]}") != ends[0] - starts[0])); then
      err "$SPLIT: $NAME.part holds $got bytes, past the start of its first piece (${starts[0]}), and" \
        "is not what an interrupted join leaves. $(kept_note). Remove $PART* and rerun to start over."
      return 1
    fi
    truncate -s "${starts[0]}" -- "$PART" || { err "$SPLIT: cannot cut $PART back to ${starts[0]} bytes; remove $PART* and rerun"; return 1; }
    got=${starts[0]}
  fi
  longest_=0
  : >"$queue"
  if ((got < starts[0])); then printf '%s %s head %s\n' 0 "${starts[0]}" "$PART" >>"$queue"; fi
  for ((i = 0; i < ${#starts[@]}; i++)); do
    got=$((got + $(fsize "${paths[i]}")))
    ((ends[i] - starts[i] > longest_)) && longest_=$((ends[i] - starts[i]))
    printf '%s %s piece %s\n' "${starts[i]}" "${ends[i]}" "${paths[i]}" >>"$queue"
  done
  have_=$got
}

# pieces_fit: the piece files tile [first start, END_TOTAL): each ends where the next starts. Piece
# files that do not, and are all empty (an earlier run planned them for another size and stopped at
# once, e.g. at the preflight), are removed; pieces with bytes in them are kept and it says so.
pieces_fit() {
  local b e f prev="" bytes=0
  while read -r b e f; do
    if [[ -n $prev ]] && ((b != prev)) || ((b >= e || e > END_TOTAL)); then prev=bad; break; fi
    prev=$e
  done < <(list_segments)
  [[ $prev == bad || ($prev != "" && $prev != "$END_TOTAL") ]] || return 0
  while read -r b e f; do bytes=$((bytes + $(fsize "$f"))); done < <(list_segments)
  if ((bytes == 0)); then
    log "$SPLIT: removing the empty piece files of an earlier run, planned for another size"
    remove_segments
    return 0
  fi
  err "$SPLIT: the piece files $NAME.part.[0-9]*-[0-9]* ($(human "$bytes")) do not fit a file of" \
    "$END_TOTAL bytes (did the file on the server change?). $NAME.part is not the problem: remove" \
    "only the pieces (rm $PART.[0-9]*-[0-9]*) and rerun."
  return 1
}

# download_segmented N: NAME.part gets the whole file over N connections (see list_segments).
download_segmented() {
  local n=$1 rc=0 maxlen have watcher queue=$TMPD/$SPLIT.queue
  pieces_fit || return 1
  if [[ -z $(list_segments) ]]; then
    have=$(fsize "$PART")  # room first: no piece file is made for a download that cannot fit
    preflight "$((END_TOTAL - have))" "$(human "$((END_TOTAL - have))") left to fetch" || return 1
    plan_pieces "$n" || rc=$?
    ((rc != 2)) || { download_single yes; return; }
    ((rc == 0)) || return 1
  else
    log "$SPLIT: resuming $NAME: the pieces of an earlier run, over $n connection(s)"
  fi
  queue_pieces "$queue" maxlen have || return 1
  preflight "$((END_TOTAL - have + maxlen))" "$(human "$((END_TOTAL - have))") left to fetch + $(human "$maxlen") to join a piece" || return 1
  ((have > 0)) && log "$SPLIT: $(human "$have") of $NAME already here"
  start_progress watcher segmented "$END_TOTAL" "$have"
  rc=0
  run_workers "$n" "$queue" || rc=$?
  stop_progress "$watcher"
  if ((rc == 3)); then
    start_over "$HOST ignored a byte-range request (it cannot serve ranges; the pieces go too)" \
      || return 1
    download_single no
    return
  fi
  ((rc == 0)) || return 1
  if [[ -n $(list_segments) ]]; then
    err "$SPLIT: internal: pieces of $NAME left after the download; rerun to continue"
    return 1
  fi
  return 0
}

# finish_file T_LAST: NAME.part is there, is not empty nor a web page, has the size and MD5: rename
# it to NAME, write NAME.md5. Every step is checked: nothing is left half-done under a name a rerun
# trusts. T_LAST: when the last byte arrived in this run ("" if none came).
finish_file() {
  local t_last=$1 size actual how t0
  size=$(fsize "$PART")
  if [[ ! -f $PART ]] || ((size == 0)); then
    rm -f -- "$PART"
    drop_md5_state
    err "$SPLIT: $HOST sent no bytes for $NAME (an empty file is not the archive): the link may be" \
      "wrong or expired. Check DOWNLOAD_URL_$SUF in $URL_FROM and rerun."
    return 1
  fi
  if looks_like_html "$PART"; then
    drop_md5_state
    web_page_error "$PART"
    return 1
  fi
  if [[ -n $END_TOTAL ]] && ((size != END_TOTAL)); then
    if ((size > END_TOTAL)); then
      mv -f -- "$PART" "$FINAL.bad" || rm -f -- "$PART"
      drop_md5_state
      err "$SPLIT: $NAME came out $size bytes, expected $END_TOTAL: moved to $FINAL.bad. The server" \
        "sent more than the file's length; rerun to download it again, or check DOWNLOAD_URL_$SUF."
    else
      err "$SPLIT: $NAME is incomplete: $size of $END_TOTAL bytes. Rerun to continue."
    fi
    return 1
  fi
  if ((VERIFY)) && [[ -n $EXP_MD5 ]]; then
    t0=${t_last:-$(now)}
    [[ -n $t_last ]] || log "$SPLIT: checking the MD5 of $NAME ($(human "$size"))"
    part_md5 actual how "$size" || return 1
    if [[ $actual != "$EXP_MD5" ]]; then
      md5_mismatch "$actual"
      return 1
    fi
    if [[ -n $t_last ]]; then
      log "$SPLIT: MD5 verified $(seconds_between "$t0" "$(now)") s after the last byte ($how)"
    else
      log "$SPLIT: MD5 verified in $(seconds_between "$t0" "$(now)") s ($how)"
    fi
  fi
  t0=$(now)
  sync -- "$PART" 2>/dev/null || true
  if ! mv -f -- "$PART" "$FINAL"; then
    err "$SPLIT: cannot rename $PART to $FINAL; check the permissions of $DL and rerun"
    return 1
  fi
  drop_md5_state
  remove_segments
  if ((VERIFY)) && [[ -n $EXP_MD5 ]]; then
    write_md5_marker
    log "$SPLIT: done: $FINAL ($(human "$size"), MD5 $EXP_MD5 verified; fsync and rename" \
      "$(seconds_between "$t0" "$(now)") s)"
  else
    log "$SPLIT: done: $FINAL ($(human "$size"), MD5 not checked: --no-verify)"
  fi
}

md5_mismatch() {  # md5_mismatch ACTUAL: NAME.part is full size with another MD5: set it aside as NAME.bad
  drop_md5_state
  if ! mv -f -- "$PART" "$FINAL.bad"; then
    err "$SPLIT: checksum mismatch for $NAME, and it cannot be moved to $FINAL.bad: remove $PART and rerun"
    return 0
  fi
  err "$SPLIT: checksum mismatch for $NAME: expected MD5 $EXP_MD5 ($MD5_FROM), got $1." \
    "The file was moved to $FINAL.bad and nothing was written under its final name. Rerun to" \
    "download it again (delete $NAME.bad when you no longer need it); if this link is a" \
    "mirror you trust, set MD5_$SUF=$1 in $URLS_FROM."
}

write_md5_marker() {  # NAME.md5: the check is done (a failure only costs a new check next time)
  if ! { printf '%s  %s\n' "$EXP_MD5" "$NAME" >"$FINAL.md5.tmp" && mv -f -- "$FINAL.md5.tmp" "$FINAL.md5"; }; then
    rm -f -- "$FINAL.md5.tmp"
    log "$SPLIT: warning: cannot write $FINAL.md5; a rerun checks the MD5 again"
  fi
  return 0
}

# A file already under its final name: check it (once; NAME.md5 remembers) and leave it alone.
check_final() {
  local size actual marker=$FINAL.md5 line
  size=$(fsize "$FINAL")
  if [[ -n $EXP_SIZE ]] && ((size != EXP_SIZE)); then
    err "$SPLIT: $FINAL exists but is $size bytes, not $EXP_SIZE. It was not written by this" \
      "script; move it away (mv $FINAL $FINAL.bad) and rerun to download it again."
    return 1
  fi
  if ((!VERIFY)) || [[ -z $EXP_MD5 ]]; then
    remove_segments  # pieces and MD5 state of an older run are of no use beside a finished file
    drop_md5_state
    log "$SPLIT: already done: $FINAL is present ($(human "$size"), MD5 not checked: --no-verify)"
    return 0
  fi
  if [[ -f $marker && ! $FINAL -nt $marker ]]; then
    read -r line _ <"$marker" || true
    if [[ $line == "$EXP_MD5" ]]; then
      remove_segments
      drop_md5_state
      log "$SPLIT: already done: $FINAL ($(human "$size"), MD5 verified earlier, see $NAME.md5)"
      return 0
    fi
  fi
  log "$SPLIT: checking the MD5 of the existing $NAME ($(human "$size"))"
  actual=$(md5_of "$FINAL") || { err "$SPLIT: cannot read $FINAL to check its MD5"; return 1; }
  if [[ $actual != "$EXP_MD5" ]]; then
    err "$SPLIT: $FINAL exists but its MD5 is $actual, expected $EXP_MD5 ($MD5_FROM). It was left" \
      "as it is; move it away (mv $FINAL $FINAL.bad) and rerun to download it again."
    return 1
  fi
  write_md5_marker
  remove_segments
  drop_md5_state
  log "$SPLIT: already done: $FINAL ($(human "$size"), MD5 verified)"
}

# extracted_by_01 ROOT SPLIT NAME: 01_unzip.sh extracted and verified the archive NAME into
# ROOT/SPLIT (its marker ROOT/.01_unzip/SPLIT.done names NAME as "archive", and the folder is there).
extracted_by_01() {
  local marker=$1/.01_unzip/$2.done line
  local re='^[[:space:]]*"archive"[[:space:]]*:[[:space:]]*"([^"\\]*)"[[:space:]]*,?[[:space:]]*$'
  [[ -f $marker && -d $1/$2 ]] || return 1
  while IFS= read -r line; do
    [[ $line =~ $re && ${BASH_REMATCH[1]} == "$3" ]] && return 0
  done <"$marker"
  return 1
}

# download_split SPLIT URL NAME HOST MD5 MD5_FROM SIZE SIZE_FROM URLS_FROM URL_FROM: everything about
# one split (the fields of imagenet_prep.urls); runs in its own process (see run_split), which makes
# these values readonly globals: they are the split's, for every function below.
download_split() {
  local size=""
  [[ -z $7 ]] || to_count size "$7" || die "internal: imagenet_prep/urls.py gave a size that is not a number"
  readonly SPLIT=$1 URL=$2 NAME=$3 HOST=$4 EXP_MD5=$5 MD5_FROM=$6 EXP_SIZE=$size SIZE_FROM=$8
  readonly URLS_FROM=$9 URL_FROM=${10} SUF=${SUFFIX[$1]}
  readonly SHOW="$NAME from $HOST" FINAL=$DL/$NAME PART=$DL/$NAME.part
  readonly STATE=$PART.md5state
  STARTED_OVER=0  # set by start_over: NAME.part was discarded in this run
  local me=$BASHPID rc=0 watchdog fd  # (the arguments of a command run with & expand in the child)
  watch_main "$$" "$me" "$FINAL.lock" &
  watchdog=$!
  if take_lock fd; then
    readonly LOCK_FD=$fd
    fetch_split || rc=$?
    rm -f -- "$FINAL.lock"  # still held; every holder checks it locked the file that is there
  else
    err "$SPLIT: another $PROG is already downloading $NAME into $DL (lock $FINAL.lock held)." \
      "Wait for it to finish, or stop it first."
    rc=1
  fi
  kill "$watchdog" 2>/dev/null || true
  return "$rc"
}

# take_lock FDVAR: flock NAME.lock, its descriptor into FDVAR; make sure it is the file under that
# name (another process may have removed it in between), so that removing it when done is safe.
# shellcheck disable=SC2034  # VAR_ is a nameref (local -n): the caller reads what is assigned
take_lock() {
  local -n lockfd_=$1
  local i ino rc lfd
  for i in 1 2 3 4 5; do
    exec {lfd}>>"$FINAL.lock"
    lockfd_=$lfd
    rc=0
    flock -w "$LOCK_WAIT" -E 75 "$lfd" 2>/dev/null || rc=$?
    ((rc != 75)) || return 1
    if ((rc != 0)); then  # e.g. a network filesystem mounted without lock support
      log "$SPLIT: warning: cannot lock $FINAL.lock on this filesystem; make sure no other" \
        "$PROG works on $NAME at the same time"
      return 0
    fi
    ino=$(stat -L -c %i "/proc/$BASHPID/fd/$lfd" 2>/dev/null || echo "?")
    [[ $(stat -c %i -- "$FINAL.lock" 2>/dev/null) == "$ino" ]] && return 0
    exec {lfd}>&-
  done
  return 1
}

fetch_split() {
  local part_size t_last=""
  if [[ -e $FINAL ]]; then
    check_final
    return
  fi
  if extracted_by_01 "$ROOT" "$SPLIT" "$NAME"; then
    log "$SPLIT: already done (extracted into $ROOT/$SPLIT by 01_unzip.sh; the archive is not kept)"
    if [[ -e $PART ]]; then
      log "$SPLIT: $PART ($(human "$(fsize "$PART")")) is not needed: delete it (and $NAME.part.*) to free the space"
    fi
    return 0
  fi
  log "$SPLIT: $SHOW -> $FINAL"
  part_size=$(fsize "$PART")
  if [[ -n $EXP_SIZE ]] && ((part_size == EXP_SIZE)) && [[ -z $(list_segments) ]]; then
    log "$SPLIT: $NAME.part is complete already ($(human "$part_size")); no need to ask the server"
    readonly END_TOTAL=$EXP_SIZE
  else
    fetch_missing t_last || return 1
  fi
  finish_file "$t_last"
}

# fetch_missing TLASTVAR: ask for the size, then fetch what NAME.part (and its pieces) lack, with the
# MD5 followed meanwhile; TLASTVAR: when the last byte came. NAME.part is never cut back to a size:
# one longer than the expected size, or than the size the server now reports, stops the run.
# shellcheck disable=SC2034  # VAR_ is a nameref (local -n): the caller reads what is assigned
fetch_missing() {
  local -n t_last_=$1
  local before total ranges follower rc=0 t0 have
  have=$(fsize "$PART")
  if [[ -n $EXP_SIZE ]] && ((have > EXP_SIZE)); then
    range_too_long "$PART" "$EXP_SIZE" single
    return 1
  fi
  probe total ranges || return 1
  if [[ -n $EXP_SIZE && -n $total ]] && ((total != EXP_SIZE)); then
    err "$SPLIT: $HOST reports $total bytes for $NAME, but it should be $EXP_SIZE bytes" \
      "($SIZE_FROM): the link may point to another file, or the server misreports the length." \
      "Check DOWNLOAD_URL_$SUF in $URL_FROM."
    return 1
  fi
  end_total "$total" || return 1
  if [[ -n $END_TOTAL ]] && ((have > END_TOTAL)); then
    err "$SPLIT: $HOST now reports $END_TOTAL bytes for $NAME, a smaller size than the $have bytes" \
      "already downloaded into $NAME.part: the file on the server changed, the link leads to another" \
      "file, or the server misreports the length. Nothing was fetched; $NAME.part is kept as it is." \
      "Check DOWNLOAD_URL_$SUF in $URL_FROM (a fresh link?) and rerun; only if the server is right," \
      "move $PART away and rerun to download $NAME again."
    return 1
  fi
  before=$(bytes_here)
  t0=$(now)
  start_follower follower
  fetch_body "$ranges" || rc=$?
  t_last_=$(now)
  stop_follower "$follower"
  [[ -e $PART ]] || drop_md5_state  # (set aside as NAME.html: the state describes no file now)
  ((rc == 0)) || return 1
  log "$SPLIT: $(fetched_text "$before") in $(seconds_between "$t0" "$t_last_") s"
}

# bytes_here: the bytes of NAME on disk: NAME.part up to where its pieces start, and the pieces.
bytes_here() {
  local b e f n=0 part
  part=$(fsize "$PART")
  while read -r b e f; do
    ((part <= b)) || part=$b
    n=$((n + $(fsize "$f")))
  done < <(list_segments)
  printf '%s' "$((part + n))"
}

# fetched_text BEFORE: "fetched N bytes", N what this run added to the BEFORE bytes there were (all
# of NAME.part when it started over; never a negative count).
fetched_text() {
  local after n
  after=$(fsize "$PART")
  if ((STARTED_OVER)); then
    printf 'fetched %s bytes (%s was started over from byte 0)' "$after" "$NAME"
    return
  fi
  n=$((after - $1))
  ((n >= 0)) || n=0
  printf 'fetched %s bytes' "$n"
}

# end_total TOTAL: the file's expected length, END_TOTAL (readonly; "" if unknown): the expected
# size, else what the server reports (TOTAL), else the end of the last piece of an earlier run.
end_total() {
  local end=${EXP_SIZE:-$1} last
  if [[ -z $end ]]; then
    last=$(list_segments | tail -n 1)
    [[ -n $last ]] && end=$(awk '{ print $2 }' <<<"$last")
  fi
  if [[ -n $end ]] && ((end > MAX_FILE_SIZE)); then  # (digits only, at most MAX_DIGITS: checked)
    err "$SPLIT: the size of $NAME would be $end bytes, more than 1 PiB: no archive of the release is" \
      "near that; $HOST misreports it, or SIZE_$SUF in $URLS_FROM is wrong. Nothing was fetched."
    return 1
  fi
  readonly END_TOTAL=$end
}

# fetch_body RANGES: NAME.part gets the whole file, over several connections if asked (http) or if
# pieces of an earlier run are there (any link that can serve byte ranges: they are used, not left
# behind). RANGES: what probe learnt (yes / no / "" unknown).
fetch_body() {
  local ranges=$1 n=$CONNECTIONS total
  [[ $URL == http://* || $URL == https://* ]] || n=1
  if [[ -n $END_TOTAL ]] && { ((n > 1)) || [[ -n $(list_segments) ]]; }; then
    if [[ $ranges == "" ]]; then probe total ranges 1 || return 1; fi
    if [[ $ranges != no ]]; then
      download_segmented "$n"
      return
    fi
    log "$SPLIT: $HOST does not serve byte ranges: one connection, no resume"
    if [[ -n $(list_segments) ]] || (($(fsize "$PART") > 0)); then
      start_over "$HOST cannot resume" || return 1
    fi
  elif ((CONNECTIONS > 1)); then
    log "$SPLIT: one connection for $SHOW (several need an http(s) link with a known size)"
  fi
  if [[ -n $(list_segments) ]]; then  # size unknown: the pieces cannot be placed
    log "$SPLIT: discarding the pieces of an earlier run ($HOST does not tell the size of $NAME)"
    remove_segments
  fi
  download_single "$ranges"
}

# run_split FIELD...: download one split (the LINK_FIELDS fields of imagenet_prep.urls) in a process
# group of its own (see "processes" above) and wait for it; whatever way it ends, nothing of it is
# left running and its lock is not left held.
run_split() {
  local rc pid lock=$DL/$3.lock
  set -m
  # TTOU/TTIN ignored: the split's group is in the background of a terminal, and with `stty tostop`
  # its first log line would stop the whole group (and the run would wait for it forever)
  ( trap '' TTOU TTIN; set -e; download_split "$@" ) &
  pid=$!
  set +m
  set_traps "$pid" "$lock"
  while :; do
    rc=0
    wait "$pid" || rc=$?
    ((rc > 128)) && alive "$pid" && continue  # a trap (Ctrl-Z, fg) interrupted the wait
    break
  done
  stop_group "$pid"
  drop_lock "$lock"
  set_traps
  return "$rc"
}

# --- main ------------------------------------------------------------------------------------------

# no_links ARG...: a link on the command line (pasted as a SPLIT, or as the value of an option) is
# refused before anything prints the command line: it may carry a token, and links live in urls.sh.
no_links() {
  local a re='[?&][A-Za-z0-9_.~-]*='
  for a in "$@"; do
    if [[ $a == *://* || $a =~ $re ]]; then
      usage_error "an argument (or \$IMAGENET_ROOT, \$IMAGENET_URLS) looks like a link (not shown: it" \
        "may carry a token). Links are not given on the command line: put each into urls.sh as" \
        "DOWNLOAD_URL_<split>=\"...\" (cp urls.sh.example urls.sh && chmod 600 urls.sh), then run" \
        "$PROG SPLIT..."
    fi
  done
}

shown() {  # shown ARG: ARG for a message if it is a plain word, else a note that it is not shown
  if [[ $1 =~ ^[A-Za-z0-9_.,+-]{1,40}$ ]]; then printf '%s' "$1"; else printf '(not shown)'; fi
}

# parse_args ARG...: the options, readonly once parsed: ROOT, URLS_ARG, CONNECTIONS, RETRIES_ARG
# ("" unless --retries), VERIFY, and WANT (the splits, each once, in the order given).
parse_args() {
  local root=${IMAGENET_ROOT:-.} urls="" connections=1 retries="" verify=1 s
  local -a want=()
  local -A seen=()
  no_links "$@" "${IMAGENET_ROOT:-}" "${IMAGENET_URLS:-}"
  while (($#)); do
    case $1 in
      -h|--help) usage; exit 0 ;;
      --root) (($# >= 2)) || usage_error "--root needs a folder"; root=$2; shift ;;
      --root=*) root=${1#*=} ;;
      --urls) (($# >= 2)) || usage_error "--urls needs a file"; urls=$2; shift ;;
      --urls=*) urls=${1#*=} ;;
      --connections) (($# >= 2)) || usage_error "--connections needs a number"; connections=$2; shift ;;
      --connections=*) connections=${1#*=} ;;
      --retries) (($# >= 2)) || usage_error "--retries needs a number"; retries=$2; shift ;;
      --retries=*) retries=${1#*=} ;;
      --no-verify) verify=0 ;;
      -*) usage_error "unknown option: $(shown "${1%%=*}")" ;;
      all) want+=("${SPLITS[@]}") ;;
      *) [[ -n ${SUFFIX[$1]:-} ]] || usage_error "unknown split: $(shown "$1") (use: ${SPLITS[*]} all)"
        want+=("$1") ;;
    esac
    shift
  done
  ((${#want[@]})) || usage_error "no SPLIT given"
  if ! [[ $connections =~ ^[1-9][0-9]?$ ]] || ((connections > 32)); then
    usage_error "--connections must be a whole number from 1 to 32, not '$(shown "$connections")'"
  fi
  [[ -z $retries || $retries =~ ^[1-9][0-9]{0,8}$ ]] || usage_error "--retries must be a whole number >= 1, not '$(shown "$retries")'"
  declare -ga WANT=()
  for s in "${want[@]}"; do
    [[ -n ${seen[$s]:-} ]] || WANT+=("$s")
    seen[$s]=1
  done
  readonly WANT
  declare -gr ROOT=$root URLS_ARG=$urls CONNECTIONS=$connections RETRIES_ARG=$retries VERIFY=$verify
}

main() {
  local t_start=$SECONDS i
  local -a links=() failed=()
  check_package
  read_release
  parse_args "$@"
  log "$0 $*"
  need_cmd curl
  need_cmd md5sum
  need_cmd flock
  need_cmd awk
  check_knobs
  read_policy
  read_links links  # every split, before fetching anything
  declare -gr DL=$ROOT/downloads
  mkdir -p -- "$DL" || die "cannot create $DL; check --root"
  [[ -w $DL ]] || die "cannot write to $DL; check --root and permissions"
  TMPD=$(mktemp -d "${TMPDIR:-/tmp}/00_download.XXXXXX") || die "cannot create a temporary folder"
  readonly TMPD
  trap 'rm -rf -- "$TMPD"' EXIT
  set_traps
  for ((i = 0; i < ${#WANT[@]}; i++)); do
    run_split "${links[@]:i * LINK_FIELDS:LINK_FIELDS}" || failed+=("${WANT[i]}")
  done
  local took=$((SECONDS - t_start))
  if ((${#failed[@]})); then
    log "failed: ${failed[*]} (messages above); took ${took}s. Rerun the same command to retry; finished files are kept."
    exit 1
  fi
  log "all done: ${WANT[*]} in $DL; took ${took}s"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
