import hashlib

import pytest

from training.data.keys import is_test_concept, is_val_concept, normalize_key, seed_for


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1f600", "1F600"),
        ("1F600", "1F600"),
        ("00a9-fe0f", "00A9"),
        ("a9-fe0f", "00A9"),
        ("A9", "00A9"),
        ("2764-FE0F-200D-1F525", "2764-200D-1F525"),
        ("1f468_200d_1f373", "1F468-200D-1F373"),
        (" 1F1EA-1F1EC ", "1F1EA-1F1EC"),
        ("0023-FE0F-20E3", "0023-20E3"),
    ],
)
def test_normalize_key_cases(raw: str, expected: str) -> None:
    assert normalize_key(raw) == expected


@pytest.mark.parametrize("raw", ["", "FE0F", "fox", "1F600-XYZ", "1234567"])
def test_normalize_key_rejects_invalid(raw: str) -> None:
    with pytest.raises(ValueError, match="emoji key|code point"):
        normalize_key(raw)


def test_test_concept_rule_is_sha1_mod_4() -> None:
    keys = [f"{code_point:04X}" for code_point in range(0x1F300, 0x1F300 + 2000)]
    for key in keys:
        expected = int(hashlib.sha1(key.encode()).hexdigest(), 16) % 4 == 0
        assert is_test_concept(key) == expected, key
    fraction = sum(map(is_test_concept, keys)) / len(keys)
    assert 0.22 < fraction < 0.28, fraction


def test_test_concept_known_keys() -> None:
    # Pinned so a change of hash or key spelling cannot silently reshuffle the benchmark.
    assert is_test_concept("1F601")
    assert is_test_concept("1F439")
    assert not is_test_concept("1F600")
    assert not is_test_concept("1F98A")


def test_val_concepts_about_ten_percent() -> None:
    keys = [f"{code_point:04X}" for code_point in range(0x1F300, 0x1F300 + 2000)]
    fraction = sum(map(is_val_concept, keys)) / len(keys)
    assert 0.08 < fraction < 0.12, fraction


def test_seed_for_is_stable() -> None:
    assert seed_for("captions", "noto", "1F600") == seed_for("captions", "noto", "1F600")
    assert seed_for("captions", "noto", "1F600") != seed_for("captions", "twemoji", "1F600")
    assert 0 <= seed_for("x") < 2**32
