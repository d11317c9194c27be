#!/usr/bin/env python3
"""03_build_val_class_folders.py — not implemented yet (see the issue tracker)."""
import sys


def main(argv=None) -> int:
    print("usage: 03_build_val_class_folders.py [options]   (not implemented yet)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
