"""The README's demo command: the whole pipeline on a generated release, then a rerun; the tree it
builds loads the way torchvision's ImageFolder loads it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

import minirelease
from conftest import TESTS, run

# torchvision.datasets.folder.IMG_EXTENSIONS
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's folder after its first run, and that run."""
    folder = tmp_path_factory.mktemp("demo")
    first = run(["bash", TESTS / "demo.sh", folder], timeout=170)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return folder, first


def image_folder(root: Path) -> tuple[dict[str, int], list[tuple[Path, int]]]:
    """What torchvision's ImageFolder(root) finds, without torchvision: every subfolder is a class,
    indexed 0..N-1 in sorted order; the samples are the files with an image extension below each
    class folder (links followed), walked in sorted order. A class without images is an error."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    class_to_idx = {c: i for i, c in enumerate(classes)}
    samples = []
    for c in classes:
        found = [(Path(d) / f, class_to_idx[c])
                 for d, _, files in sorted(os.walk(root / c, followlinks=True))
                 for f in sorted(files) if f.lower().endswith(IMG_EXTENSIONS)]
        assert found, "ImageFolder raises FileNotFoundError: no valid file in class %s" % c
        samples += found
    return class_to_idx, samples


def pil_loader(path: Path) -> Image.Image:
    """torchvision.datasets.folder.pil_loader."""
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


def test_demo_runs(demo):
    folder, first = demo
    root = folder / "root"
    expected = json.loads((folder / "release" / "expected.json").read_text())
    train = {d.name: sorted(f.name for f in d.iterdir()) for d in (root / "train").iterdir()
             if d.is_dir() and not d.name.startswith(".")}
    assert train == expected["train"]
    val = {f.name: d.name for d in (root / "val").iterdir() if d.is_dir() for f in d.iterdir()}
    assert val == expected["val"]
    assert sorted(f.name for f in (root / "test").iterdir()) == expected["test"]
    assert (root / "meta" / "synsets.csv").is_file()
    assert "result in %s" % root in first.stdout


@pytest.mark.parametrize("split", ["train", "val"])
def test_demo_tree_loads_like_imagefolder(demo, split):
    folder, _ = demo
    expected = json.loads((folder / "release" / "expected.json").read_text())
    index = {c["wnid"]: c["class_index"] for c in expected["classes"]}
    class_to_idx, samples = image_folder(folder / "root" / split)
    assert len(class_to_idx) == len(expected["classes"]) == 12
    assert class_to_idx == index            # sorted WNIDs -> 0..N-1, as in meta/synsets.csv
    if split == "train":
        want = {(name, index[wnid]) for wnid, names in expected["train"].items() for name in names}
    else:
        want = {(name, index[wnid]) for name, wnid in expected["val"].items()}
    assert sorted((p.name, target) for p, target in samples) == sorted(want)
    for path, _ in samples:
        image = pil_loader(path)             # decodes every pixel (convert loads the image)
        assert image.mode == "RGB"
        assert image.size == (minirelease.IMAGE_SIDE, minirelease.IMAGE_SIDE)


def test_demo_rerun_reports_already_done(demo):
    folder, _ = demo
    second = run(["bash", TESTS / "demo.sh", folder], timeout=120)
    assert second.returncode == 0, second.stderr[-3000:]
    out = second.stdout + second.stderr
    for stage in ("00_download", "01_unzip", "03_build_val"):
        assert stage in out
    assert out.lower().count("already done") >= 3, out[-3000:]
