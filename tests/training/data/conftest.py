"""Fixture concepts for the split tests: 23 real emoji in four subcategories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.data.catalog import Concept

FIXTURE = Path(__file__).parents[2] / "fixtures" / "data" / "concepts.json"


@pytest.fixture
def concepts() -> list[Concept]:
    entries = json.loads(FIXTURE.read_text())
    return [
        Concept(
            key=entry["key"],
            name=entry["name"],
            short_names=(entry["name"].replace(" ", "_"),),
            category="fixture",
            subcategory=entry["subcategory"],
            sort_order=index,
            tags=("tag one", "tag two"),
            variants=tuple(entry["variants"]),
        )
        for index, entry in enumerate(entries)
    ]
