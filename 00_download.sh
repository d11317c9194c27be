#!/usr/bin/env bash
# 00_download.sh — not implemented yet (see the issue tracker).
set -euo pipefail
echo "usage: 00_download.sh [options] SPLIT...   (not implemented yet)" >&2
exit 2
