"""imagenet_prep/facts.py: the release facts as the package reads them (release.tsv, hf_release.tsv)."""
from __future__ import annotations

from imagenet_prep import facts


def test_the_hub_tar_revision_holds_seven_files_of_the_published_total():
    revision, rows = facts.hf_release()
    assert revision == "1500f8c59b214ce459c0a593fa1c87993aeb7700"
    assert [len(facts.hf_files(s)) for s in ("train", "val", "test")] == [5, 1, 1]
    assert sum(f.size for f in rows) == 166_009_941_208          # sources.md: the bytes in all
    assert len({f.path for f in rows}) == 7 and all(f.path.startswith("data/") for f in rows)


def test_release_rows_keep_their_facts():
    assert facts.official("train").size == 147_897_477_120
    assert facts.official("val").md5 == "29b22e2961454d5413ddabcf34fc5622"
    assert facts.images("test") == 100_000
