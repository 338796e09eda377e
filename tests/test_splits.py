"""Tests of prostseg.preparation.splits: patient-level splits and their JSON files."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prostseg.errors import InputError
from prostseg.preparation.splits import PatientSplit, leave_one_out, patients_across_parts, read_patient_ids, split_patients

FEW = settings(max_examples=50, deadline=None)

case_id_lists = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=60, unique=True)
fraction_pairs = st.tuples(st.floats(0, 0.45), st.floats(0, 0.45))


def _parts(split: PatientSplit) -> list[tuple[str, ...]]:
    return [split.train, split.val, split.test]


@FEW
@given(case_ids=case_id_lists, fractions=fraction_pairs, seed=st.integers(0, 2**32))
def test_every_patient_is_in_exactly_one_part(case_ids, fractions, seed):
    split = split_patients(case_ids, val_fraction=fractions[0], test_fraction=fractions[1], seed=seed)
    everyone = [case_id for part in _parts(split) for case_id in part]
    assert sorted(everyone) == sorted(case_ids)  # covering, and no patient twice
    assert split.train and split.seed == seed


@FEW
@given(case_ids=case_id_lists, seed=st.integers(0, 1000), data=st.data())
def test_split_is_deterministic_and_independent_of_input_order(case_ids, seed, data):
    shuffled = data.draw(st.permutations(case_ids))
    assert split_patients(case_ids, seed=seed) == split_patients(shuffled, seed=seed)
    assert split_patients(iter(case_ids), seed=seed) == split_patients(tuple(case_ids), seed=seed)


@FEW
@given(n_cases=st.integers(10, 200), fractions=fraction_pairs)
def test_part_sizes_follow_the_fractions(n_cases, fractions):
    val_fraction, test_fraction = fractions
    split = split_patients([f"case{i}" for i in range(n_cases)], val_fraction=val_fraction, test_fraction=test_fraction)
    for part, fraction in [(split.val, val_fraction), (split.test, test_fraction)]:
        if fraction == 0:
            assert not part
        else:
            assert len(part) >= 1
            assert len(part) <= max(1, n_cases * fraction + 0.5 + 1e-9)
            assert len(part) >= n_cases * fraction - 0.5 - 1e-9


@pytest.mark.parametrize(
    "n_cases, sizes",
    [(1, (1, 0, 0)), (2, (1, 0, 1)), (3, (1, 1, 1)), (4, (2, 1, 1)), (10, (6, 2, 2)), (20, (14, 3, 3))],
)
def test_part_sizes_for_small_datasets_with_default_fractions(n_cases, sizes):
    split = split_patients([f"p{i}" for i in range(n_cases)])
    assert tuple(len(part) for part in _parts(split)) == sizes


def test_zero_fractions_put_everyone_in_train():
    split = split_patients(["a", "b", "c"], val_fraction=0, test_fraction=0)
    assert split.train == ("a", "b", "c") and not split.val and not split.test


def test_different_seeds_give_different_splits():
    case_ids = [f"ProstateX-{i:04d}" for i in range(60)]
    splits = {split_patients(case_ids, seed=seed).test for seed in range(5)}
    assert len(splits) > 1


def test_adding_a_patient_moves_few_others():
    case_ids = [f"case{i:03d}" for i in range(100)]
    before = split_patients(case_ids, seed=3)
    after = split_patients(case_ids + ["case999"], seed=3)
    moved = sum(case_id not in after.train for case_id in before.train)
    assert moved <= 3


@pytest.mark.parametrize(
    "case_ids, message",
    [
        (["a", "b", "a", "c", "c"], "repeated: a, c"),
        ([], "no case ids"),
        (["a", 3], "non-empty strings"),
        (["a", ""], "non-empty strings"),
    ],
)
def test_split_patients_rejects_bad_ids(case_ids, message):
    with pytest.raises(ValueError, match=message):
        split_patients(case_ids)


@pytest.mark.parametrize(
    "kwargs", [{"val_fraction": -0.1}, {"test_fraction": 1.0}, {"val_fraction": 0.5, "test_fraction": 0.5}]
)
def test_split_patients_rejects_bad_fractions(kwargs):
    with pytest.raises(ValueError, match="fractions"):
        split_patients(["a", "b", "c"], **kwargs)


@pytest.mark.parametrize("seed", [None, 1.5, True, "0"])
def test_split_patients_rejects_non_int_seeds(seed):
    with pytest.raises(ValueError, match="seed"):
        split_patients(["a", "b"], seed=seed)


# --- PatientSplit ----------------------------------------------------------------------


def test_patient_split_sorts_its_parts():
    split = PatientSplit(train=["c", "a"], val=("b",), test=[], seed=7)
    assert split.train == ("a", "c") and split.val == ("b",) and split.test == ()
    assert split == PatientSplit(train=["a", "c"], val=["b"], test=(), seed=7)


def test_patient_split_refuses_a_patient_in_two_parts():
    with pytest.raises(ValueError, match=r"more than one part: p2 \(train, test\)"):
        PatientSplit(train=["p1", "p2"], val=[], test=["p2"], seed=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"train": [], "val": ["a"], "test": []}, "training part is empty"),
        ({"train": ["a", "a"], "val": [], "test": []}, "repeated: a"),
        ({"train": "abc", "val": [], "test": []}, "string"),
    ],
)
def test_patient_split_rejects_bad_parts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PatientSplit(**kwargs, seed=None)


def test_patient_split_is_immutable():
    split = PatientSplit(train=["a"], val=[], test=[], seed=None)
    with pytest.raises(AttributeError):
        split.train = ("b",)


# --- JSON files ----------------------------------------------------------------------


@FEW
@given(case_ids=case_id_lists, seed=st.integers(0, 2**40))
def test_json_round_trip(tmp_path_factory, case_ids, seed):
    path = tmp_path_factory.mktemp("split") / "split.json"
    split = split_patients(case_ids, seed=seed)
    assert split.to_json(path) == path
    assert PatientSplit.from_json(path) == split


def test_json_file_layout(tmp_path):
    path = PatientSplit(train=["b", "a"], val=["c"], test=["d"], seed=11).to_json(tmp_path / "runs" / "split.json")
    assert json.loads(path.read_text(encoding="utf-8")) == {"seed": 11, "train": ["a", "b"], "val": ["c"], "test": ["d"]}


def test_to_json_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "split.json"
    path.write_text("user file")
    split = PatientSplit(train=["a"], val=[], test=[], seed=0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        split.to_json(path)
    assert path.read_text(encoding="utf-8") == "user file"
    split.to_json(path, overwrite=True)
    assert PatientSplit.from_json(path) == split


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"seed": 0, "train": ["a"], "val": []}', r"missing \['test'\]"),
        ('{"seed": 0, "train": ["a"], "val": [], "test": [], "extra": 1}', r"unknown \['extra'\]"),
        ('{"seed": 0, "train": ["a", "b"], "val": ["b"], "test": []}', r"more than one part: b \(train, val\)"),
        ('{"seed": 0, "train": "a", "val": [], "test": []}', "must be a list"),
        ('{"seed": 0, "train": ["a", 2], "val": [], "test": []}', "non-empty strings"),
        ('{"seed": "zero", "train": ["a"], "val": [], "test": []}', "seed must be"),
        ('{"seed": 0, "train": [], "val": ["a"], "test": []}', "training part is empty"),
        ('["a", "b"]', "expected a JSON object"),
        ('{"seed": 0, "train": [', "not a JSON split file"),
    ],
)
def test_from_json_names_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "broken_split.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as raised:
        PatientSplit.from_json(path)
    assert raised.value.path == str(path)
    assert str(raised.value).startswith(str(path))


def test_from_json_of_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        PatientSplit.from_json(tmp_path / "nope.json")


# --- leave-one-out -------------------------------------------------------------------


@FEW
@given(case_ids=st.lists(st.text(min_size=1, max_size=8), min_size=2, max_size=12, unique=True))
def test_leave_one_out_tests_each_patient_once(case_ids):
    splits = leave_one_out(case_ids)
    assert [split.test for split in splits] == [(case_id,) for case_id in sorted(case_ids)]
    for split in splits:
        assert not split.val and split.seed is None
        assert sorted(split.train + split.test) == sorted(case_ids)


def test_leave_one_out_on_three_cases():
    splits = leave_one_out(["ProstateX-0199", "ProstateX-0101", "ProstateX-0152"])
    assert [(split.train, split.test) for split in splits] == [
        (("ProstateX-0152", "ProstateX-0199"), ("ProstateX-0101",)),
        (("ProstateX-0101", "ProstateX-0199"), ("ProstateX-0152",)),
        (("ProstateX-0101", "ProstateX-0152"), ("ProstateX-0199",)),
    ]


@pytest.mark.parametrize("case_ids, message", [(["only"], "at least 2"), (["a", "a"], "repeated: a")])
def test_leave_one_out_rejects_bad_input(case_ids, message):
    with pytest.raises(ValueError, match=message):
        leave_one_out(case_ids)


# --- slice-level splits and leakage -------------------------------------------------

import numpy as np  # noqa: E402

from prostseg.preparation.splits import patient_split_slices, slice_leakage, slice_level_split  # noqa: E402


@FEW
@given(counts=st.dictionaries(st.text(min_size=1, max_size=6), st.integers(1, 30), min_size=1, max_size=8),
       fraction=st.floats(0.05, 0.95), seed=st.integers(0, 1000))
def test_slice_level_split_covers_every_slice_once(counts, fraction, seed):
    parts = slice_level_split(counts, test_fraction=fraction, seed=seed)
    everything = parts["train"] + parts["test"]
    assert sorted(everything) == sorted((case_id, k) for case_id, n in counts.items() for k in range(n))
    assert len(parts["test"]) == max(1, math.floor(len(everything) * fraction + 0.5))
    assert parts == slice_level_split(dict(reversed(list(counts.items()))), test_fraction=fraction, seed=seed)


def test_slice_level_split_rejects_bad_input():
    with pytest.raises(ValueError, match="test_fraction"):
        slice_level_split({"p1": 3}, test_fraction=1.0)
    with pytest.raises(ValueError, match="at least one slice"):
        slice_level_split({"p1": 0})


def test_patient_split_slices_keep_patients_together():
    split = PatientSplit(train=["a", "b"], val=["c"], test=["d"], seed=None)
    parts = patient_split_slices(split, {"a": 2, "b": 1, "c": 3, "d": 2, "unused": 5})
    assert parts == {"train": [("a", 0), ("a", 1), ("b", 0)], "val": [("c", 0), ("c", 1), ("c", 2)],
                     "test": [("d", 0), ("d", 1)]}
    with pytest.raises(ValueError, match="no slice count for cases d"):
        patient_split_slices(split, {"a": 2, "b": 1, "c": 3})


def test_slice_leakage_counts_patients_and_adjacent_slices():
    train = [("a", 0), ("a", 2), ("b", 0)]
    test = [("a", 1), ("a", 4), ("c", 0)]
    leak = slice_leakage(train, test)
    assert leak.test_slices == 3
    assert leak.patient_in_train == pytest.approx(2 / 3)  # a/1 and a/4
    assert leak.neighbour_in_train == pytest.approx(1 / 3)  # only a/1 (a/0 and a/2 are in train)
    assert leak.nearest_same_patient is None and leak.nearest_correlation is None
    with pytest.raises(ValueError, match="at least one"):
        slice_leakage(train, [])


def _smooth_patients(n_patients: int, n_slices: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Volumes whose slices change slowly along z, each patient a different random pattern."""
    rng = np.random.default_rng(seed)
    volumes = {}
    for index in range(n_patients):
        start, end = rng.random((2, 16, 16))
        weights = np.linspace(0, 1, n_slices)
        volumes[f"p{index}"] = start[..., None] * (1 - weights) + end[..., None] * weights
    return volumes


def test_nearest_training_slice_reveals_a_slice_level_split():
    volumes = _smooth_patients(6, 12)
    counts = {case_id: volume.shape[2] for case_id, volume in volumes.items()}
    by_slice = slice_level_split(counts, test_fraction=0.2, seed=1)
    leaky = slice_leakage(by_slice["train"], by_slice["test"], volumes, size=16)
    assert leaky.nearest_same_patient == 1.0 and leaky.nearest_correlation > 0.95
    split = PatientSplit(train=["p0", "p1", "p2", "p3"], val=[], test=["p4", "p5"], seed=None)
    by_patient = patient_split_slices(split, counts)
    honest = slice_leakage(by_patient["train"], by_patient["test"], volumes, size=16)
    assert (honest.patient_in_train, honest.neighbour_in_train, honest.nearest_same_patient) == (0.0, 0.0, 0.0)
    assert honest.nearest_correlation < leaky.nearest_correlation
    row = honest.to_dict()
    assert row == {"test slices": honest.test_slices, "patient in train": 0.0, "neighbour in train": 0.0,
                   "nearest: same patient": 0.0, "nearest: correlation": honest.nearest_correlation}
    with pytest.raises(ValueError, match="no volume for cases p5"):
        slice_leakage(by_patient["train"], by_patient["test"], {k: v for k, v in volumes.items() if k != "p5"})


# --- several examinations per patient (PI-CAI ids) -----------------------------------


def _picai_cases() -> dict[str, str]:
    """60 patients with 1 to 3 studies each, ``<patient>_<study>`` as in PI-CAI."""
    rng = np.random.default_rng(3)
    cases = {}
    for patient in range(10000, 10060):
        for study in rng.choice(np.arange(1000000, 1000100), size=rng.integers(1, 4), replace=False):
            cases[f"{patient}_{study}"] = str(patient)
    return cases


@pytest.mark.parametrize("seed", range(5))
def test_no_patient_crosses_a_split_of_picai_style_cases(seed):
    cases = _picai_cases()
    split = split_patients(cases, seed=seed, patient_ids=cases)
    assert patients_across_parts(split, cases) == []
    parts = [{cases[c] for c in getattr(split, name)} for name in ("train", "val", "test")]
    assert [len(p) for p in parts] == [42, 9, 9]  # sizes count patients, not cases
    assert set(split.train + split.val + split.test) == set(cases)


def test_splitting_picai_cases_as_patients_would_leak():
    # The test above is not vacuous: grouping by case id puts studies of one patient apart.
    cases = _picai_cases()
    assert any(patients_across_parts(split_patients(cases, seed=seed), cases) for seed in range(5))


def test_patient_ids_come_from_patients_json(tmp_path):
    cases = _picai_cases()
    assert read_patient_ids(tmp_path, cases) == {case: case for case in cases}
    (tmp_path / "patients.json").write_text(json.dumps(cases))
    assert read_patient_ids(tmp_path, cases) == cases
    (tmp_path / "patients.json").write_text(json.dumps({"10000_1": "10000"}))
    with pytest.raises(InputError, match="no patient id for case"):
        read_patient_ids(tmp_path, cases)
    (tmp_path / "patients.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="patients.json: expected a JSON object"):
        read_patient_ids(tmp_path, cases)
