"""The emoji renditions benchmark: fetch pinned npm packages, render, split and load manifests.

The build is `radapter data build`; training and evaluation read its JSONL manifests through
`load_manifest` and the data set classes in `training.data.datasets`.
"""

from .manifest import ManifestRecord, load_manifest

__all__ = ["ManifestRecord", "load_manifest"]
