"""imagenet_prep.sourceread on the miniature source releases of tests/sourcerelease.py: every layout
of both sources gives the image-net.org route's images, byte for byte, under their canonical
names; a flipped byte or a name that does not fit stops it, naming the file and member."""
from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import sourcerelease
from conftest import TESTS
from imagenet_prep.console import PrepError
from imagenet_prep.sourceread import hf_parquet_entries, hf_tar_entries, kaggle_entries
from imagenet_prep.tarstream import Source
from imagenet_prep.zipread import ZipDirectory, file_range


@pytest.fixture(scope="module")
def images(release) -> dict[str, bytes]:
    return sourcerelease.release_images(release)


def collect(entries) -> dict[str, tuple[bytes, object]]:
    out = {}
    for e in entries:
        assert e.named.path not in out
        out[e.named.path] = (b"".join(e.chunks()), e.named.wnid)
        assert len(out[e.named.path][0]) == e.size
    return out


def expected(release, images, kaggle: bool = False) -> dict[str, tuple[bytes, object]]:
    """What a source must give: the images; train with its class, val with its label where the
    source's names carry it (the Hub's), test with none."""
    out = {}
    for path, data in images.items():
        split, _, rest = path.partition("/")
        wnid = rest.split("/")[0] if split == "train" else \
            (None if kaggle else release.val[rest]) if split == "val" else None
        out[path] = (data, wnid)
    return out


def read_hub_targz(layout) -> dict:
    got = {}
    for f in layout.files:
        with open(f.local, "rb") as raw:
            got.update(collect(hf_tar_entries(raw, f.split, f.path)))
    return got


def read_kaggle(path: Path, first: int = 0) -> dict:
    with open(path, "rb") as f:
        d = ZipDirectory(path.stat().st_size, file_range(f), path.name)
        src = Source(f, seekable=False)
        src.skip_to(d.start_of(first))
        return collect(kaggle_entries(d, src, first))


@pytest.mark.parametrize("prefix", ["", "split"])
def test_the_hubs_tar_gz_layout(release, images, tmp_path, prefix):
    layout = sourcerelease.make_hf_targz(release, tmp_path, prefix=prefix, images=images)
    assert read_hub_targz(layout) == expected(release, images)


def test_the_hubs_parquet_layout(release, images, tmp_path):
    layout = sourcerelease.make_hf_parquet(release, tmp_path, images=images)
    got = {}
    for f in layout.files:
        got.update(collect(hf_parquet_entries(str(f.local), f.split, release.wnids_sorted)))
    assert got == expected(release, images)


@pytest.mark.parametrize("shape, zip64", [("inline", False), ("nested", False), ("inline", True)])
def test_the_kaggle_zip(release, images, tmp_path, shape, zip64):
    z = sourcerelease.make_kaggle_zip(release, tmp_path, shape, force_zip64=zip64, images=images)
    got = read_kaggle(z.file.local)
    kept = {p: got.pop(p)[0] for p in list(got) if p.startswith("kaggle/")}
    assert got == expected(release, images, kaggle=True)
    assert sorted(kept) == ["kaggle/LOC_sample_submission.csv", "kaggle/LOC_synset_mapping.txt",
                            "kaggle/LOC_train_solution.csv", "kaggle/LOC_val_solution.csv"]


def test_a_kaggle_stream_resumed_after_some_members(release, images, tmp_path):
    z = sourcerelease.make_kaggle_zip(release, tmp_path, images=images)
    whole = read_kaggle(z.file.local)
    with open(z.file.local, "rb") as f:
        d = ZipDirectory(z.file.size, file_range(f), "k.zip")
        names = [e.name for e in d.in_file_order()]
    k = names.index(next(n for n in names if "Data/CLS-LOC/val/" in n))     # the first val image
    rest = read_kaggle(z.file.local, first=k)
    assert set(rest) < set(whole) and all(not p.startswith("train/") for p in rest)
    assert {p: whole[p] for p in rest} == rest


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_a_hub_tar_gz(release, images, tmp_path):
    layout = sourcerelease.make_hf_targz(release, tmp_path, images=images)
    f = layout.files[0]
    flip(f.local, f.size // 2)
    with pytest.raises(PrepError, match="data/train_images_0.tar.gz: .*(corrupt|CRC-32 mismatch)"):
        read_hub_targz(layout)


def test_a_flipped_byte_in_the_kaggle_zip_names_the_member(release, images, tmp_path):
    z = sourcerelease.make_kaggle_zip(release, tmp_path, images=images)
    with open(z.file.local, "rb") as f:
        d = ZipDirectory(z.file.size, file_range(f), "k.zip")
        e = next(e for e in d.in_file_order() if e.name.endswith(".JPEG") and e.method == 0)
    flip(z.file.local, e.offset + 30 + len(e.raw_name) + 40)
    with pytest.raises(PrepError, match="member %s: CRC-32 mismatch" % e.name):
        read_kaggle(z.file.local)


def test_a_flipped_byte_in_the_nested_tar_gz(release, images, tmp_path):
    z = sourcerelease.make_kaggle_zip(release, tmp_path, "nested", images=images)
    with open(z.file.local, "rb") as f:
        d = ZipDirectory(z.file.size, file_range(f), "k.zip")
        e = next(e for e in d.in_file_order() if e.name.endswith(".tar.gz"))
    flip(z.file.local, e.offset + 30 + len(e.raw_name) + e.csize // 2)
    with pytest.raises(PrepError, match="imagenet_object_localization_patched2019.tar.gz"):
        read_kaggle(z.file.local)


def test_names_that_do_not_fit_stop_the_reading(release, images, tmp_path):
    layout = sourcerelease.make_hf_targz(release, tmp_path, images=images)
    val = next(f for f in layout.files if f.split == "val")
    with open(val.local, "rb") as raw, pytest.raises(PrepError, match="this looks like a val image"):
        collect(hf_tar_entries(raw, "train", "data/val_images.tar.gz"))
    odd = tmp_path / "odd.tar.gz"
    with gzip.open(odd, "wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in (("n01440764_1_n01440764.JPEG", b"x"), ("link.JPEG", None)):
            ti = tarfile.TarInfo(name)
            if data is None:
                ti.type, ti.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(ti)
            else:
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
    said = "member link.JPEG -> /etc/passwd is a symbolic link"
    with open(odd, "rb") as raw, pytest.raises(PrepError, match=said):
        collect(hf_tar_entries(raw, "train", "odd.tar.gz"))


def test_a_parquet_label_that_disagrees_with_its_name(release, images, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    layout = sourcerelease.make_hf_parquet(release, tmp_path, images=images)
    f = next(f for f in layout.files if f.split == "val")
    table = pq.read_table(f.local)
    labels = table.column("label").to_pylist()
    labels[1] = (labels[1] + 1) % len(release.classes)
    pq.write_table(table.set_column(1, "label", pa.array(labels, pa.int64())), f.local)
    with pytest.raises(PrepError, match=r"row 1 \(ILSVRC2012_val_.*\): its label .* its name says"):
        collect(hf_parquet_entries(str(f.local), "val", release.wnids_sorted))


def test_sourcerelease_runs_on_its_own(tmp_path):
    r = subprocess.run([sys.executable, str(TESTS / "sourcerelease.py"), str(tmp_path), "--classes", "3",
                        "--prefix", "images/"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("hf tar.gz") == 5 and r.stdout.count("hf parquet") == 7
    assert (tmp_path / "kaggle-nested" / sourcerelease.KAGGLE_ZIP).is_file()
    with tarfile.open(tmp_path / "hf-targz" / "data" / "val_images.tar.gz") as t:
        assert t.getnames()[0] == "images" and t.getnames()[1].startswith("images/ILSVRC2012_val_")
