"""Reading manifests and pairs files, groups, age bands and seeded subsets."""

from __future__ import annotations

from pathlib import Path

import pytest

from regard.errors import InvalidParameter
from regard.evaluation.dataset import Dataset, read_dataset


def _manifest(folder: Path, rows: list[str], header: str = "path,subject,sex,age,race") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return folder


def test_manifest_groups_and_age_bands(tmp_path: Path) -> None:
    folder = _manifest(
        tmp_path / "set",
        [
            "a1.jpg,s1,Female,4,Asian",
            "a2.jpg,s1,Female,15,Asian",
            "b1.jpg,s2,Male,39,White",
            "c1.jpg,s3,Male,40,",
            "d1.jpg,s4,Female,61,Black",
        ],
    )
    ds = read_dataset(folder)
    assert ds.has_identities
    assert ds.subjects == ["s1", "s1", "s2", "s3", "s4"]
    assert ds.group_values("age") == ["0-12", "13-19", "20-39", "40-59", "60+"]
    assert ds.group_values("race") == ["Asian", "Asian", "White", "unknown", "Black"]
    assert ds.group_values("race+sex")[0] == "Asian / Female"
    with pytest.raises(InvalidParameter):
        ds.group_values("height")


def test_age_bands_already_given_are_kept(tmp_path: Path) -> None:
    folder = _manifest(tmp_path / "ff", ["x.jpg,20-29,Male,White"], header="path,age,sex,race")
    ds = read_dataset(folder)
    assert not ds.has_identities
    assert ds.subjects == ["x.jpg"]  # every image its own person
    assert ds.group_values("age") == ["20-29"]


def test_limit_keeps_whole_subjects_and_is_seeded(tmp_path: Path) -> None:
    rows = [f"s{s}_{k}.jpg,s{s},Male,30,White" for s in range(20) for k in range(3)]
    folder = _manifest(tmp_path / "ids", rows)
    a = read_dataset(folder, limit=10, seed=7)
    b = read_dataset(folder, limit=10, seed=7)
    assert a.paths == b.paths
    assert len(a) == 12  # four whole subjects of three images
    assert all(a.subjects.count(s) == 3 for s in set(a.subjects))
    c = read_dataset(folder, limit=10, seed=8)
    assert c.paths != a.paths


def test_pairs_file_with_manifest_labels(tmp_path: Path) -> None:
    folder = _manifest(
        tmp_path / "p", ["a.jpg,s1,Male,30,White", "b.jpg,s1,Male,31,White", "c.jpg,s2,Female,5,Asian"]
    )
    (folder / "pairs.csv").write_text("path_a,path_b,same\na.jpg,b.jpg,1\na.jpg,c.jpg,0\n", encoding="utf-8")
    ds = read_dataset(folder / "pairs.csv")
    assert ds.paths == ["a.jpg", "b.jpg", "c.jpg"]
    assert ds.pairs == [(0, 1, True), (0, 2, False)]
    assert ds.group_values("sex") == ["Male", "Male", "Female"]


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameter):
        read_dataset(tmp_path)
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n", encoding="utf-8")
    with pytest.raises(InvalidParameter):
        read_dataset(tmp_path / "bad.csv")


def test_keep_subject_filters_before_limit(tmp_path: Path) -> None:
    rows = [f"s{s}_{k}.jpg,s{s},Male,30,White" for s in range(6) for k in range(2)]
    folder = _manifest(tmp_path / "ids", rows)
    ds = read_dataset(folder, keep_subject=lambda s: s in {"s1", "s4"})
    assert ds.paths == ["s1_0.jpg", "s1_1.jpg", "s4_0.jpg", "s4_1.jpg"]
    # Without identities every image is its own subject: the selection goes by path.
    plain = _manifest(
        tmp_path / "noids", ["x.jpg,20-29,Male,White", "y.jpg,30-39,Male,White"], header="path,age,sex,race"
    )
    assert read_dataset(plain, keep_subject=lambda s: s == "y.jpg").paths == ["y.jpg"]
    with pytest.raises(InvalidParameter):
        read_dataset(plain, keep_subject=lambda s: False)


def test_held_apart_keeps_the_samples_kept_out_of_fitting(tmp_path: Path) -> None:
    from regard.evaluation import held_apart_keep
    from regard.scoring.calibrate import held_apart, is_held_apart

    rows = [f"s{s}_{k}.jpg,s{s},Male,30,White" for s in range(60) for k in range(2)]
    subjects = [f"s{s}" for s in range(60)]
    for name, fold in (("celeba_dev", 3), ("other_set", 2)):
        folder = _manifest(tmp_path / name, rows)
        ds = read_dataset(folder, keep_subject=held_apart_keep(folder))
        kept = sorted(set(ds.subjects))
        assert kept == sorted(s for s in subjects if held_apart(s, fold))
        assert kept == sorted(s for s in subjects if is_held_apart(name, s))
        assert 0 < len(kept) < 60
    # celeba_dev keeps a third, every other set half: the two selections differ on these subjects.
    assert {s for s in subjects if held_apart(s, 3)} != {s for s in subjects if held_apart(s, 2)}
    # A set without identities: half of its images, chosen by path; a trailing slash changes nothing.
    images = [f"img{i}.jpg,20-29,Female,Black" for i in range(40)]
    folder = _manifest(tmp_path / "crops", images, header="path,age,sex,race")
    ds = read_dataset(folder, keep_subject=held_apart_keep(Path(str(folder) + "/")))
    assert ds.paths == [f"img{i}.jpg" for i in range(40) if held_apart(f"img{i}.jpg", 2)]
    # A pairs file keeps the pairs whose two images are both held apart.
    pairs = ["path_a,path_b,same"] + [
        f"s{a}_0.jpg,s{b}_1.jpg,{int(a == b)}" for a in range(12) for b in range(12)
    ]
    (tmp_path / "other_set" / "pairs.csv").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    listed = read_dataset(
        tmp_path / "other_set" / "pairs.csv",
        keep_subject=held_apart_keep(tmp_path / "other_set" / "pairs.csv"),
    )
    assert listed.pairs
    assert all(
        held_apart(listed.subjects[a], 2) and held_apart(listed.subjects[b], 2) for a, b, _ in listed.pairs
    )
    assert len(listed.pairs) == sum(held_apart(f"s{i}", 2) for i in range(12)) ** 2


def test_template_cache_is_keyed_by_the_detector_and_its_version() -> None:
    from regard.config import Settings
    from regard.evaluation.dataset import TemplateSource, cache_prefix
    from regard.face.engine import Engine

    data = Dataset(Path("."), "d", ["a.jpg"], ["s"], True, {}, None)
    keys = {}
    for detector in ("hog", "mtcnn"):
        engine = Engine(Settings.from_env(detector=detector))
        identity = TemplateSource(engine).identity()
        assert identity["detector_version"] == engine.detector().version
        keys[detector] = cache_prefix(identity, data)
        identity["detector_version"] += "+changed"
        assert cache_prefix(identity, data) != keys[detector]  # a new detector version, new templates
    assert keys["hog"] != keys["mtcnn"]
