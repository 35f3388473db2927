import json
from pathlib import Path

import pytest

from training.data.manifest import load_manifest, write_manifest


def test_write_manifest_sorted_and_stable(tmp_path: Path) -> None:
    rows = [
        {"image": "images/noto/1F600.png", "label": "face-smiling", "key": "1F600"},
        {"label": "animal-mammal", "image": "images/noto/1F431.png", "key": "1F431"},
    ]
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert write_manifest(first, rows) == 2
    write_manifest(second, list(reversed(rows)))
    assert first.read_bytes() == second.read_bytes()
    lines = first.read_text().splitlines()
    assert json.loads(lines[0])["key"] == "1F431"
    assert lines[0] == '{"image":"images/noto/1F431.png","key":"1F431","label":"animal-mammal"}'


def test_load_manifest_resolves_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    rows = [
        {"image": "images/a.png", "label": "fox", "mask": "masks/a.png"},
        {"image": "/abs/b.png", "captions": ["one", "two"], "image_id": "b"},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + "\n")
    first, second = load_manifest(path)
    assert first.image == tmp_path / "images/a.png"
    assert first.mask == tmp_path / "masks/a.png"
    assert first.label == "fox"
    assert first.image_id == "images/a.png"
    assert second.image == Path("/abs/b.png")
    assert second.captions == ("one", "two")
    assert second.caption == "one"
    assert second.image_id == "b"


def test_load_manifest_csv(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("image,label,caption\nphotos/cat.jpg,animal-mammal,a cat\n")
    (record,) = load_manifest(path)
    assert record.image == tmp_path / "photos/cat.jpg"
    assert record.label == "animal-mammal"
    assert record.captions == ("a cat",)
    assert record.mask is None


@pytest.mark.parametrize(
    ("name", "content", "error", "match"),
    [
        ("m.txt", "", ValueError, "expected one of"),
        ("missing.jsonl", None, FileNotFoundError, "radapter data build"),
        ("m.jsonl", '{"image": "a.png"}\n{oops\n', ValueError, r"m.jsonl:2 is not valid JSON"),
        ("m.jsonl", "[1, 2]\n", ValueError, "must be an object"),
        ("m.jsonl", '{"label": "fox"}\n', ValueError, r"m.jsonl:1 has no `image`"),
        ("m.csv", "path,label\na.png,fox\n", ValueError, r"m.csv:2 has no `image`"),
    ],
)
def test_load_manifest_errors(
    tmp_path: Path, name: str, content: str | None, error: type, match: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=match):
        load_manifest(path)
