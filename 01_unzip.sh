#!/usr/bin/env bash
# 01_unzip.sh — not implemented yet (see the issue tracker).
set -euo pipefail
echo "usage: 01_unzip.sh [options] SPLIT...   (not implemented yet)" >&2
exit 2
