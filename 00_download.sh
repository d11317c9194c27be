#!/usr/bin/env bash
# 00_download.sh — download the ILSVRC2012 archives from your own image-net.org links into
# ROOT/downloads/: resumable, verified, optionally over several connections.
#
# Usage:   00_download.sh [options] SPLIT...        SPLIT: train val test devkit all
# Example: cp urls.sh.example urls.sh && chmod 600 urls.sh   # then paste your links into urls.sh
#          00_download.sh --root /data/imagenet --connections 4 val devkit
#
# Bytes arrive in ROOT/downloads/NAME.part; with --connections N also in piece files
# NAME.part.START-END, appended to NAME.part in order as they complete (none outlives a success).
# Kill it at any moment: a rerun continues every piece from the bytes already on disk. Retries
# (with backoff) happen in a loop around curl, so no received byte is ever thrown away. The file is
# renamed to NAME only after its size and MD5 check out; then NAME.md5 records the check and a rerun
# says "already done" without touching the network (so it does for a split that 01_unzip.sh
# extracted and whose archive it removed). Full URLs are never printed (they may carry a token):
# urls.sh is read, never run, and a mistake in it is reported by line and variable name only.
# Nothing from outside (server, urls.sh, environment) reaches bash arithmetic before it is checked
# to be a plain number: (( )) evaluates array subscripts, and with them $( ).
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
# Tuning knobs, from the environment (see --help); check_knobs refuses a malformed one before use
readonly SPEED_LIMIT=${DOWNLOAD_SPEED_LIMIT:-1024}       # B/s; slower than this for ...
readonly SPEED_TIME=${DOWNLOAD_SPEED_TIME:-60}           # ... this many seconds is a stall: retry
readonly CONNECT_TIMEOUT=${DOWNLOAD_CONNECT_TIMEOUT:-30} # seconds to connect
readonly RETRY_DELAY=${DOWNLOAD_RETRY_DELAY:-5}          # first pause between attempts (seconds)
readonly RETRY_DELAY_MAX=${DOWNLOAD_RETRY_DELAY_MAX:-300} # pauses double up to this
readonly PROGRESS_STEP=${DOWNLOAD_PROGRESS_STEP:-5}      # % between progress lines in a log
readonly PROGRESS_POLL=${DOWNLOAD_PROGRESS_POLL:-2}      # seconds between progress checks
readonly MIN_SEGMENT=${DOWNLOAD_MIN_SEGMENT:-16777216}   # never split into pieces smaller than this
readonly PIECES_PER_CONNECTION=8                         # pieces per connection: joins overlap the download
readonly MAX_DIGITS=18      # longest number taken from outside: below 2^63, so no overflow
readonly LOCK_WAIT=3        # seconds to wait for NAME.lock (a killed run's helpers may still be stopping)
readonly STOP_WAIT=50       # tenths of a second to wait for helpers to stop after TERM, then KILL

root=${IMAGENET_ROOT:-.}  # --root DIR: data folder (default: $IMAGENET_ROOT, else the current dir)
urls_file=""              # --urls FILE: links (default: $IMAGENET_URLS, ./urls.sh, urls.sh beside me)
connections=1             # --connections N: byte ranges of one file fetched at once
retries=${DOWNLOAD_RETRIES:-10}  # --retries N: attempts in a row without progress before giving up
verify=1                  # --no-verify: skip the MD5 check (the size is always checked)
declare -A FROM_ENV=()    # settings found in the environment (they win over the urls file)

log() { printf '%s %(%H:%M:%S)T %s\n' "$PROG" -1 "$*" >&2; }
die() { printf '%s %(%H:%M:%S)T error: %s\n' "$PROG" -1 "$*" >&2; exit 1; }
err() { printf '%s %(%H:%M:%S)T error: %s\n' "$PROG" -1 "$*" >&2; }
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
The file is read, not run: NAME="value" lines (or NAME='value', export NAME=...), comments and blank
lines. The file name is the last part of the link's path. MD5_<split> / SIZE_<split> in urls.sh
(e.g. MD5_val, MD5_devkit_t12) override the built-in checksums of the official archives, for mirrors.

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
touching the network (NAME.md5 records the check; delete it to check again), and for a split that
01_unzip.sh extracted and verified before it removed the archive (--remove-archive). A file that
is full size but fails its checksum is moved to NAME.bad and the split fails; a rerun downloads it
again. A web page received instead of the archive (an expired link, a login page) is set aside as
NAME.html. NAME.lock keeps a second $PROG off the same file; it is removed when the run ends or
is stopped. Exit codes: 0 all requested splits present and verified, 1 failure, 2 usage.
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

free_bytes() { df -P -B1 -- "$1" | awk 'NR == 2 && $4 ~ /^[0-9]+$/ { print $4 }'; }

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

# to_size VAR VALUE: like to_count, and digits grouped in threes by , or _ (3,000,000) are fine too.
to_size() {
  local grouped_=$2
  if [[ $grouped_ =~ ^[0-9]{1,3}(,[0-9]{3})+$ || $grouped_ =~ ^[0-9]{1,3}(_[0-9]{3})+$ ]]; then
    grouped_=${grouped_//[,_]/}
  fi
  to_count "$1" "$grouped_"
}

# check_knob NAME VALUE KIND: die unless VALUE, from environment variable NAME, is of KIND: count
# (a whole number >= 1, no leading zero), percent (1 to 100) or seconds (e.g. 5 or 0.5). The value
# itself is not shown.
check_knob() {
  local name=$1 value=$2 kind=$3 n what
  case $kind in
    count) what="a whole number of at least 1 (no leading zero)"
      to_count n "$value" && [[ $n == "$value" ]] && ((n >= 1)) && return 0 ;;
    percent) what="a whole number from 1 to 100"
      to_count n "$value" && [[ $n == "$value" ]] && ((n >= 1 && n <= 100)) && return 0 ;;
    seconds) what="a number of seconds such as 5 or 0.5"
      [[ $value =~ ^[0-9]{1,6}(\.[0-9]{1,6})?$ ]] && return 0 ;;
  esac
  die "$name in the environment must be $what; fix it, or unset it to use the default (see --help)"
}

check_knobs() {
  check_knob DOWNLOAD_SPEED_LIMIT "$SPEED_LIMIT" count
  check_knob DOWNLOAD_SPEED_TIME "$SPEED_TIME" count
  check_knob DOWNLOAD_CONNECT_TIMEOUT "$CONNECT_TIMEOUT" seconds
  check_knob DOWNLOAD_RETRY_DELAY "$RETRY_DELAY" seconds
  check_knob DOWNLOAD_RETRY_DELAY_MAX "$RETRY_DELAY_MAX" seconds
  check_knob DOWNLOAD_PROGRESS_STEP "$PROGRESS_STEP" percent
  check_knob DOWNLOAD_PROGRESS_POLL "$PROGRESS_POLL" seconds
  check_knob DOWNLOAD_MIN_SEGMENT "$MIN_SEGMENT" count
}

# --- processes -------------------------------------------------------------------------------------
# Each split runs in a process group of its own (its process, queue workers, curl, head, progress,
# watchdog). Stopping a split is one `kill -- -PGID`: nothing of it can be missed or outlive it,
# whichever of its processes died first. There are no TERM traps below the main process: bash 5.2
# can fail to parse a trap that fires while it expands a $( ), and then dies without its clean-up.

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
# stopping the split (kill -9, the OOM killer), it stops the group, removes LOCK and the temporary
# folder: nothing of the run outlives it, and a rerun finds the file free.
watch_main() {
  local main=$1 split=$2 lock=$3 st
  while st=$(stat_of "$split"); do
    st=${st#* }
    [[ ${st%% *} == "$main" ]] || break
    sleep 0.5 >/dev/null 2>&1 || true
  done
  alive "$split" || exit 0
  trap '' TERM INT PIPE  # the group is stopped from here; this process finishes the clean-up
  stop_group "$split" "$BASHPID"
  drop_lock "$lock"
  rm -rf -- "$TMPD"
  log "$SPLIT: $PROG (process $main) was killed; stopped the download of $NAME (rerun to continue)" || true
}

# --- loading the links -----------------------------------------------------------------------------

# Find the urls file and take DOWNLOAD_URL_*, MD5_*, SIZE_* from it; values already in the
# environment win.
load_urls() {
  local s v file="" here
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
  [[ -r $file ]] || die "cannot read $file (check its permissions)"
  for s in "${SPLITS[@]}"; do
    for v in "DOWNLOAD_URL_${SUFFIX[$s]}" "MD5_${SUFFIX[$s]}" "SIZE_${SUFFIX[$s]}"; do
      [[ -z ${!v:-} ]] || FROM_ENV[$v]=1
    done
  done
  read_urls_file "$file"
}

where() {  # where VAR: where the setting VAR came from, for messages
  if [[ -n ${FROM_ENV[$1]:-} ]]; then printf 'the environment'; else printf '%s' "$URLS_FROM"; fi
}

# read_urls_file FILE: set the settings assigned in FILE. The file is read, never run, so that no
# mistake in it can run a command or print a link: it may hold NAME=value lines (value in "..." or
# '...', or a word without spaces), "export NAME=...", comments and blank lines. Anything else stops
# the script with the line number and the variable's name, never the value. Windows line endings
# are read without their CR. A setting already in the environment wins.
read_urls_file() {
  local file=$1 n=0 line name value why rc crlf=0 s v
  local -A known=()
  for s in "${SPLITS[@]}"; do
    for v in "DOWNLOAD_URL_${SUFFIX[$s]}" "MD5_${SUFFIX[$s]}" "SIZE_${SUFFIX[$s]}"; do
      known[$v]=1
    done
  done
  while IFS= read -r line || [[ -n $line ]]; do
    n=$((n + 1))
    if [[ $line == *$'\r' ]]; then
      line=${line%$'\r'}
      crlf=1
    fi
    rc=0
    parse_assignment "$line" name value why || rc=$?
    ((rc != 1)) || continue
    ((rc == 0)) || die "$file, line $n: $why"
    if [[ -z ${known[$name]:-} ]]; then
      log "warning: $file, line $n: $name is not a setting of $PROG (ignored); the settings are" \
        "DOWNLOAD_URL_<s>, MD5_<s> and SIZE_<s> for s = train, val, test, devkit_t12"
      continue
    fi
    [[ -n ${FROM_ENV[$name]:-} ]] || printf -v "$name" '%s' "$value"
  done <"$file"
  if ((crlf)); then
    log "note: $file has Windows line endings (CR LF); read without the CRs (to convert it:" \
      "sed -i 's/\\r\$//' $file)"
  fi
  return 0
}

# parse_assignment LINE NAMEVAR VALUEVAR WHYVAR: one line of a urls file, read the way bash reads a
# plain assignment, without running anything. Returns 0 with NAMEVAR and VALUEVAR set, 1 for a blank
# or comment line, 2 with WHYVAR saying what is wrong (naming the variable, never showing the value).
parse_assignment() {
  local pa_line=$1 pa_name="" pa_value="" pa_why="" pa_tail="" pa_out pa_rc=0
  local re_assign='^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$'
  local re_export='^[[:space:]]*export([[:space:]]+[A-Za-z_][A-Za-z0-9_]*)+[[:space:]]*(#.*)?$'
  local re_blank='^[[:space:]]*(#.*)?$' re_tail='^[[:space:]]+(#.*)?$'
  if [[ ${pa_line//$'\t'/ } == *[[:cntrl:]]* ]]; then
    pa_why="a control character (such as a carriage return) inside the line; save the file as plain text"
    pa_rc=2
  elif [[ $pa_line =~ $re_blank || $pa_line =~ $re_export ]]; then
    pa_rc=1
  elif ! [[ $pa_line =~ $re_assign ]]; then
    pa_why=$(not_an_assignment "$pa_line")
    pa_rc=2
  else
    pa_name=${BASH_REMATCH[2]}
    if pa_out=$(parse_value "$pa_name" "${BASH_REMATCH[3]}"); then
      pa_out=${pa_out%.}
      pa_value=${pa_out%%$'\n'*} pa_tail=${pa_out#*$'\n'}
      if [[ -n $pa_tail && ! $pa_tail =~ $re_tail ]]; then
        pa_why="something after the value of $pa_name on the same line: one NAME=\"value\" per line (a comment after a space and #)"
        pa_rc=2
      fi
    else
      pa_why=$pa_out pa_rc=2
    fi
  fi
  printf -v "$2" '%s' "$pa_name"
  printf -v "$3" '%s' "$pa_value"
  printf -v "$4" '%s' "$pa_why"
  return "$pa_rc"
}

not_an_assignment() {  # not_an_assignment LINE: why LINE, which is no NAME=..., is wrong
  local re_spaced='^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)[[:space:]]+='
  if [[ $1 =~ $re_spaced ]]; then
    printf '%s' "spaces around the = after ${BASH_REMATCH[2]}; write ${BASH_REMATCH[2]}=\"...\" with no space on either side"
  elif [[ $1 == *://* ]]; then
    printf '%s' "a link that is not assigned to a variable; write DOWNLOAD_URL_<split>=\"...\" (see urls.sh.example)"
  else
    printf '%s' "not a NAME=\"value\" line. The file is read, not run: it may hold only such lines, comments and blank lines (see urls.sh.example)"
  fi
}

# parse_value NAME TEXT: TEXT is what follows "NAME=". Prints the value, a newline, the rest of the
# line and a "." (0); or why it is wrong (1). In "..." the escapes \" \\ \$ \` are undone as bash
# does; a $ or ` there is refused: the file is not run, so nothing can be expanded.
parse_value() {
  local name=$1 text=$2 q c val="" tail=""
  local re_double='^"(([^"\\]|\\.)*)"(.*)$' re_single="^'([^']*)'(.*)\$" re_blank='^[[:space:]]*(#.*)?$'
  case $text in
    \"*)
      [[ $text =~ $re_double ]] || { printf '%s' "the \" after $name= is not closed on the same line"; return 1; }
      q=${BASH_REMATCH[1]} tail=${BASH_REMATCH[3]}
      while [[ -n $q ]]; do
        c=${q:0:1}
        if [[ $c == \\ ]]; then
          case ${q:1:1} in
            \" | \\ | \$ | \`) val+=${q:1:1} ;;
            *) val+=${q:0:2} ;;
          esac
          q=${q:2}
        elif [[ $c == \$ || $c == \` ]]; then
          printf '%s' "$name has a \$ or \` inside double quotes; the file is read, not run, so nothing is expanded: write the value out in full (or inside '...')"
          return 1
        else
          val+=$c
          q=${q:1}
        fi
      done ;;
    \'*)
      [[ $text =~ $re_single ]] || { printf '%s' "the ' after $name= is not closed on the same line"; return 1; }
      val=${BASH_REMATCH[1]} tail=${BASH_REMATCH[2]} ;;
    '' | [[:space:]]*)
      if ! [[ $text =~ $re_blank ]]; then
        printf '%s' "a space after $name=: bash would run the rest of the line as a command. Write $name=\"...\" with no space after the ="
        return 1
      fi ;;
    *)
      val=${text%%[[:space:]]*}
      tail=${text:${#val}}
      if [[ $val == *'&'* ]]; then
        printf '%s' "$name has an & outside quotes: a link with & in it must be quoted, $name=\"https://...\""
        return 1
      fi
      if [[ $val == *[\"\'\`\$\;\|\<\>\(\)\\]* ]]; then
        printf '%s' "$name has a quote, \$, ;, |, <, >, ( ) or \\ outside quotes: put the whole value in double quotes"
        return 1
      fi ;;
  esac
  printf '%s\n%s.' "$val" "$tail"
}

# check_settings SPLIT: the link, MD5 and size of SPLIT make sense; SIZE_* is rewritten as plain digits.
check_settings() {
  local s=$1 v="DOWNLOAD_URL_${SUFFIX[$1]}" md5v="MD5_${SUFFIX[$1]}" sizev="SIZE_${SUFFIX[$1]}" name size
  [[ -n ${!v:-} ]] || die "$s: $v is not set (or empty) in $URLS_FROM; add your link for it" \
    "(see urls.sh.example)"
  [[ ${!v} == *://* ]] || die "$s: $v in $(where "$v") is not a link (expected https://..., http://... or file://...)"
  if [[ ${!v} == *[[:space:][:cntrl:]]* ]]; then
    die "$s: $v in $(where "$v") holds a space or a control character (a Windows line ending?); a link has none"
  fi
  name=$(url_name "${!v}")
  if [[ -z $name || $name == . || $name == .. ]]; then
    die "$s: cannot tell the file name from $v (host $(url_host "${!v}")): the link's path must end in the archive's name"
  fi
  if ((verify)) && [[ -z ${!md5v:-} && -z ${KNOWN_MD5[$name]:-} ]]; then
    die "$s: no checksum known for $name (not an official ILSVRC2012 file name): set $md5v=<md5>" \
      "in $URLS_FROM, or pass --no-verify to accept it with only a size check"
  fi
  if [[ -n ${!md5v:-} && ! ${!md5v} =~ ^[0-9a-fA-F]{32}$ ]]; then
    die "$s: $md5v in $(where "$md5v") is not an MD5 (32 hex digits, as md5sum prints them)"
  fi
  if [[ -n ${!sizev:-} ]]; then
    to_size size "${!sizev}" || die "$s: $sizev in $(where "$sizev") is not a size in bytes (digits only," \
      "such as 6744924160 or 6,744,924,160; no units or decimals)"
    printf -v "$sizev" '%s' "$size"
  fi
  return 0
}

# --- curl ------------------------------------------------------------------------------------------

# run_curl [--cap N FILE] ARG...: curl on $URL with ARG... The URL goes in on stdin (-K -), never on
# the command line where `ps` would show it. With --cap, the body goes through `head -c N` onto the
# end of FILE: at most N bytes are written, whatever the server sends. Sets CURL_RC (curl's exit
# code; 0 once the N bytes are in), CURL_CODE (last HTTP status, 000 for none), CURL_HDR (file with
# the response headers) and CURL_MSG (curl's error line, without the URL).
run_curl() {
  local cap="" capfile="" before=0 url=${URL//\\/\\\\} base=$TMPD/curl.$BASHPID st
  if [[ $1 == --cap ]]; then
    cap=$2 capfile=$3
    shift 3
    before=$(fsize "$capfile")
  fi
  url=${url//\"/\\\"}
  CURL_HDR=$base.hdr CURL_RC=0
  : >"$base.err"
  : >"$CURL_HDR"
  rm -f -- "$base.rc"
  if [[ -n $cap ]]; then
    { set +e
      printf 'url = "%s"\n' "$url" | curl -sS -D "$CURL_HDR" "$@" -o - -K - 2>"$base.err" \
        | head -c "$cap" 2>"$base.herr" >>"$capfile"
      printf '%s %s\n' "${PIPESTATUS[1]}" "${PIPESTATUS[2]}" >"$base.rc"; } &
  elif [[ ${BAR:-0} == 1 ]]; then
    printf 'url = "%s"\n' "$url" | curl --progress-bar -D "$CURL_HDR" "$@" -K - >/dev/null &
  else
    printf 'url = "%s"\n' "$url" | curl -sS -D "$CURL_HDR" "$@" -K - >/dev/null 2>"$base.err" &
  fi
  wait "$!" || CURL_RC=$?
  if [[ -n $cap ]]; then
    st="143 0"  # no status: the pipeline was killed
    [[ ! -f $base.rc ]] || read -r st <"$base.rc" || true
    [[ $st =~ ^[0-9]{1,3}\ [0-9]{1,3}$ ]] || st="143 0"
    CURL_RC=${st%% *}
    if [[ ${st#* } != 0 ]]; then  # head could not write: the disk
      CURL_RC=23
      cp -f -- "$base.herr" "$base.err" 2>/dev/null || true
    elif (($(fsize "$capfile") - before == cap)); then
      CURL_RC=0  # all N bytes are in; curl's complaint about the closed pipe does not matter
    fi
  fi
  CURL_CODE=$(awk '/^HTTP\/[0-9.]+ [0-9][0-9][0-9]/ { c = $2 } END { print c }' "$CURL_HDR")
  [[ $CURL_CODE =~ ^[0-9]{3}$ ]] || CURL_CODE=000
  CURL_MSG=$(grep -v '^$' "$base.err" | tail -n 1 || true)
  CURL_MSG=$(scrub_links "${CURL_MSG//"$URL"/"$SHOW"}")
}

scrub_links() {  # scrub_links TEXT: TEXT with every remaining scheme://... replaced by <link>
  local t=$1 re='[A-Za-z][A-Za-z0-9+.-]*://[^[:space:]]*'
  while [[ $t =~ $re ]]; do t=${t//"${BASH_REMATCH[0]}"/<link>}; done
  printf '%s' "$t"
}

http_hint() {
  case $1 in
    401|403) echo "the link may have expired or needs a login: get a fresh one from image-net.org and put it in DOWNLOAD_URL_$SUF ($URL_FROM)" ;;
    404|410) echo "the link may have expired or is wrong: get a fresh one from image-net.org and put it in DOWNLOAD_URL_$SUF ($URL_FROM)" ;;
    *) echo "check DOWNLOAD_URL_$SUF in $URL_FROM" ;;
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
      err "$SPLIT: curl cannot use the link in DOWNLOAD_URL_$SUF ($CURL_MSG); check $URL_FROM"
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

# nap SECONDS: sleep, in the background so that a signal is handled at once, without the lock's fd.
nap() {
  sleep "$1" {LOCKFD}>&- &
  wait "$!" || true
}

# retry_delay FAILS: seconds to pause after FAILS attempts in a row without progress.
retry_delay() {
  awk -v d="$RETRY_DELAY" -v n="$1" -v m="$RETRY_DELAY_MAX" \
    'BEGIN { x = d * 2 ^ (n > 0 ? n - 1 : 0); if (x > m) x = m; print x }'
}

# backoff FAILS [AT]: say why, pause before the next attempt; returns 1 when FAILS reached the limit.
backoff() {
  local fails=$1 at=${2:-} delay why count=""
  ((fails < retries)) || return 1
  delay=$(retry_delay "$fails")
  why=${CURL_MSG:-curl exit code $CURL_RC}
  [[ $CURL_RC == 0 ]] && why="the connection ended early"
  ((fails > 0)) && count=" ($fails of $retries attempts in a row without progress)"
  log "$SPLIT: $why; retrying in ${delay}s${at:+ from byte $at}$count"
  nap "$delay"
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

# header_value FILE NAME: value of a header in the last response of a curl -D dump.
header_value() {
  awk -v want="$(tr '[:upper:]' '[:lower:]' <<<"$2")" '
    /^HTTP\// { v = "" }
    { line = $0; sub(/\r$/, "", line); i = index(line, ":")
      if (i > 0 && tolower(substr(line, 1, i - 1)) == want) {
        v = substr(line, i + 1); sub(/^[ \t]+/, "", v); sub(/[ \t]+$/, "", v) } }
    END { print v }' "$1"
}

# web_page_error [FILE]: say that the link answered with a web page; FILE (what came) becomes NAME.html.
web_page_error() {
  local saved=""
  if [[ -n ${1:-} && -e $1 ]]; then
    if mv -f -- "$1" "$FINAL.html"; then saved=" (it was saved as $FINAL.html)"; else rm -f -- "$1"; fi
  fi
  err "$SPLIT: the link answered with a web page (HTML), not with $NAME$saved: it has expired, or" \
    "the site wants you to log in. Log in at image-net.org, copy a fresh link for $NAME into" \
    "DOWNLOAD_URL_$SUF ($URL_FROM) and rerun."
}

looks_like_html() {  # looks_like_html FILE: FILE starts like an HTML (or XML) page, not an archive
  local start re='^[[:space:]]*<(!doctype[[:space:]]+html|html|head|body|!--|\?xml|title|meta)'
  start=$(head -c 512 -- "$1" | tr -d '\0' | tr '[:upper:]' '[:lower:]') || return 1
  start=${start#$'\xef\xbb\xbf'}
  [[ $start =~ $re ]]
}

# probe_headers: the last response in CURL_HDR is not a web page; TOTAL = its Content-Length, checked.
probe_headers() {
  local ctype len
  ctype=$(header_value "$CURL_HDR" Content-Type)
  if [[ ${ctype,,} == text/html* || ${ctype,,} == application/xhtml* ]]; then
    web_page_error
    return 1
  fi
  len=$(header_value "$CURL_HDR" Content-Length)
  TOTAL=""
  [[ -z $len ]] || to_count TOTAL "$len" || { bad_number Content-Length; return 1; }
}

bad_number() {  # bad_number HEADER: the server sent a HEADER that is not a plain number
  err "$SPLIT: $HOST sent a $1 header for $NAME that is not a plain number of bytes; refusing to" \
    "go on (a broken server, or one trying to make the shell run it; the value is not shown)." \
    "Check DOWNLOAD_URL_$SUF in $URL_FROM."
}

# probe [RANGED]: learn the total size and whether byte ranges work, without fetching the body.
# Sets TOTAL ("" unknown) and RANGES (yes / no / "" unknown). Returns 1 on a permanent failure.
probe() {
  local fails=0 ranged_get=${1:-0} total
  TOTAL="" RANGES=""
  while :; do
    if ((!ranged_get)); then
      run_curl "${CURL_BASE[@]}" -I -o /dev/null --max-time 300
      if ((CURL_RC == 0)); then
        probe_headers || return 1
        case $(header_value "$CURL_HDR" Accept-Ranges) in
          bytes) RANGES=yes ;;
          none) RANGES=no ;;
        esac
        [[ $TOTAL == 0 ]] || return 0
        ranged_get=1  # "0 bytes" to a HEAD: some servers say so; ask with a GET
        continue
      fi
      # some signed links allow only GET: fall through to a one-byte ranged GET
      if [[ $CURL_RC == 22 && $CURL_CODE == 4?? && $CURL_CODE != 408 && $CURL_CODE != 429 ]]; then
        ranged_get=1
        continue
      fi
    else
      run_curl "${CURL_BASE[@]}" -r 0-0 -o /dev/null --max-filesize 1 --max-time 300
      # --max-filesize stops a body over 1 byte (exit 63) before -f sees an error status (22)
      [[ $CURL_RC != 63 || $CURL_CODE != [45]?? ]] || CURL_RC=22
      if [[ ($CURL_RC == 0 || $CURL_RC == 63) && $CURL_CODE == 206 ]]; then
        probe_headers || return 1
        total=$(header_value "$CURL_HDR" Content-Range)
        total=${total##*/}
        TOTAL=""
        [[ -z $total || $total == "*" ]] || to_count TOTAL "$total" || { bad_number Content-Range; return 1; }
        RANGES=yes
        return 0
      elif [[ ($CURL_RC == 63 || $CURL_RC == 0) && $CURL_CODE == 200 ]]; then
        probe_headers || return 1
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

# fetch_range OUT START END MODE: make OUT hold bytes [START, END) of the file (END "" = to the end),
# continuing after the bytes already in OUT. MODE single: the whole file, plain resume. MODE head:
# NAME.part in a ranged download (the joiner may append behind it, so it is never cut back). MODE
# piece: a NAME.part.START-END file; once the joiner appended and removed it, it is done. In a
# ranged download the bytes are counted: nothing past END is written, whatever the server sends.
# Returns 0 done, 1 failed (message printed), 3 the server ignored the Range (nothing was written).
fetch_range() {
  local out=$1 start=$2 end=$3 mode=$4
  local have now off fails=0 what="downloading $NAME"
  while :; do
    have=$(fsize "$out")
    # a piece is removed only once complete and appended to NAME.part by the joiner
    [[ $mode == piece && ! -e $out ]] && return 0
    if [[ -n $end ]] && ((start + have >= end)); then
      if ((start + have > end)) && [[ $mode != head ]] && ! truncate -s "$((end - start))" -- "$out"; then
        err "$SPLIT: cannot cut $out back to its $((end - start)) bytes; remove it and rerun"
        return 1
      fi
      return 0
    fi
    off=$((start + have))
    if [[ $mode == single ]]; then
      run_curl "${CURL_BASE[@]}" -C "$off" -o "$out"
    else
      run_curl --cap "$((end - off))" "$out" "${CURL_BASE[@]}" -C "$off" -H "Range: bytes=$off-$((end - 1))"
    fi
    [[ $mode == piece && ! -e $out ]] && return 0
    now=$(fsize "$out")
    if ((off == 0 && now > 0)) && looks_like_html "$out"; then
      web_page_error "$out"
      return 1
    fi
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
  local me=$BASHPID
  progress_watch "$2" "$3" "$me" &
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

empty_part() {  # empty_part: NAME.part back to 0 bytes, to start over
  : >"$PART" && return 0
  err "$SPLIT: cannot write $PART; check the permissions and free space of $DL"
  return 1
}

download_single() {
  local have rc=0 restarts=0 best=0 got
  have=$(fsize "$PART")
  if [[ $RANGES == no ]] && ((have > 0)); then
    log "$SPLIT: $HOST does not support resuming (no byte ranges): discarding the $(human "$have") in $NAME.part, starting over"
    empty_part || return 1
    have=0
  fi
  if [[ -n $END_TOTAL ]]; then
    preflight "$((END_TOTAL - have))" "$(human "$((END_TOTAL - have))") left to fetch" || return 1
  fi
  ((have > 0)) && log "$SPLIT: resuming $NAME at byte $have ($(human "$have") already here)"
  start_progress single "$END_TOTAL" "$have"
  while :; do
    rc=0
    fetch_range "$PART" 0 "$END_TOTAL" single || rc=$?
    ((rc == 3)) || break
    # the server sent the whole file again to a resume: start over (each time it gets no further
    # than before counts as an attempt without progress)
    got=$(fsize "$PART")
    if ((got > best)); then best=$got restarts=0; else restarts=$((restarts + 1)); fi
    if ((restarts >= retries)); then
      err "$SPLIT: $HOST cannot resume (it ignores byte ranges), and the connection broke $retries" \
        "times in a row no further than $(human "$best") into $NAME. Giving up: rerun later, or use a" \
        "link to a server that can resume (--retries N allows more attempts)."
      rc=1
      break
    fi
    log "$SPLIT: $HOST ignored the byte range of a resume (it sent the whole file again): discarding" \
      "the $(human "$got") in $NAME.part and starting over, so no byte is duplicated"
    empty_part || { rc=1; break; }
    nap "$(retry_delay "$restarts")"
  done
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

# queue_worker: take items (ITEM_OUT, ITEM_START, ITEM_END, ITEM_MODE) from the queue until none is left.
queue_worker() {
  local k fd rc parent=$1
  exec {fd}>>"$TMPD/queue.lock"
  while kill -0 "$parent" 2>/dev/null; do
    flock "$fd"
    k=$(<"$TMPD/queue.next")
    [[ $k =~ ^[0-9]{1,9}$ ]] || k=${#ITEM_OUT[@]}  # (our own file; checked all the same)
    echo $((k + 1)) >"$TMPD/queue.next"
    flock -u "$fd"
    ((k < ${#ITEM_OUT[@]})) || return 0
    rc=0
    fetch_range "${ITEM_OUT[k]}" "${ITEM_START[k]}" "${ITEM_END[k]}" "${ITEM_MODE[k]}" || rc=$?
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

# run_workers N: N queue workers over the ITEM_* queue, joining pieces while they run. Returns 0
# done, 1 failed (message printed), 3 the server ignored a byte range.
run_workers() {
  local n=$1 i p rc fail=0 ignored=0 alive me=$BASHPID
  local -a pids=()
  echo 0 >"$TMPD/queue.next"
  ((n > ${#ITEM_OUT[@]})) && n=${#ITEM_OUT[@]}
  for ((i = 0; i < n; i++)); do
    queue_worker "$me" &
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

download_segmented() {
  local n=$1 have i b e f rc=0 maxlen=0
  local -a starts=() ends=() paths=()
  if [[ -z $(list_segments) ]]; then
    plan_pieces "$n" || rc=$?
    ((rc != 2)) || { download_single; return; }
    ((rc == 0)) || return 1
  else
    log "$SPLIT: resuming $NAME: the pieces of an earlier run, over $n connection(s)"
  fi
  while read -r b e f; do
    starts+=("$b") ends+=("$e") paths+=("$f")
  done < <(list_segments)
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
  if (($(fsize "$PART") > starts[0])) && ! truncate -s "${starts[0]}" -- "$PART"; then
    err "$SPLIT: cannot cut $PART back to ${starts[0]} bytes; remove $PART* and rerun"
    return 1
  fi
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
  start_progress segmented "$END_TOTAL" "$have"
  rc=0
  run_workers "$n" || rc=$?
  stop_progress
  if ((rc == 3)); then
    log "$SPLIT: $HOST ignored a byte-range request: it cannot serve ranges; discarding the pieces" \
      "and fetching $NAME over one connection from the start"
    remove_segments
    empty_part || return 1
    RANGES=no
    download_single
    return
  fi
  ((rc == 0)) || return 1
  if [[ -n $(list_segments) ]]; then
    err "$SPLIT: internal: pieces of $NAME left after the download; rerun to continue"
    return 1
  fi
  return 0
}

# finish_file: NAME.part is there, is not empty nor a web page, has the size and MD5: rename it to
# NAME, write NAME.md5. Every step is checked: nothing is left half-done under a name a rerun trusts.
finish_file() {
  local size actual
  size=$(fsize "$PART")
  if [[ ! -f $PART ]] || ((size == 0)); then
    rm -f -- "$PART"
    err "$SPLIT: $HOST sent no bytes for $NAME (an empty file is not the archive): the link may be" \
      "wrong or expired. Check DOWNLOAD_URL_$SUF in $URL_FROM and rerun."
    return 1
  fi
  if looks_like_html "$PART"; then
    web_page_error "$PART"
    return 1
  fi
  if [[ -n $END_TOTAL ]] && ((size != END_TOTAL)); then
    if ((size > END_TOTAL)); then
      mv -f -- "$PART" "$FINAL.bad" || rm -f -- "$PART"
      err "$SPLIT: $NAME came out $size bytes, expected $END_TOTAL: moved to $FINAL.bad. The server" \
        "sent more than the file's length; rerun to download it again, or check DOWNLOAD_URL_$SUF."
    else
      err "$SPLIT: $NAME is incomplete: $size of $END_TOTAL bytes. Rerun to continue."
    fi
    return 1
  fi
  if ((verify)) && [[ -n $EXP_MD5 ]]; then
    log "$SPLIT: checking the MD5 of $NAME ($(human "$size"))"
    actual=$(md5_of "$PART") || { err "$SPLIT: cannot read $PART to check its MD5; rerun"; return 1; }
    if [[ $actual != "$EXP_MD5" ]]; then
      if ! mv -f -- "$PART" "$FINAL.bad"; then
        err "$SPLIT: checksum mismatch for $NAME, and it cannot be moved to $FINAL.bad: remove $PART and rerun"
        return 1
      fi
      err "$SPLIT: checksum mismatch for $NAME: expected MD5 $EXP_MD5 ($MD5_FROM), got $actual." \
        "The file was moved to $FINAL.bad and nothing was written under its final name. Rerun to" \
        "download it again (delete $NAME.bad when you no longer need it); if this link is a" \
        "mirror you trust, set MD5_$SUF=$actual in $URLS_FROM."
      return 1
    fi
  fi
  sync -- "$PART" 2>/dev/null || true
  if ! mv -f -- "$PART" "$FINAL"; then
    err "$SPLIT: cannot rename $PART to $FINAL; check the permissions of $DL and rerun"
    return 1
  fi
  remove_segments
  if ((verify)) && [[ -n $EXP_MD5 ]]; then
    write_md5_marker
    log "$SPLIT: done: $FINAL ($(human "$size"), MD5 $EXP_MD5 verified)"
  else
    log "$SPLIT: done: $FINAL ($(human "$size"), MD5 not checked: --no-verify)"
  fi
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
  if ((!verify)) || [[ -z $EXP_MD5 ]]; then
    remove_segments  # pieces of an older run are of no use beside a finished file
    log "$SPLIT: already done: $FINAL is present ($(human "$size"), MD5 not checked: --no-verify)"
    return 0
  fi
  if [[ -f $marker && ! $FINAL -nt $marker ]]; then
    read -r line _ <"$marker" || true
    if [[ $line == "$EXP_MD5" ]]; then
      remove_segments
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

# Everything about one split; runs in its own process (see main).
download_split() {
  SPLIT=$1
  SUF=${SUFFIX[$SPLIT]}
  local urlvar="DOWNLOAD_URL_$SUF" md5var="MD5_$SUF" sizevar="SIZE_$SUF"
  URL=${!urlvar} URL_FROM=$(where "$urlvar")
  NAME=$(url_name "$URL")
  HOST=$(url_host "$URL")
  SHOW="$NAME from $HOST"
  FINAL=$DL/$NAME PART=$DL/$NAME.part
  if [[ -n ${!md5var:-} ]]; then
    EXP_MD5=${!md5var,,} MD5_FROM="MD5_$SUF in $(where "$md5var")"
    EXP_SIZE=${!sizevar:-}
  else
    EXP_MD5=${KNOWN_MD5[$NAME]:-} MD5_FROM="the official checksum"
    EXP_SIZE=${!sizevar:-${KNOWN_SIZE[$NAME]:-}}
  fi
  local me=$BASHPID rc=0 watchdog  # (the arguments of a command run with & expand in the child)
  watch_main "$$" "$me" "$FINAL.lock" &
  watchdog=$!
  if take_lock; then
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

# take_lock: flock NAME.lock; make sure it is the file under that name (another process may
# have removed it in between), so that removing it when done is safe.
take_lock() {
  local i ino rc
  for i in 1 2 3 4 5; do
    exec {LOCKFD}>>"$FINAL.lock"
    rc=0
    flock -w "$LOCK_WAIT" -E 75 "$LOCKFD" 2>/dev/null || rc=$?
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
  local sizevar="SIZE_$SUF" rc=0 part_size t0 t1
  if [[ -e $FINAL ]]; then
    check_final
    return
  fi
  if extracted_by_01 "$root" "$SPLIT" "$NAME"; then
    log "$SPLIT: already done (extracted into $root/$SPLIT by 01_unzip.sh; the archive was removed)"
    if [[ -e $PART ]]; then
      log "$SPLIT: $PART ($(human "$(fsize "$PART")")) is not needed: delete it (and $NAME.part.*) to free the space"
    fi
    return 0
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
        "to another file, or the server misreports the length. Check DOWNLOAD_URL_$SUF in $URL_FROM."
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
    fetch_body || return 1
    t1=$(now)
    log "$SPLIT: fetched $(($(fsize "$PART") - part_size)) bytes in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s"
  fi
  finish_file
}

# fetch_body: NAME.part gets the whole file, over several connections if asked (http) or if pieces
# of an earlier run are there (any link that can serve byte ranges: they are used, not left behind).
fetch_body() {
  local n=$connections
  [[ $URL == http://* || $URL == https://* ]] || n=1
  if [[ -n $END_TOTAL ]] && { ((n > 1)) || [[ -n $(list_segments) ]]; }; then
    if [[ $RANGES == "" ]]; then probe 1 || return 1; fi
    if [[ $RANGES != no ]]; then
      download_segmented "$n"
      return
    fi
    log "$SPLIT: $HOST does not serve byte ranges: one connection, no resume"
    remove_segments
  elif ((connections > 1)); then
    log "$SPLIT: one connection for $SHOW (several need an http(s) link with a known size)"
  fi
  if [[ -n $(list_segments) ]]; then  # size unknown: the pieces cannot be placed
    log "$SPLIT: discarding the pieces of an earlier run ($HOST does not tell the size of $NAME)"
    remove_segments
  fi
  download_single
}

# on_signal: TERM, INT or HUP in the main process: stop the split's process group, remove its lock
# if nothing holds it any more, exit 130.
on_signal() {
  trap '' TERM INT HUP
  if [[ -n ${SPLIT_PID:-} ]]; then
    stop_group "$SPLIT_PID"
    drop_lock "$SPLIT_LOCK"
  fi
  log "interrupted; rerun the same command to continue where it stopped"
  exit 130
}

# on_stop: Ctrl-Z (TSTP) reaches the terminal's foreground group, the main process only: stop the
# split's group too, then this process. on_continue: fg / bg (CONT) continues the split's group.
on_stop() {
  if [[ -n ${SPLIT_PID:-} ]]; then kill -STOP -- "-$SPLIT_PID" 2>/dev/null || true; fi
  kill -STOP "$BASHPID"
}
on_continue() {
  if [[ -n ${SPLIT_PID:-} ]]; then kill -CONT -- "-$SPLIT_PID" 2>/dev/null || true; fi
}

# run_split SPLIT: download SPLIT in a process group of its own (see "processes" above) and wait for
# it; whatever way it ends, nothing of it is left running and its lock is not left held.
run_split() {
  local rc v="DOWNLOAD_URL_${SUFFIX[$1]}"
  SPLIT_LOCK=$DL/$(url_name "${!v}").lock
  set -m
  ( set -e; download_split "$1" ) &
  SPLIT_PID=$!
  set +m
  while :; do
    rc=0
    wait "$SPLIT_PID" || rc=$?
    ((rc > 128)) && alive "$SPLIT_PID" && continue  # a trap (Ctrl-Z, fg) interrupted the wait
    break
  done
  stop_group "$SPLIT_PID"
  drop_lock "$SPLIT_LOCK"
  SPLIT_PID=""
  return "$rc"
}

# --- main ------------------------------------------------------------------------------------------

parse_args() {
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
  if ! [[ $connections =~ ^[1-9][0-9]?$ ]] || ((connections > 32)); then
    usage_error "--connections must be a whole number from 1 to 32, not '$connections'"
  fi
  [[ $retries =~ ^[1-9][0-9]{0,8}$ ]] || usage_error "--retries must be a whole number >= 1, not '$retries'"
}

main() {
  local -a args=("$@")
  local s
  WANT=()
  parse_args "$@"
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
  check_knobs
  load_urls
  for s in "${WANT[@]}"; do check_settings "$s"; done  # every split, before fetching anything

  DL=$root/downloads
  mkdir -p -- "$DL" || die "cannot create $DL; check --root"
  [[ -w $DL ]] || die "cannot write to $DL; check --root and permissions"
  TMPD=$(mktemp -d "${TMPDIR:-/tmp}/00_download.XXXXXX") || die "cannot create a temporary folder"
  trap 'rm -rf -- "$TMPD"' EXIT
  trap 'on_signal' TERM INT HUP
  trap 'on_stop' TSTP
  trap 'on_continue' CONT
  CURL_BASE=(-L -f --connect-timeout "$CONNECT_TIMEOUT" --speed-limit "$SPEED_LIMIT" --speed-time "$SPEED_TIME")

  local -a failed=()
  for s in "${WANT[@]}"; do
    run_split "$s" || failed+=("$s")
  done
  local took=$((SECONDS - t_start))
  if ((${#failed[@]})); then
    log "failed: ${failed[*]} (messages above); took ${took}s. Rerun the same command to retry; finished files are kept."
    exit 1
  fi
  log "all done: ${WANT[*]} in $DL; took ${took}s"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
