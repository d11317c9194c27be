#!/usr/bin/env bash
# 00_download.sh — download the ILSVRC2012 archives from your own image-net.org links into
# ROOT/downloads/: resumable, verified, optionally over several connections.
#
# Usage:   00_download.sh [options] SPLIT...        SPLIT: train val test devkit all
# Example: cp urls.sh.example urls.sh && chmod 600 urls.sh   # then paste your links into urls.sh
#          00_download.sh --root /data/imagenet --connections 4 val devkit
#
# Bytes arrive in ROOT/downloads/NAME.part; with --connections N also in piece files
# NAME.part.START-END, appended to NAME.part in order as they complete. Kill it at any moment: a
# rerun continues every piece from the bytes already on disk. Retries (with backoff)
# happen in a loop around curl, so no received byte is ever thrown away. The file is renamed to NAME
# only after its size and MD5 check out; then NAME.md5 records the check and a rerun says
# "already done" without touching the network. Full URLs are never printed (they may carry a token).
set -euo pipefail

readonly PROG=00_download.sh
readonly SPLITS=(train val test devkit)
# split -> suffix of its variables in urls.sh (DOWNLOAD_URL_<suffix>, MD5_<suffix>, SIZE_<suffix>)
declare -rA SUFFIX=([train]=train [val]=val [test]=test [devkit]=devkit_t12)
# MD5 and size of the official archives, by file name
declare -rA KNOWN_MD5=(
  [ILSVRC2012_img_train.tar]=1d675b47d978889d74fa0da5fadfb00e
  [ILSVRC2012_img_val.tar]=29b22e2961454d5413ddabcf34fc5622
  [ILSVRC2012_img_test_v10102019.tar]=e1b8681fff3d63731c599df9b4b6fc02
  [ILSVRC2012_img_test.tar]=fe64ceb247e473635708aed23ab6d839
  [ILSVRC2012_devkit_t12.tar.gz]=fa75699e90414af021442c21a62c3abf
)
declare -rA KNOWN_SIZE=(
  [ILSVRC2012_img_train.tar]=147897477120
  [ILSVRC2012_img_val.tar]=6744924160
)
# Tuning knobs, from the environment (see --help)
readonly SPEED_LIMIT=${DOWNLOAD_SPEED_LIMIT:-1024}       # B/s; slower than this for ...
readonly SPEED_TIME=${DOWNLOAD_SPEED_TIME:-60}           # ... this many seconds is a stall: retry
readonly CONNECT_TIMEOUT=${DOWNLOAD_CONNECT_TIMEOUT:-30} # seconds to connect
readonly RETRY_DELAY=${DOWNLOAD_RETRY_DELAY:-5}          # first pause between attempts (seconds)
readonly RETRY_DELAY_MAX=${DOWNLOAD_RETRY_DELAY_MAX:-300} # pauses double up to this
readonly PROGRESS_STEP=${DOWNLOAD_PROGRESS_STEP:-5}      # % between progress lines in a log
readonly PROGRESS_POLL=${DOWNLOAD_PROGRESS_POLL:-2}      # seconds between progress checks
readonly MIN_SEGMENT=${DOWNLOAD_MIN_SEGMENT:-16777216}   # never split into pieces smaller than this
readonly PIECES_PER_CONNECTION=8                         # pieces per connection: joins overlap the download

root=${IMAGENET_ROOT:-.}  # --root DIR: data folder (default: $IMAGENET_ROOT, else the current dir)
urls_file=""              # --urls FILE: links (default: $IMAGENET_URLS, ./urls.sh, urls.sh beside me)
connections=1             # --connections N: byte ranges of one file fetched at once
retries=${DOWNLOAD_RETRIES:-10}  # --retries N: attempts in a row without progress before giving up
verify=1                  # --no-verify: skip the MD5 check (the size is always checked)

log() { printf '%s %s %s\n' "$PROG" "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '%s %s error: %s\n' "$PROG" "$(date +%H:%M:%S)" "$*" >&2; exit 1; }
err() { printf '%s %s error: %s\n' "$PROG" "$(date +%H:%M:%S)" "$*" >&2; }
need_cmd() { command -v "$1" >/dev/null 2>&1 || die "need '$1' (not found in PATH)"; }

usage() {
  cat <<EOF
Usage: $PROG [options] SPLIT...
Download ILSVRC2012 archives into ROOT/downloads/. SPLIT is one of: train val test devkit all

  train   DOWNLOAD_URL_train        ILSVRC2012_img_train.tar  (147,897,477,120 B)
  val     DOWNLOAD_URL_val          ILSVRC2012_img_val.tar    (6,744,924,160 B)
  test    DOWNLOAD_URL_test         ILSVRC2012_img_test_v10102019.tar
  devkit  DOWNLOAD_URL_devkit_t12   ILSVRC2012_devkit_t12.tar.gz

The links come from --urls FILE, else \$IMAGENET_URLS, else ./urls.sh, else urls.sh beside this
script (start from urls.sh.example); a variable already set in the environment wins over the file.
The file name is the last part of the link's path. MD5_<split> / SIZE_<split> in urls.sh (e.g.
MD5_val, MD5_devkit_t12) override the built-in checksums of the official archives, for mirrors.

Options:
  --root DIR         data folder (default: \$IMAGENET_ROOT, else the current directory)
  --urls FILE        file with the DOWNLOAD_URL_* links (default: see above)
  --connections N    fetch N byte ranges of a file at once (default: 1), in pieces of at
                     least 16 MiB (8 per connection) that are appended to NAME.part as they
                     complete; needs free space for the file plus one piece
  --retries N        attempts in a row without progress before giving up (default: 10)
  --no-verify        do not check MD5 (default: check); needed for a file with no known checksum
  -h, --help         show this help

Environment: DOWNLOAD_SPEED_LIMIT (1024 B/s) and DOWNLOAD_SPEED_TIME (60 s): slower than that for
that long counts as a stall and is retried; DOWNLOAD_CONNECT_TIMEOUT (30 s); DOWNLOAD_RETRY_DELAY
(5 s, doubled per failed attempt up to DOWNLOAD_RETRY_DELAY_MAX, 300 s); DOWNLOAD_PROGRESS_STEP
(5 %: one progress line per step when stderr is not a terminal).

A rerun continues NAME.part where it stopped and says "already done" for a verified file without
touching the network (NAME.md5 records the check; delete it to check again). A file that is full
size but fails its checksum is moved to NAME.bad and the split fails; a rerun downloads it again.
NAME.lock keeps a second $PROG off the same file. Exit codes: 0 all requested splits
present and verified, 1 failure, 2 usage.
EOF
}

usage_error() {
  printf '%s: %s\n\n' "$PROG" "$1" >&2
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

free_bytes() { df -P -B1 -- "$1" | awk 'NR == 2 { print $4 }'; }

url_name() {  # last part of the path, without query string or fragment
  local p=${1%%[?#]*}
  p=${p%/}
  printf '%s' "${p##*/}"
}

url_host() {  # host[:port], without user:password@; "local file" for file://
  local rest=${1#*://}
  rest=${rest%%[/?#]*}
  rest=${rest##*@}
  printf '%s' "${rest:-local file}"
}

now() { printf '%s' "${EPOCHREALTIME:-$(date +%s.%N)}"; }

md5_of() { local h; h=$(md5sum -- "$1"); printf '%s' "${h%% *}"; }

# --- loading the links -----------------------------------------------------------------------------

# Read DOWNLOAD_URL_*, MD5_*, SIZE_* from the urls file in a subshell (so the file cannot change
# this script's own variables); values already in the environment win.
load_urls() {
  local -a names=()
  local s v file="" here
  for s in "${SPLITS[@]}"; do
    names+=("DOWNLOAD_URL_${SUFFIX[$s]}" "MD5_${SUFFIX[$s]}" "SIZE_${SUFFIX[$s]}")
  done
  here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
  if [[ -n $urls_file ]]; then
    [[ -f $urls_file ]] || die "--urls $urls_file: no such file; copy urls.sh.example to it and fill in your links"
    file=$urls_file
  elif [[ -n ${IMAGENET_URLS:-} ]]; then
    [[ -f $IMAGENET_URLS ]] || die "IMAGENET_URLS=$IMAGENET_URLS: no such file; copy urls.sh.example to it and fill in your links"
    file=$IMAGENET_URLS
  elif [[ -f ./urls.sh ]]; then
    file=./urls.sh
  elif [[ -f $here/urls.sh ]]; then
    file=$here/urls.sh
  fi
  URLS_FROM=${file:-the environment}
  if [[ -z $file ]]; then
    local missing=0
    for s in "${WANT[@]}"; do
      v="DOWNLOAD_URL_${SUFFIX[$s]}"
      [[ -n ${!v:-} ]] || missing=1
    done
    if ((missing)); then
      die "no urls.sh found (looked for ./urls.sh and $here/urls.sh). Copy the example and paste" \
        "your image-net.org links into it: cp $here/urls.sh.example urls.sh && chmod 600 urls.sh" \
        "(or point --urls / IMAGENET_URLS at your file)"
    fi
    return 0
  fi
  local -A env_val=()
  for v in "${names[@]}"; do
    [[ -n ${!v:-} ]] && env_val[$v]=${!v}
  done
  local dump
  dump=$(
    set +eu
    # shellcheck source=/dev/null
    source "$file" >&2 || exit 1
    for v in "${names[@]}"; do printf '%s=%s\n' "$v" "${!v}"; done
  ) || die "could not read $file (a shell error above?); it should only set variables, see urls.sh.example"
  local line
  while IFS= read -r line; do
    v=${line%%=*}
    [[ -n ${env_val[$v]:-} ]] && continue
    printf -v "$v" '%s' "${line#*=}"
  done <<<"$dump"
}

# --- curl ------------------------------------------------------------------------------------------

# run_curl ARG...: curl on $URL with ARG... The URL goes in on stdin (-K -), never on the command
# line where `ps` would show it. Sets CURL_RC, CURL_CODE (HTTP status, 000 for none) and CURL_MSG
# (curl's error line with the URL replaced by host and file name).
run_curl() {
  local out=$TMPD/curl.$BASHPID.out errf=$TMPD/curl.$BASHPID.err url=${URL//\\/\\\\}
  url=${url//\"/\\\"}
  local -a io=(-sS)
  CURL_RC=0
  : >"$errf"
  if [[ ${BAR:-0} == 1 ]]; then
    printf 'url = "%s"\n' "$url" | curl --progress-bar -w '%{http_code}' "$@" -K - >"$out" &
  else
    printf 'url = "%s"\n' "$url" | curl "${io[@]}" -w '%{http_code}' "$@" -K - >"$out" 2>"$errf" &
  fi
  CURL_PID=$!
  wait "$CURL_PID" || CURL_RC=$?
  CURL_PID=""
  CURL_CODE=$(<"$out")
  CURL_CODE=${CURL_CODE:-000}
  CURL_MSG=$(grep -v '^$' "$errf" | tail -n 1 || true)
  CURL_MSG=${CURL_MSG//"$URL"/"$SHOW"}
}

http_hint() {
  case $1 in
    401|403) echo "the link may have expired or needs a login: get a fresh one from image-net.org and put it in DOWNLOAD_URL_$SUF ($URLS_FROM)" ;;
    404|410) echo "the link may have expired or is wrong: get a fresh one from image-net.org and put it in DOWNLOAD_URL_$SUF ($URLS_FROM)" ;;
    *) echo "check DOWNLOAD_URL_$SUF in $URLS_FROM" ;;
  esac
}

# After a failed curl: 0 = worth another attempt, 1 = permanent (message printed).
classify_failure() {
  local what=$1
  case $CURL_RC in
    22)
      case $CURL_CODE in
        408|425|429|5??) return 0 ;;
        *) err "$SPLIT: HTTP $CURL_CODE from $HOST for $NAME: $(http_hint "$CURL_CODE")"; return 1 ;;
      esac ;;
    23)
      err "$SPLIT: cannot write to $DL while $what (disk full? $(human "$(free_bytes "$DL")") free there)." \
        "Free some space and rerun: the download continues where it stopped. ($CURL_MSG)"
      return 1 ;;
    1|3)
      err "$SPLIT: curl cannot use the link in DOWNLOAD_URL_$SUF ($CURL_MSG); check $URLS_FROM"
      return 1 ;;
    37)
      err "$SPLIT: cannot read the local file of DOWNLOAD_URL_$SUF ($SHOW): $CURL_MSG"
      return 1 ;;
    51|58|59|60|77|83|90|91)
      err "$SPLIT: TLS/certificate problem with $SHOW ($CURL_MSG)"
      return 1 ;;
    *) return 0 ;;
  esac
}

# backoff FAILS [AT]: say why, pause before the next attempt; returns 1 when FAILS reached the limit.
backoff() {
  local fails=$1 at=${2:-} delay why
  ((fails < retries)) || return 1
  delay=$(awk -v d="$RETRY_DELAY" -v n="$fails" -v m="$RETRY_DELAY_MAX" \
    'BEGIN { x = d * 2 ^ (n > 0 ? n - 1 : 0); if (x > m) x = m; print x }')
  why=${CURL_MSG:-curl exit code $CURL_RC}
  [[ $CURL_RC == 0 ]] && why="the connection ended early"
  local count=""
  ((fails > 0)) && count=" ($fails of $retries attempts in a row without progress)"
  log "$SPLIT: $why; retrying in ${delay}s${at:+ from byte $at}$count"
  sleep "$delay" {LOCKFD}>&- &
  wait "$!" || true
}

give_up() {
  local what=$1 hint
  case $CURL_RC in
    6) hint="cannot resolve the host name: check the link and your network" ;;
    7) hint="cannot connect: the host is unreachable or refuses connections" ;;
    28) hint="timed out or stalled (slower than $SPEED_LIMIT B/s for ${SPEED_TIME}s)" ;;
    22) hint="the server keeps answering HTTP $CURL_CODE" ;;
    *) hint="curl exit code $CURL_RC" ;;
  esac
  err "$SPLIT: giving up on $SHOW after $retries attempts in a row without progress while $what:" \
    "$hint ($CURL_MSG). Rerun later (it continues where it stopped) or check DOWNLOAD_URL_$SUF."
}

# probe: learn the total size and whether byte ranges work, without fetching the body.
# Sets TOTAL ("" unknown) and RANGES (yes / no / "" unknown). Returns 1 on a permanent failure.
probe() {
  local hdr=$TMPD/headers.$BASHPID fails=0 ranged_get=${1:-0}
  TOTAL="" RANGES=""
  while :; do
    : >"$hdr"
    if ((!ranged_get)); then
      run_curl "${CURL_BASE[@]}" -I -D "$hdr" -o /dev/null --max-time 300
      if ((CURL_RC == 0)); then
        TOTAL=$(header_value "$hdr" Content-Length)
        case $(header_value "$hdr" Accept-Ranges) in
          bytes) RANGES=yes ;;
          none) RANGES=no ;;
        esac
        return 0
      fi
      # some signed links allow only GET: fall through to a one-byte ranged GET
      if [[ $CURL_RC == 22 && $CURL_CODE == 4?? && $CURL_CODE != 408 && $CURL_CODE != 429 ]]; then
        ranged_get=1
        continue
      fi
    else
      run_curl "${CURL_BASE[@]}" -r 0-0 -D "$hdr" -o /dev/null --max-filesize 1 --max-time 300
      if [[ $CURL_RC == 0 && $CURL_CODE == 206 ]]; then
        local cr
        cr=$(header_value "$hdr" Content-Range)
        TOTAL=${cr##*/}
        [[ $TOTAL =~ ^[0-9]+$ ]] || TOTAL=""
        RANGES=yes
        return 0
      elif [[ $CURL_RC == 63 || ($CURL_RC == 0 && $CURL_CODE == 200) ]]; then
        TOTAL=$(header_value "$hdr" Content-Length)
        RANGES=no
        return 0
      elif [[ $CURL_RC == 22 && $CURL_CODE == 416 ]]; then
        return 0  # an empty file, or a server that hides the size: the download will tell
      fi
    fi
    classify_failure "asking for the size of $NAME" || return 1
    fails=$((fails + 1))
    if ! backoff "$fails"; then
      give_up "asking for the size of $NAME"
      return 1
    fi
  done
}

# header_value FILE NAME: value of a header in the last response of a curl -D dump.
header_value() {
  awk -v want="$(tr '[:upper:]' '[:lower:]' <<<"$2")" '
    BEGIN { IGNORECASE = 1 }
    /^HTTP\// { v = "" }
    { line = $0; sub(/\r$/, "", line); i = index(line, ":")
      if (i > 0 && tolower(substr(line, 1, i - 1)) == want) { v = substr(line, i + 1); sub(/^[ \t]+/, "", v) } }
    END { print v }' "$1"
}

# fetch_range OUT START END MODE: make OUT hold bytes [START, END) of the file (END "" = to the end),
# continuing after the bytes already in OUT. MODE single: the whole file, plain resume. MODE head:
# NAME.part in a ranged download (the joiner may append behind it, so it is never cut back). MODE
# piece: a NAME.part.START-END file; once the joiner appended and removed it, it is done.
# Returns 0 done, 1 failed (message printed), 3 the server ignored the Range (nothing was written).
fetch_range() {
  local out=$1 start=$2 end=$3 mode=$4
  local have now off fails=0 what="downloading $NAME"
  local -a args
  while :; do
    have=$(fsize "$out")
    # a piece is removed only once complete and appended to NAME.part by the joiner
    [[ $mode == piece && ! -e $out ]] && return 0
    if [[ -n $end ]] && ((start + have >= end)); then
      ((start + have == end)) || [[ $mode == head ]] || truncate -s "$((end - start))" -- "$out"
      return 0
    fi
    off=$((start + have))
    args=("${CURL_BASE[@]}" -C "$off" -o "$out")
    [[ $mode == single ]] || args+=(-H "Range: bytes=$off-$((end - 1))")
    run_curl "${args[@]}"
    [[ $mode == piece && ! -e $out ]] && return 0
    now=$(fsize "$out")
    if ((CURL_RC == 0)); then
      [[ -z $end ]] && return 0
      ((start + now >= end)) && continue
    elif ((CURL_RC == 33)); then
      return 3
    elif [[ $CURL_RC == 22 && $CURL_CODE == 416 ]]; then
      if [[ -z $end ]]; then return 0; fi  # size unknown: the server says nothing is left
      err "$SPLIT: $HOST answers 416 (range not satisfiable) at byte $off of $NAME although it reported" \
        "$END_TOTAL bytes: the server misreports the file's length. Try again later or get a fresh" \
        "link; $(basename -- "$out") is kept (remove it to start over)."
      return 1
    elif ! classify_failure "$what"; then
      return 1
    fi
    if ((now > have)); then fails=0; else fails=$((fails + 1)); fi
    if ! backoff "$fails" "$((start + now))"; then
      give_up "$what"
      return 1
    fi
  done
}

# --- progress --------------------------------------------------------------------------------------

# progress_watch TOTAL T0_BYTES: a line every PROGRESS_STEP % (log) or a live line (terminal),
# from the size of NAME.part and its range files. Ends when the parent shell ends or on TERM.
progress_watch() {
  local total=$1 base=$2 parent=$3 step=$PROGRESS_STEP next cur pct t0 rate tty=0 poll=$PROGRESS_POLL
  [[ -t 2 ]] && tty=1 && poll=${DOWNLOAD_PROGRESS_POLL:-0.5}
  exec {LOCKFD}>&-  # a leftover sleep must not hold the download's lock
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

start_progress() {
  if [[ $1 == single && -t 2 ]]; then BAR=1; return 0; fi
  progress_watch "$2" "$3" "$BASHPID" &
  WATCH_PID=$!
}

stop_progress() {
  BAR=0
  if [[ -n ${WATCH_PID:-} ]]; then
    kill "$WATCH_PID" 2>/dev/null || true
    wait "$WATCH_PID" 2>/dev/null || true
    WATCH_PID=""
    [[ -t 2 ]] && printf '\n' >&2
  fi
  return 0
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

download_single() {
  local have rc=0
  have=$(fsize "$PART")
  if [[ $RANGES == no ]] && ((have > 0)); then
    log "$SPLIT: $HOST does not support resuming (no byte ranges): discarding the $(human "$have") in $NAME.part, starting over"
    : >"$PART"
    have=0
  fi
  if [[ -n $END_TOTAL ]]; then
    preflight "$((END_TOTAL - have))" "$(human "$((END_TOTAL - have))") left to fetch" || return 1
  fi
  ((have > 0)) && log "$SPLIT: resuming $NAME at byte $have ($(human "$have") already here)"
  start_progress single "$END_TOTAL" "$have"
  fetch_range "$PART" 0 "$END_TOTAL" single || rc=$?
  if ((rc == 3)); then
    log "$SPLIT: $HOST ignored the byte range of a resume (it sent the whole file again): discarding" \
      "the $(human "$(fsize "$PART")") in $NAME.part and starting over, so no byte is duplicated"
    : >"$PART"
    rc=0
    fetch_range "$PART" 0 "$END_TOTAL" single || rc=$?
  fi
  stop_progress
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
    [[ $b =~ ^([0-9]+)-([0-9]+)$ ]] || continue
    printf '%s %s %s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "$f"
  done | sort -n -k1,1
}

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

# queue_worker: take items (ITEM_OUT, ITEM_START, ITEM_END, ITEM_MODE) from the queue until none is left.
queue_worker() {
  trap 'if [[ -n ${CURL_PID:-} ]]; then kill "$CURL_PID" 2>/dev/null; fi; exit 143' TERM
  local k fd rc parent=$1
  exec {fd}>>"$TMPD/queue.lock"
  while kill -0 "$parent" 2>/dev/null; do
    flock "$fd"
    k=$(<"$TMPD/queue.next")
    echo $((k + 1)) >"$TMPD/queue.next"
    flock -u "$fd"
    ((k < ${#ITEM_OUT[@]})) || return 0
    rc=0
    fetch_range "${ITEM_OUT[k]}" "${ITEM_START[k]}" "${ITEM_END[k]}" "${ITEM_MODE[k]}" || rc=$?
    ((rc == 0)) || return "$rc"
  done
  return 143  # the script is gone: stop
}

download_segmented() {
  local n=$1 have rem i b e f p rc=0 fail=0 ignored=0 maxlen=0 alive
  local -a starts=() ends=() paths=() pids=()
  while read -r b e f; do
    starts+=("$b") ends+=("$e") paths+=("$f")
  done < <(list_segments)
  if ((${#starts[@]} == 0)); then
    have=$(fsize "$PART")
    rem=$((END_TOTAL - have))
    p=$((n * PIECES_PER_CONNECTION))
    ((rem / p < MIN_SEGMENT)) && p=$((rem / MIN_SEGMENT))
    ((p > n)) && p=$((p / n * n))  # whole rounds: no connection idles at the end
    if ((p < 2)); then
      download_single
      return
    fi
    : >>"$PART"
    for ((i = p - 1; i >= 1; i--)); do
      b=$((have + rem * i / p))
      e=$((have + rem * (i + 1) / p))
      : >"$PART.$b-$e"
    done
    while read -r b e f; do
      starts+=("$b") ends+=("$e") paths+=("$f")
    done < <(list_segments)
    log "$SPLIT: fetching $NAME in $p pieces over $((p < n ? p : n)) connections"
  else
    log "$SPLIT: resuming $NAME: $((${#starts[@]} + 1)) pieces of an earlier run, over $n connections"
  fi
  # the pieces must tile [first start, TOTAL) exactly
  for ((i = 0; i < ${#starts[@]}; i++)); do
    e=${ends[i]}
    if ((i + 1 < ${#starts[@]})); then b=${starts[i + 1]}; else b=$END_TOTAL; fi
    if ((e != b || starts[i] >= e)); then
      err "$SPLIT: the piece files $NAME.part.* do not fit a file of $END_TOTAL bytes (did the" \
        "file on the server change?). Remove $PART* and rerun to start over."
      return 1
    fi
  done
  # an interrupted join left NAME.part longer than its range: cut it back
  (($(fsize "$PART") > starts[0])) && truncate -s "${starts[0]}" -- "$PART"
  have=$(fsize "$PART")
  ITEM_OUT=() ITEM_START=() ITEM_END=() ITEM_MODE=()
  if ((have < starts[0])); then
    ITEM_OUT+=("$PART") ITEM_START+=(0) ITEM_END+=("${starts[0]}") ITEM_MODE+=(head)
  fi
  for ((i = 0; i < ${#starts[@]}; i++)); do
    have=$((have + $(fsize "${paths[i]}")))
    ((ends[i] - starts[i] > maxlen)) && maxlen=$((ends[i] - starts[i]))
    ITEM_OUT+=("${paths[i]}") ITEM_START+=("${starts[i]}") ITEM_END+=("${ends[i]}") ITEM_MODE+=(piece)
  done
  preflight "$((END_TOTAL - have + maxlen))" "$(human "$((END_TOTAL - have))") left to fetch + $(human "$maxlen") to join a piece" || return 1
  ((have > 0)) && log "$SPLIT: $(human "$have") of $NAME already here"
  echo 0 >"$TMPD/queue.next"
  start_progress segmented "$END_TOTAL" "$have"
  ((n > ${#ITEM_OUT[@]})) && n=${#ITEM_OUT[@]}
  WORKERS=()
  for ((i = 0; i < n; i++)); do
    queue_worker "$BASHPID" &
    pids+=("$!")
    WORKERS+=("$!")
  done
  while :; do  # join finished pieces while the others arrive
    join_ready || fail=1
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive && !fail)) || break
    sleep 0.2 {LOCKFD}>&- &
    wait "$!" || true
  done
  for p in "${pids[@]}"; do
    ((fail)) && kill "$p" 2>/dev/null
    rc=0
    wait "$p" || rc=$?
    ((rc == 3)) && ignored=1
    ((rc != 0 && rc != 3)) && fail=1
  done
  WORKERS=()
  if ((ignored)); then
    stop_progress
    log "$SPLIT: $HOST ignored a byte-range request: it cannot serve ranges; discarding the pieces" \
      "and fetching $NAME over one connection from the start"
    rm -f -- "$PART".[0-9]*-[0-9]*
    : >"$PART"
    RANGES=no
    download_single
    return
  fi
  ((fail == 0)) || { stop_progress; return 1; }
  join_ready || { stop_progress; return 1; }
  stop_progress
  if [[ -n $(list_segments) ]]; then
    err "$SPLIT: internal: pieces of $NAME left after the download; rerun to continue"
    return 1
  fi
  return 0
}

# Size and MD5 of NAME.part, then rename it to NAME and write NAME.md5.
finish_file() {
  local size actual
  size=$(fsize "$PART")
  if [[ -n $END_TOTAL ]] && ((size != END_TOTAL)); then
    if ((size > END_TOTAL)); then
      mv -f -- "$PART" "$FINAL.bad"
      err "$SPLIT: $NAME came out $size bytes, expected $END_TOTAL: moved to $FINAL.bad. The server" \
        "sent more than the file's length; rerun to download it again, or check DOWNLOAD_URL_$SUF."
    else
      err "$SPLIT: $NAME is incomplete: $size of $END_TOTAL bytes. Rerun to continue."
    fi
    return 1
  fi
  if ((verify)) && [[ -n $EXP_MD5 ]]; then
    log "$SPLIT: checking the MD5 of $NAME ($(human "$size"))"
    actual=$(md5_of "$PART")
    if [[ $actual != "$EXP_MD5" ]]; then
      mv -f -- "$PART" "$FINAL.bad"
      err "$SPLIT: checksum mismatch for $NAME: expected MD5 $EXP_MD5 ($MD5_FROM), got $actual." \
        "The file was moved to $FINAL.bad and nothing was written under its final name. Rerun to" \
        "download it again (delete $NAME.bad when you no longer need it); if this link is a" \
        "mirror you trust, set MD5_$SUF=$actual in $URLS_FROM."
      return 1
    fi
  fi
  sync -- "$PART" 2>/dev/null || true
  mv -f -- "$PART" "$FINAL"
  if ((verify)) && [[ -n $EXP_MD5 ]]; then
    printf '%s  %s\n' "$EXP_MD5" "$NAME" >"$FINAL.md5.tmp"
    mv -f -- "$FINAL.md5.tmp" "$FINAL.md5"
    log "$SPLIT: done: $FINAL ($(human "$size"), MD5 $EXP_MD5 verified)"
  else
    log "$SPLIT: done: $FINAL ($(human "$size"), MD5 not checked: --no-verify)"
  fi
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
  if ((!verify)) || [[ -z $EXP_MD5 ]]; then
    log "$SPLIT: already done: $FINAL is present ($(human "$size"), MD5 not checked: --no-verify)"
    return 0
  fi
  if [[ -f $marker && ! $FINAL -nt $marker ]]; then
    read -r line _ <"$marker" || true
    if [[ $line == "$EXP_MD5" ]]; then
      log "$SPLIT: already done: $FINAL ($(human "$size"), MD5 verified earlier, see $NAME.md5)"
      return 0
    fi
  fi
  log "$SPLIT: checking the MD5 of the existing $NAME ($(human "$size"))"
  actual=$(md5_of "$FINAL")
  if [[ $actual != "$EXP_MD5" ]]; then
    err "$SPLIT: $FINAL exists but its MD5 is $actual, expected $EXP_MD5 ($MD5_FROM). It was left" \
      "as it is; move it away (mv $FINAL $FINAL.bad) and rerun to download it again."
    return 1
  fi
  printf '%s  %s\n' "$EXP_MD5" "$NAME" >"$marker.tmp"
  mv -f -- "$marker.tmp" "$marker"
  log "$SPLIT: already done: $FINAL ($(human "$size"), MD5 verified)"
}

# Everything about one split; runs in its own process (see main).
download_split() {
  SPLIT=$1
  SUF=${SUFFIX[$SPLIT]}
  trap 'on_signal quiet' TERM INT
  local urlvar="DOWNLOAD_URL_$SUF" md5var="MD5_$SUF" sizevar="SIZE_$SUF"
  URL=${!urlvar}
  NAME=$(url_name "$URL")
  HOST=$(url_host "$URL")
  SHOW="$NAME from $HOST"
  FINAL=$DL/$NAME PART=$DL/$NAME.part
  if [[ -n ${!md5var:-} ]]; then
    EXP_MD5=${!md5var,,} MD5_FROM="MD5_$SUF in $URLS_FROM"
    EXP_SIZE=${!sizevar:-}
  else
    EXP_MD5=${KNOWN_MD5[$NAME]:-} MD5_FROM="the official checksum"
    EXP_SIZE=${!sizevar:-${KNOWN_SIZE[$NAME]:-}}
  fi
  if ! take_lock; then
    err "$SPLIT: another $PROG is already downloading $NAME into $DL (lock $FINAL.lock held)." \
      "Wait for it to finish, or stop it first."
    return 1
  fi
  local rc=0
  fetch_split || rc=$?
  rm -f -- "$FINAL.lock"  # still held; every holder checks it locked the file that is there
  return "$rc"
}

# take_lock: flock NAME.lock; make sure it is the file under that name (another process may
# have removed it in between), so that removing it when done is safe.
take_lock() {
  local i ino rc
  for i in 1 2 3 4 5; do
    exec {LOCKFD}>>"$FINAL.lock"
    rc=0
    flock -n -E 75 "$LOCKFD" 2>/dev/null || rc=$?
    ((rc != 75)) || return 1
    if ((rc != 0)); then  # e.g. a network filesystem mounted without lock support
      log "$SPLIT: warning: cannot lock $FINAL.lock on this filesystem; make sure no other" \
        "$PROG works on $NAME at the same time"
      return 0
    fi
    ino=$(stat -L -c %i "/proc/$BASHPID/fd/$LOCKFD" 2>/dev/null || echo "?")
    [[ $(stat -c %i -- "$FINAL.lock" 2>/dev/null) == "$ino" ]] && return 0
    exec {LOCKFD}>&-
  done
  return 1
}

fetch_split() {
  local urlvar="DOWNLOAD_URL_$SUF" md5var="MD5_$SUF" sizevar="SIZE_$SUF" rc=0 part_size t0 t1
  if [[ -e $FINAL ]]; then
    check_final
    return
  fi
  log "$SPLIT: $SHOW -> $FINAL"
  part_size=$(fsize "$PART")
  TOTAL="" RANGES=""
  if [[ -n $EXP_SIZE ]] && ((part_size == EXP_SIZE)) && [[ -z $(list_segments) ]]; then
    log "$SPLIT: $NAME.part is complete already ($(human "$part_size")); no need to ask the server"
    END_TOTAL=$EXP_SIZE
  else
    probe || return 1
    if [[ -n $EXP_SIZE && -n $TOTAL ]] && ((TOTAL != EXP_SIZE)); then
      err "$SPLIT: $HOST reports $TOTAL bytes for $NAME, but it should be $EXP_SIZE bytes" \
        "($([[ -n ${!sizevar:-} ]] && echo "SIZE_$SUF" || echo "official size")): the link may point" \
        "to another file, or the server misreports the length. Check DOWNLOAD_URL_$SUF in $URLS_FROM."
      return 1
    fi
    END_TOTAL=${EXP_SIZE:-$TOTAL}
    if [[ -z $END_TOTAL ]]; then
      local last
      last=$(list_segments | tail -n 1)
      [[ -n $last ]] && END_TOTAL=$(awk '{ print $2 }' <<<"$last")
    fi
    t0=$(now)
    part_size=$(fsize "$PART")
    local segmented=0
    if [[ $URL == http://* || $URL == https://* ]] && [[ -n $END_TOTAL ]] \
      && { ((connections > 1)) || [[ -n $(list_segments) ]]; }; then
      segmented=1
      if [[ $RANGES == "" ]]; then probe 1 || return 1; fi
      if [[ $RANGES == no ]]; then
        log "$SPLIT: $HOST does not serve byte ranges: one connection, no resume"
        rm -f -- "$PART".[0-9]*-[0-9]*
        segmented=0
      fi
    elif ((connections > 1)); then
      log "$SPLIT: one connection for $SHOW (several need an http(s) link with a known size)"
    fi
    if ((segmented)); then
      download_segmented "$connections" || rc=$?
    else
      download_single || rc=$?
    fi
    ((rc == 0)) || return 1
    t1=$(now)
    log "$SPLIT: fetched $(($(fsize "$PART") - part_size)) bytes in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s"
  fi
  finish_file
}

on_signal() {
  trap - TERM INT
  local p
  for p in ${CURL_PID:-} ${WATCH_PID:-} "${WORKERS[@]}" ${SPLIT_PID:-} $(jobs -p); do
    kill "$p" 2>/dev/null || true
  done
  [[ ${1:-} == quiet ]] || log "interrupted; rerun the same command to continue where it stopped"
  exit 130
}

# --- main ------------------------------------------------------------------------------------------

main() {
  local -a args=("$@")
  local s v
  WANT=()
  while (($#)); do
    case $1 in
      -h|--help) usage; exit 0 ;;
      --root) (($# >= 2)) || usage_error "--root needs a folder"; root=$2; shift ;;
      --root=*) root=${1#*=} ;;
      --urls) (($# >= 2)) || usage_error "--urls needs a file"; urls_file=$2; shift ;;
      --urls=*) urls_file=${1#*=} ;;
      --connections) (($# >= 2)) || usage_error "--connections needs a number"; connections=$2; shift ;;
      --connections=*) connections=${1#*=} ;;
      --retries) (($# >= 2)) || usage_error "--retries needs a number"; retries=$2; shift ;;
      --retries=*) retries=${1#*=} ;;
      --no-verify) verify=0 ;;
      -*) usage_error "unknown option: $1" ;;
      all) WANT+=("${SPLITS[@]}") ;;
      train|val|test|devkit) WANT+=("$1") ;;
      *) usage_error "unknown split: $1 (use: train val test devkit all)" ;;
    esac
    shift
  done
  ((${#WANT[@]})) || usage_error "no SPLIT given"
  if ! [[ $connections =~ ^[1-9][0-9]*$ ]] || ((connections > 32)); then
    usage_error "--connections must be a whole number from 1 to 32, not '$connections'"
  fi
  [[ $retries =~ ^[1-9][0-9]*$ ]] || usage_error "--retries must be a whole number >= 1, not '$retries'"
  # keep each split once, in the order given
  local -A seen=()
  local -a splits=()
  for s in "${WANT[@]}"; do
    [[ -n ${seen[$s]:-} ]] || splits+=("$s")
    seen[$s]=1
  done
  WANT=("${splits[@]}")

  log "$0 ${args[*]}"
  local t_start=$SECONDS
  need_cmd curl
  need_cmd md5sum
  need_cmd flock
  need_cmd awk
  load_urls

  # check every requested split before fetching anything
  local name md5v
  for s in "${WANT[@]}"; do
    v="DOWNLOAD_URL_${SUFFIX[$s]}"
    [[ -n ${!v:-} ]] || die "$s: $v is not set (or empty) in $URLS_FROM; add your link for it" \
      "(see urls.sh.example)"
    [[ ${!v} == *://* ]] || die "$s: $v in $URLS_FROM is not a link (expected https://..., http://... or file://...)"
    name=$(url_name "${!v}")
    if [[ -z $name || $name == . || $name == .. ]]; then
      die "$s: cannot tell the file name from $v (host $(url_host "${!v}")): the link's path must end in the archive's name"
    fi
    md5v="MD5_${SUFFIX[$s]}"
    if ((verify)) && [[ -z ${!md5v:-} && -z ${KNOWN_MD5[$name]:-} ]]; then
      die "$s: no checksum known for $name (not an official ILSVRC2012 file name): set $md5v=<md5>" \
        "in $URLS_FROM, or pass --no-verify to accept it with only a size check"
    fi
    if [[ -n ${!md5v:-} && ! ${!md5v} =~ ^[0-9a-fA-F]{32}$ ]]; then
      die "$s: $md5v in $URLS_FROM is not an MD5 (32 hex digits): '${!md5v}'"
    fi
  done

  DL=$root/downloads
  mkdir -p -- "$DL" || die "cannot create $DL; check --root"
  [[ -w $DL ]] || die "cannot write to $DL; check --root and permissions"
  TMPD=$(mktemp -d "${TMPDIR:-/tmp}/00_download.XXXXXX") || die "cannot create a temporary folder"
  trap 'rm -rf -- "$TMPD"' EXIT
  trap 'on_signal' TERM INT
  CURL_BASE=(-L -f --connect-timeout "$CONNECT_TIMEOUT" --speed-limit "$SPEED_LIMIT" --speed-time "$SPEED_TIME")
  WORKERS=()

  local -a failed=()
  local rc
  for s in "${WANT[@]}"; do
    rc=0
    ( set -e; download_split "$s" ) &
    SPLIT_PID=$!
    wait "$SPLIT_PID" || rc=$?
    SPLIT_PID=""
    ((rc == 0)) || failed+=("$s")
  done
  local took=$((SECONDS - t_start))
  if ((${#failed[@]})); then
    log "failed: ${failed[*]} (messages above); took ${took}s. Rerun the same command to retry; finished files are kept."
    exit 1
  fi
  log "all done: ${WANT[*]} in $DL; took ${took}s"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
