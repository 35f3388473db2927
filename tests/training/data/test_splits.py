from collections.abc import Callable

import pytest

from training.data.catalog import Concept
from training.data.keys import is_test_concept
from training.data.splits import (
    CORE_STYLES,
    PRETRAIN_STYLES,
    LeakError,
    check_no_leak,
    classification_splits,
    pretrain_captions,
    pretrain_split,
    retrieval_splits,
    select_classes,
)

ALL_STYLES = tuple(dict.fromkeys((*CORE_STYLES, *PRETRAIN_STYLES)))
# Vulcan salute has no openmoji-black drawing; fox's twemoji drawing failed the foreground filter.
ABSENT = {("openmoji-black", "1F596")}
FILTERED = {("twemoji", "1F98A"), ("twemoji", "1F439")}


def present(style: str, key: str) -> bool:
    return (style, key) not in ABSENT


def usable(style: str, key: str) -> bool:
    return present(style, key) and (style, key) not in FILTERED


def splits_for(concepts: list[Concept], min_concepts: int = 5) -> dict[str, list[dict]]:
    selection = select_classes(concepts, present, CORE_STYLES, min_concepts)
    splits = {"pretrain": pretrain_split(concepts, usable, ALL_STYLES)}
    splits.update(classification_splits(selection, usable, ALL_STYLES))
    splits.update(retrieval_splits(concepts, usable, ALL_STYLES, CORE_STYLES))
    return splits


def test_select_classes_threshold(concepts: list[Concept]) -> None:
    selection = select_classes(concepts, present, CORE_STYLES, 5)
    # hand-fingers-open has 5 concepts but one lacks a core style; food-fruit has only 2.
    assert selection.classes == ("animal-mammal", "face-smiling")
    assert len(selection.concepts["face-smiling"]) == 8
    assert "1F98A" in selection.concepts["animal-mammal"]  # filtered in twemoji, still present


def test_select_classes_ignores_non_core_styles(concepts: list[Concept]) -> None:
    only_noto_v1_missing = lambda style, key: style != "noto-v1"  # noqa: E731
    selection = select_classes(concepts, only_noto_v1_missing, CORE_STYLES, 5)
    assert selection.classes == ("animal-mammal", "face-smiling", "hand-fingers-open")


def test_classification_split_rules(concepts: list[Concept]) -> None:
    splits = splits_for(concepts)
    for split in ("id-train", "id-val"):
        assert splits[split], split
        assert all(not is_test_concept(row["concept"]) for row in splits[split])
        assert {row["style"] for row in splits[split]} == {"noto"}
    assert {row["concept"] for row in splits["id-val"]} == {"1F600", "1F606"}
    assert {row["concept"] for row in splits["id-test"]} == {"1F601", "1F923", "1F439", "1F430", "1F43B"}
    assert all(row["style"] == "noto" for row in splits["id-test"])
    for style in (
        "twemoji",
        "openmoji-color",
        "fluent-flat",
        "fluent-3d",
        "openmoji-black",
        "fluent-high-contrast",
    ):
        assert all(
            row["style"] == style and is_test_concept(row["concept"]) for row in splits[f"ood-{style}"]
        )
    # The filtered twemoji hamster leaves ood-twemoji only.
    assert "1F439" not in {row["concept"] for row in splits["ood-twemoji"]}
    assert "1F439" in {row["concept"] for row in splits["ood-fluent-3d"]}


def test_classification_rows_carry_labels(concepts: list[Concept]) -> None:
    row = next(row for row in splits_for(concepts)["id-train"] if row["concept"] == "1F98A")
    assert row == {
        "image": "images/noto/1F98A.png",
        "label": "animal-mammal",
        "key": "1F98A",
        "concept": "1F98A",
        "style": "noto",
    }


def test_pretrain_variants_and_styles(concepts: list[Concept]) -> None:
    rows = splits_for(concepts)["pretrain"]
    keys = {row["key"] for row in rows}
    assert {"1F44B-1F3FB", "1F44B-1F3FF", "1F91A-1F3FD", "270B-1F3FC"} <= keys
    assert {row["style"] for row in rows} == set(PRETRAIN_STYLES)
    assert not any(is_test_concept(row["concept"]) for row in rows)
    assert ("twemoji", "1F98A") not in {(row["style"], row["key"]) for row in rows}


def test_pretrain_captions_count_and_determinism(concepts: list[Concept]) -> None:
    waving = next(concept for concept in concepts if concept.key == "1F44B")
    for style in PRETRAIN_STYLES:
        for key in (waving.key, *waving.variants):
            captions = pretrain_captions(waving, key, style)
            assert 3 <= len(captions) <= 5, captions
            assert len(set(captions)) == len(captions)
            assert captions == pretrain_captions(waving, key, style)
    assert pretrain_captions(waving, "1F44B-1F3FF", "noto")[0] == "waving hand: dark skin tone"


def test_retrieval_galleries_match_across_styles(concepts: list[Concept]) -> None:
    splits = splits_for(concepts)
    galleries = {
        name: {row["concept"] for row in rows}
        for name, rows in splits.items()
        if name.startswith("retrieval-test-")
    }
    assert len(galleries) == 7
    first = next(iter(galleries.values()))
    assert all(gallery == first for gallery in galleries.values())
    # Hamster is filtered in twemoji, so it leaves every gallery; test concepts only.
    assert first == {"1F601", "1F923", "1F430", "1F43B"}
    assert all(row["caption"] for rows in splits.values() for row in rows if "caption" in row)
    assert not any(is_test_concept(row["concept"]) for row in splits["retrieval-train"])


def test_no_leak_passes_on_rule_output(concepts: list[Concept]) -> None:
    check_no_leak(splits_for(concepts))


@pytest.mark.parametrize("split", ["pretrain", "id-train", "id-val", "retrieval-train", "segmentation-train"])
def test_no_leak_detects_test_concept(concepts: list[Concept], split: str) -> None:
    splits = splits_for(concepts)
    splits.setdefault(split, []).append(
        {"image": "images/noto/1F601.png", "key": "1F601", "concept": "1F601", "style": "noto"}
    )
    with pytest.raises(LeakError, match="1F601"):
        check_no_leak(splits)


def test_no_leak_detects_second_pasted_concept(concepts: list[Concept]) -> None:
    row = {
        "image": "x.png",
        "key": "1F600",
        "concept": "1F600",
        "concepts": ["1F600", "1F439"],
        "style": "noto",
    }
    with pytest.raises(LeakError, match="1F439"):
        check_no_leak({"segmentation-train": [row]})


def test_no_leak_detects_val_overlap() -> None:
    row = {"image": "images/noto/1F600.png", "key": "1F600", "concept": "1F600", "style": "noto"}
    with pytest.raises(LeakError, match="id-val"):
        check_no_leak({"id-train": [row], "id-val": [row]})


def test_splits_do_not_depend_on_concept_order(concepts: list[Concept]) -> None:
    forward = splits_for(concepts)
    backward = splits_for(list(reversed(concepts)))
    sort: Callable[[list[dict]], list[str]] = lambda rows: sorted(row["image"] for row in rows)  # noqa: E731
    assert forward.keys() == backward.keys()
    for name in forward:
        assert sort(forward[name]) == sort(backward[name]), name
