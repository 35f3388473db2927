"""End to end through npm: build a --limit subset twice and check files, masks and determinism.

Package tarballs and renders go to the default cache (`$RADAPTER_CACHE`, else ~/.cache/radapter),
so reruns skip the download. On a fresh machine the test fetches about 55 MB from the npm registry.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.cli import main
from training.data.build import BuildOptions, build
from training.data.keys import is_test_concept
from training.data.manifest import load_manifest
from training.data.sources import default_cache_dir
from training.data.splits import TRAINING_SPLITS

LIMIT = 40

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm and the npm registry")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    first = tmp_path_factory.mktemp("first")
    second = tmp_path_factory.mktemp("second")
    argv = ["data", "build", "--cache", str(default_cache_dir()), "--out", str(first), "--limit", str(LIMIT)]
    assert main(argv) == 0
    build(BuildOptions(cache_dir=default_cache_dir(), out_dir=second, limit=LIMIT))
    return first, second


def manifests(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.jsonl"))}


def test_build_manifests_are_deterministic(built: tuple[Path, Path]) -> None:
    first, second = built
    assert manifests(first).keys() >= {
        "pretrain.jsonl",
        "id-train.jsonl",
        "id-test.jsonl",
        "ood-fluent-3d.jsonl",
    }
    assert manifests(first) == manifests(second)
    assert (first / "classes.json").read_bytes() == (second / "classes.json").read_bytes()


def test_build_images_have_expected_sizes(built: tuple[Path, Path]) -> None:
    first, _ = built
    classes = json.loads((first / "classes.json").read_text())
    assert len(classes) >= 2
    for manifest in sorted(first.glob("*.jsonl")):
        for record in load_manifest(manifest):
            with Image.open(record.image) as image:
                if record.mask is None:
                    assert (image.size, image.mode) == ((64, 64), "RGB"), record.image
                    continue
                assert (image.size, image.mode) == ((128, 128), "RGB"), record.image
            with Image.open(record.mask) as mask:
                assert (mask.size, mask.mode) == ((128, 128), "L"), record.mask
                values = set(np.unique(np.asarray(mask)).tolist())
            expected = {classes.index(label) + 1 for label in record.fields["labels"]}
            assert 0 in values, record.mask
            # A later emoji may hide an earlier one completely, so a subset is allowed.
            assert values - {0}, (record.mask, values)
            assert values - {0} <= expected, (record.mask, values, expected)


def test_build_has_no_leak_on_disk(built: tuple[Path, Path]) -> None:
    first, _ = built
    for split in TRAINING_SPLITS:
        path = first / f"{split}.jsonl"
        if not path.exists():
            continue
        for record in load_manifest(path):
            concepts = record.fields.get("concepts") or [record.fields["concept"]]
            assert not any(map(is_test_concept, concepts)), (split, record.image)


def test_build_writes_notice(built: tuple[Path, Path]) -> None:
    first, _ = built
    notice = (first / "NOTICE").read_text()
    for credit in ("Twemoji", "OpenMoji", "EmojiTwo", "CC-BY-SA-4.0", "china.jpg"):
        assert credit in notice, credit


def test_build_rerun_reuses_cache(built: tuple[Path, Path]) -> None:
    first, _ = built
    before = manifests(first)
    marker = next(first.glob("images/noto/*.png"))
    modified = marker.stat().st_mtime_ns
    report = build(BuildOptions(cache_dir=default_cache_dir(), out_dir=first, limit=LIMIT))
    assert manifests(first) == before
    assert marker.stat().st_mtime_ns == modified  # reused, not rewritten
    assert report.elapsed_s < 30, report.elapsed_s
