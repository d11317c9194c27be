"""imagenet_prep: the code shared by the numbered scripts (00_download.sh ... 05_pack_squashfs.py).

The scripts are thin entry points; each stage's logic lives in a module of its own here. Nothing
runs at import time.
"""
