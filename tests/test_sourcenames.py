"""imagenet_prep.sourcenames: the Hugging Face and Kaggle names and the canonical names they become."""
from __future__ import annotations

import pytest

from imagenet_prep.console import PrepError
from imagenet_prep.sourcenames import NESTED, HfNames, Named, hf_data_file, kaggle_member

W, V = "n01440764", "n01751748"


@pytest.mark.parametrize("split, name, want", [
    ("train", "n01440764_10026_n01440764.JPEG", Named("train/n01440764/n01440764_10026.JPEG", "train", W)),
    ("train", "train/n01440764_1_n01440764.JPEG", Named("train/n01440764/n01440764_1.JPEG", "train", W)),
    ("val", "ILSVRC2012_val_00000001_n01751748.JPEG", Named("val/ILSVRC2012_val_00000001.JPEG", "val", V)),
    ("val", "val_images/ILSVRC2012_val_00050000_n01440764.JPEG",
     Named("val/ILSVRC2012_val_00050000.JPEG", "val", W)),
    ("test", "ILSVRC2012_test_00000001.JPEG", Named("test/ILSVRC2012_test_00000001.JPEG", "test")),
    ("test", "test/ILSVRC2012_test_00100000.JPEG", Named("test/ILSVRC2012_test_00100000.JPEG", "test")),
])
def test_hub_names_become_the_canonical_ones(split, name, want):
    assert HfNames(split, "f.tar.gz").name(name) == want


@pytest.mark.parametrize("split, name, said", [
    ("train", "n01440764_10026_n01443537.JPEG",
     "train names must be WNID_<number>_WNID.JPEG with the same WNID"),
    ("train", "n01440764_10026.JPEG", "train names must be WNID_<number>_WNID.JPEG (the class appended"),
    ("train", "n01440764_10026_n01440764.jpg", "train names must be"),
    ("train", "n01440764_x_n01440764.JPEG", "train names must be"),
    ("train", "n01440764_١_n01440764.JPEG", "train names must be"),            # not an ASCII digit
    ("train", "ILSVRC2012_val_00000001_n01751748.JPEG", "this looks like a val image"),
    ("train", "a/b/n01440764_1_n01440764.JPEG", "at most one folder in front"),
    ("train", "../n01440764_1_n01440764.JPEG", "at most one folder in front"),
    ("train", "/n01440764_1_n01440764.JPEG", "at most one folder in front"),
    ("val", "ILSVRC2012_val_00000001.JPEG", "val names must be ILSVRC2012_val_<8 digits>_WNID.JPEG"),
    ("val", "ILSVRC2012_val_0000001_n01751748.JPEG", "val names must be"),
    ("val", "n01440764_1_n01440764.JPEG", "this looks like a train image"),
    ("test", "ILSVRC2012_test_00000001_n01440764.JPEG", "test names must be ILSVRC2012_test_<8 digits>.JPEG"),
    ("test", "ILSVRC2012_val_00000001_n01751748.JPEG", "this looks like a val image"),
])
def test_hub_names_that_do_not_fit_are_refused_by_name(split, name, said):
    with pytest.raises(PrepError) as e:
        HfNames(split, "f.tar.gz").name(name)
    assert "f.tar.gz: member %s refused: " % name in str(e.value) and said in str(e.value)


def test_one_folder_for_all_the_names_of_a_file():
    names = HfNames("train", "t.tar.gz")
    names.folder_entry("images/")
    names.name("images/n01440764_1_n01440764.JPEG")
    with pytest.raises(PrepError, match="it is in no folder, the names before it in folder images/"):
        names.name("n01440764_2_n01440764.JPEG")
    with pytest.raises(PrepError, match="it is in folder other/, the names before it in folder images/"):
        names.folder_entry("other")
    with pytest.raises(PrepError, match="member a/b refused: a folder"):
        HfNames("train", "t").folder_entry("a/b")


def test_a_parquet_rows_label_must_name_the_class_of_its_name():
    wnids = sorted([W, V, "n01443537"])
    names = HfNames("val", "v.parquet")
    assert names.row("ILSVRC2012_val_00000001_n01751748.JPEG", 2, wnids, 0).wnid == V
    cases = [(1, "its label 1 is class n01443537, its name says n01751748"),
             (3, r"its label 3 is not a class index \(0 to 2\)"), (-1, "not a class index"),
             (True, "is not a whole number"), ("2", "is not a whole number")]
    for label, said in cases:
        with pytest.raises(PrepError, match="v.parquet: row 5 .*" + said):
            names.row("ILSVRC2012_val_00000001_n01751748.JPEG", label, wnids, 5)
    test = HfNames("test", "t.parquet")
    got = test.row("ILSVRC2012_test_00000001.JPEG", -1, wnids, 0)
    assert got.path == "test/ILSVRC2012_test_00000001.JPEG"
    with pytest.raises(PrepError, match="a test image with label 0"):
        test.row("ILSVRC2012_test_00000001.JPEG", 0, wnids, 0)


def test_the_files_of_the_hubs_data_folder():
    assert hf_data_file("data/train_images_4.tar.gz") == ("tar.gz", "train")
    assert hf_data_file("data/val_images.tar.gz") == ("tar.gz", "val")
    assert hf_data_file("data/test_images.tar.gz") == ("tar.gz", "test")
    assert hf_data_file("data/train-00293-of-00294.parquet") == ("parquet", "train")
    assert hf_data_file("data/validation-00000-of-00014.parquet") == ("parquet", "val")
    for bad in ("data/train-00294-of-00294.parquet", "data/train_images_x.tar.gz", "data/README.md",
                "classes.py", "data/sub/val_images.tar.gz"):
        with pytest.raises(PrepError, match="pick another with --hf-revision"):
            hf_data_file(bad)


@pytest.mark.parametrize("name, want", [
    ("ILSVRC/Data/CLS-LOC/train/n01440764/n01440764_10026.JPEG",
     Named("train/n01440764/n01440764_10026.JPEG", "train", W)),
    ("ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000001.JPEG",
     Named("val/ILSVRC2012_val_00000001.JPEG", "val")),
    ("ILSVRC/Data/CLS-LOC/test/ILSVRC2012_test_00000001.JPEG",
     Named("test/ILSVRC2012_test_00000001.JPEG", "test")),
    ("LOC_synset_mapping.txt", Named("kaggle/LOC_synset_mapping.txt", "kaggle")),
    ("LOC_val_solution.csv", Named("kaggle/LOC_val_solution.csv", "kaggle")),
    ("LOC_train_solution.csv", Named("kaggle/LOC_train_solution.csv", "kaggle")),
    ("LOC_sample_submission.csv", Named("kaggle/LOC_sample_submission.csv", "kaggle")),
    ("imagenet_object_localization_patched2019.tar.gz",
     Named("imagenet_object_localization_patched2019.tar.gz", NESTED)),
    ("ILSVRC/", None), ("ILSVRC/Data/CLS-LOC/", None), ("ILSVRC/Data/CLS-LOC/train/n01440764/", None),
    ("ILSVRC/Annotations/CLS-LOC/train/n01440764/", None),
    ("ILSVRC/Annotations/CLS-LOC/train/n01440764/n01440764_18.xml", None),
    ("ILSVRC/Annotations/CLS-LOC/val/ILSVRC2012_val_00000001.xml", None),
    ("ILSVRC/ImageSets/CLS-LOC/train_cls.txt", None),
])
def test_kaggle_names(name, want):
    assert kaggle_member(name, "k.zip") == want


@pytest.mark.parametrize("name, said", [
    ("ILSVRC/Data/CLS-LOC/train/n01440764/n01443537_1.JPEG",
     "train images must be ILSVRC/Data/CLS-LOC/train/WNID"),
    ("ILSVRC/Data/CLS-LOC/train/n01440764.JPEG", "train images must be"),
    ("ILSVRC/Data/CLS-LOC/train/n01440764/x/n01440764_1.JPEG", "train images must be"),
    ("ILSVRC/Data/CLS-LOC/val/n01440764/ILSVRC2012_val_00000001.JPEG", "val images must be "
     "ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_<8 digits>.JPEG"),
    ("ILSVRC/Data/CLS-LOC/test/test/ILSVRC2012_test_00000001.JPEG", "test images must be "
     "ILSVRC/Data/CLS-LOC/test/ILSVRC2012_test_<8 digits>.JPEG"),
    ("ILSVRC/Data/CLS-LOC/val/../../../etc/passwd", "val images must be"),
    ("ILSVRC/Annotations/CLS-LOC/train/n01440764/n01443537_18.xml", "only ILSVRC/Data/CLS-LOC/"),
    ("ILSVRC/ImageSets/CLS-LOC/evil.sh", "only ILSVRC/Data/CLS-LOC/"),
    ("ILSVRC/Other/", "not a folder of the ILSVRC/ tree"),
    ("/", "not a folder of the ILSVRC/ tree"),
    ("README.txt", "LOC_*.csv / LOC_synset_mapping.txt belong here"),
    ("ILSVRC/devkit/data/meta.mat", "only ILSVRC/Data/CLS-LOC/"),
])
def test_kaggle_names_that_do_not_fit_are_refused_by_name(name, said):
    with pytest.raises(PrepError) as e:
        kaggle_member(name, "k.zip")
    assert "k.zip: member %s refused: " % name in str(e.value) and said in str(e.value)


def test_inside_the_nested_tar_gz_only_the_tree():
    tar = "k.zip: x.tar.gz"
    named = kaggle_member("ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000001.JPEG", tar, top=False)
    assert named.split == "val"
    for name in ("LOC_val_solution.csv", "imagenet_object_localization_patched2019.tar.gz"):
        with pytest.raises(PrepError, match="belong inside imagenet_object_localization_patched2019.tar.gz"):
            kaggle_member(name, tar, top=False)
