"""The pretraining corpus held in memory: uint8 images, their concepts, and caption texts per concept."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training.data.datasets import load_rgb
from training.data.manifest import ManifestRecord, load_manifest

logger = logging.getLogger(__name__)

WORDNET_DIR = Path("/usr/share/wordnet")
# Words too generic to name what an emoji shows; a WordNet sense of these adds no information.
_GENERIC_WORDS = {
    "a", "an", "and", "the", "of", "with", "in", "on", "for", "at", "to", "from", "by",
    "emoji", "face", "button", "sign", "symbol", "mark", "group", "light", "medium", "dark", "skin", "tone",
}  # fmt: skip


@dataclass
class PretrainCorpus:
    """Images and captions of a pretraining manifest, grouped by concept.

    Rows with the same `concept` column (the same emoji in other styles or skin tones) share their
    captions and are positives of each other. Manifests without `concept` group by `image_id`.
    """

    images: torch.Tensor  # (N, 3, S, S) uint8
    image_concepts: torch.Tensor  # (N,) int64 index into concepts
    concepts: list[str]
    captions: list[str]  # distinct caption texts
    caption_table: torch.Tensor  # (C, K) int64 caption indices per concept, padded with -1
    caption_counts: torch.Tensor  # (C,) int64
    caption_membership: torch.Tensor  # (C, U) bool, True where caption u describes concept c

    def sample_captions(self, generator: torch.Generator) -> torch.Tensor:
        """Draw one caption index per concept, uniformly among that concept's captions."""
        draws = torch.rand(len(self.concepts), generator=generator)
        choice = (draws * self.caption_counts).long().clamp(max=self.caption_table.shape[1] - 1)
        return self.caption_table.gather(1, choice[:, None]).squeeze(1)


def concept_of(record: ManifestRecord) -> str:
    return str(record.fields.get("concept") or record.image_id)


def load_corpus(
    manifest: str | Path | Sequence[ManifestRecord], image_size: int = 64, extra_captions: dict | None = None
) -> PretrainCorpus:
    """Load every image of a manifest with `captions` into memory, resized to `image_size`.

    Args:
        manifest: Pretraining manifest path or loaded records.
        image_size: Side in pixels the images are stored at; the build renders 64.
        extra_captions: Optional concept -> list of further captions (for example WordNet glosses).
    """
    records = load_manifest(manifest) if isinstance(manifest, (str, Path)) else list(manifest)
    if not records:
        raise ValueError(f"pretraining manifest {manifest} has no rows; build it with `radapter data build`.")
    uncaptioned = [index for index, record in enumerate(records) if not record.captions]
    if uncaptioned:
        raise ValueError(
            f"{len(uncaptioned)} pretraining rows have no `captions` (first: row {uncaptioned[0] + 1}); "
            "contrastive pretraining needs text for every image."
        )

    concepts = sorted({concept_of(record) for record in records})
    concept_index = {concept: index for index, concept in enumerate(concepts)}
    texts_per_concept: list[dict[str, None]] = [{} for _ in concepts]
    for record in records:
        texts_per_concept[concept_index[concept_of(record)]].update(dict.fromkeys(record.captions))
    for concept, texts in (extra_captions or {}).items():
        if concept in concept_index:
            texts_per_concept[concept_index[concept]].update(dict.fromkeys(texts))

    captions = sorted({text for texts in texts_per_concept for text in texts})
    caption_index = {text: index for index, text in enumerate(captions)}
    width = max(len(texts) for texts in texts_per_concept)
    table = torch.full((len(concepts), width), -1, dtype=torch.long)
    for row, texts in enumerate(texts_per_concept):
        table[row, : len(texts)] = torch.tensor([caption_index[text] for text in texts])

    images = np.empty((len(records), 3, image_size, image_size), dtype=np.uint8)
    for row, record in enumerate(tqdm(records, desc="load images", unit="img", leave=False)):
        image = load_rgb(record.image)
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size))
        images[row] = np.asarray(image).transpose(2, 0, 1)
    logger.info(
        "pretraining corpus: %d images, %d concepts, %d distinct captions",
        len(records),
        len(concepts),
        len(captions),
    )
    return PretrainCorpus(
        images=torch.from_numpy(images),
        image_concepts=torch.tensor([concept_index[concept_of(record)] for record in records]),
        concepts=concepts,
        captions=captions,
        caption_table=table,
        caption_counts=(table >= 0).sum(dim=1),
        caption_membership=_membership(table, len(captions)),
    )


def _membership(table: torch.Tensor, caption_count: int) -> torch.Tensor:
    membership = torch.zeros(table.shape[0], caption_count + 1, dtype=torch.bool)
    # Padding (-1) lands in the extra last column, which is dropped.
    membership.scatter_(1, table.where(table >= 0, caption_count), True)
    return membership[:, :caption_count]


class WordNet:
    """Noun senses of the WordNet 3.0 database files (Debian package `wordnet-base`)."""

    def __init__(self, root: Path = WORDNET_DIR) -> None:
        index_path, data_path = root / "index.noun", root / "data.noun"
        if not index_path.is_file() or not data_path.is_file():
            raise FileNotFoundError(
                f"WordNet noun files not found under {root}; install them with "
                "`apt-get install wordnet-base`, or pass `--wordnet-captions 0`."
            )
        self.first_sense: dict[str, str] = {}
        for line in index_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" "):
                continue  # licence header
            fields = line.split()
            synset_count = int(fields[2])
            self.first_sense[fields[0]] = fields[-synset_count]
        self.synsets: dict[str, tuple[list[str], list[str], str]] = {}
        for line in data_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" "):
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            word_count = int(fields[3], 16)
            words = [fields[4 + 2 * index].replace("_", " ") for index in range(word_count)]
            position = 4 + 2 * word_count
            pointer_count = int(fields[position])
            pointers = fields[position + 1 : position + 1 + 4 * pointer_count]
            hypernyms = [
                pointers[4 * index + 1]
                for index in range(pointer_count)
                if pointers[4 * index] in ("@", "@i")
            ]
            self.synsets[fields[0]] = (words, hypernyms, gloss.split(";")[0].strip())

    def lookup(self, phrase: str) -> str | None:
        """Return the offset of the most frequent noun sense of `phrase`, or None."""
        return self.first_sense.get(phrase.lower().replace(" ", "_"))

    def describe(self, offset: str, depth: int = 2) -> tuple[str, str]:
        """Return ("X, a kind of H1 and H2", "X: gloss") for a synset, walking `depth` hypernyms up."""
        words, hypernyms, gloss = self.synsets[offset]
        chain = []
        while hypernyms and len(chain) < depth:
            parent_words, hypernyms, _ = self.synsets[hypernyms[0]]
            chain.append(parent_words[0])
        kind = f"{words[0]}, a kind of {' and '.join(chain)}" if chain else words[0]
        return kind, f"{words[0]}: {gloss}"


def wordnet_captions(corpus_captions: dict[str, list[str]], wordnet: WordNet) -> dict[str, list[str]]:
    """Derive two captions per concept from WordNet: its hypernym chain and its gloss.

    The noun is the last WordNet noun (two-word phrases first) in the concept's first caption,
    because English noun phrases end in their head ("red apple"), skipping generic words such as
    "face" or "button". A trailing "s" is dropped when the plural is not in WordNet. Concepts
    without a noun get nothing.
    """
    extra = {}
    for concept, captions in corpus_captions.items():
        words = [word for word in re.split(r"[^a-z]+", captions[0].lower()) if word]
        bigrams = [" ".join(words[i : i + 2]) for i in range(len(words) - 1)]
        for phrase in bigrams[::-1] + words[::-1]:
            if phrase in _GENERIC_WORDS:
                continue
            offset = wordnet.lookup(phrase)
            if offset is None and phrase.endswith("s"):
                offset = wordnet.lookup(phrase[:-1])
            if offset is not None:
                extra[concept] = list(wordnet.describe(offset))
                break
    return extra
