#!/usr/bin/env python3
"""02_convert_meta_clsloc.py — not implemented yet (see the issue tracker)."""
import sys


def main(argv=None) -> int:
    print("usage: 02_convert_meta_clsloc.py [options]   (not implemented yet)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
