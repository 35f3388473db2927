"""Emoji keys and the hash-derived decisions made from them (test membership, seeds).

A key is the code point sequence in upper-case hex, each at least four digits, joined by `-`, with
the emoji presentation selector U+FE0F removed. Every source spells code points differently
(`1f600`, `00a9-fe0f`, `a9-fe0f`, `1F600`), so every source goes through `normalize_key`.
"""

from __future__ import annotations

import hashlib
import re

VARIATION_SELECTOR = "FE0F"
SKIN_TONES = {
    "1F3FB": "light skin tone",
    "1F3FC": "medium-light skin tone",
    "1F3FD": "medium skin tone",
    "1F3FE": "medium-dark skin tone",
    "1F3FF": "dark skin tone",
}
_HEX = re.compile(r"^[0-9A-Fa-f]{1,6}$")


def normalize_key(raw: str) -> str:
    """Convert a code point sequence such as `00a9-fe0f` or `1f468_200d_1f373` into a key.

    Args:
        raw: Hex code points separated by `-`, `_` or spaces, in any case, with or without
            leading zeros and U+FE0F.

    Returns:
        The key, for example `00A9` or `1F468-200D-1F373`.

    Raises:
        ValueError: A part is not a hex code point, or nothing is left after removing U+FE0F.
    """
    parts = [part for part in re.split(r"[-_ ]+", raw.strip()) if part]
    code_points = []
    for part in parts:
        if not _HEX.match(part):
            raise ValueError(f"invalid code point {part!r} in emoji key {raw!r}; expected hex such as 1F98A.")
        code_point = f"{int(part, 16):04X}"
        if code_point != VARIATION_SELECTOR:
            code_points.append(code_point)
    if not code_points:
        raise ValueError(f"emoji key {raw!r} has no code point besides U+FE0F; expected hex such as 1F98A.")
    return "-".join(code_points)


def key_hash(*parts: str) -> int:
    """Return the SHA-1 of `parts` joined by `/` as an integer, identical on every machine."""
    digest = hashlib.sha1("/".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest, "big")


def is_test_concept(key: str) -> bool:
    """Return whether concept `key` belongs to the test concepts (`sha1(key) % 4 == 0`, about 25%)."""
    return key_hash(key) % 4 == 0


def is_val_concept(key: str) -> bool:
    """Return whether non-test concept `key` is held out for id-val (about 10%).

    The hash is salted so that id-val membership is independent of test membership.
    """
    return key_hash("id-val", key) % 10 == 0


def seed_for(*parts: str) -> int:
    """Return a 32-bit random seed derived from `parts`, for `random.Random` or numpy."""
    return key_hash("seed", *parts) % (2**32)
