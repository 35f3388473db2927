"""Pinned npm packages, their download with `npm pack`, and the integrity check of each tarball."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .files import DiskFullError

logger = logging.getLogger(__name__)

CACHE_ENV = "RADAPTER_CACHE"
NPM_TIMEOUT_S = 600


class NpmNotFoundError(FileNotFoundError):
    """Raised when the `npm` client is not on PATH."""


class NpmPackError(RuntimeError):
    """Raised when `npm pack` fails or times out, for example because the registry is unreachable."""


class IntegrityError(ValueError):
    """Raised when a tarball's hash differs from the pinned integrity string."""


@dataclass(frozen=True)
class Package:
    """One pinned npm package and the facts its license asks us to pass on.

    `integrity` is the `dist.integrity` string that the npm registry reported for this version.
    """

    name: str
    version: str
    integrity: str
    license: str
    author: str
    url: str

    @property
    def spec(self) -> str:
        """`name@version`, as `npm pack` takes it."""
        return f"{self.name}@{self.version}"

    @property
    def tarball_name(self) -> str:
        """File name that `npm pack` gives the tarball: scope and name joined by `-`."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


PACKAGES: dict[str, Package] = {
    package.name: package
    for package in (
        Package(
            "emoji-datasource",
            "16.0.0",
            "sha512-/qHKqK5Nr3+8zhgO6kHmF43Fm5C8HNn0AaFRIpgw8HF3+uF0Vfc8jgLI1ZQS5ba1vBzksS8NBCjHejwLb2D/Sg==",
            "MIT",
            "Cal Henderson (iamcal)",
            "https://github.com/iamcal/emoji-data",
        ),
        Package(
            "@iconify-json/noto",
            "1.2.9",
            "sha512-DQiuXENbun41ch+XPSV55H9FaWKpHTyz46YIKtSaKYD4fIDDzL1tR6H4np/T38jfrTAeI3rcKF0mqHYeZVAuaw==",
            "Apache-2.0",
            "Google Inc",
            "https://github.com/googlefonts/noto-emoji",
        ),
        Package(
            "@iconify-json/twemoji",
            "1.2.5",
            "sha512-uKpuIEV0v6K5BW3Mjdyl+XKFVAbbcPxAgifKvEMtZoUZB5+YiY5zaMm2uNNCxyXzAWU9yNLlj41WU6/mvgALsw==",
            "CC-BY-4.0",
            "Twitter, Inc and other contributors (Twemoji)",
            "https://github.com/jdecked/twemoji",
        ),
        Package(
            "openmoji",
            "17.0.0",
            "sha512-EBnYrNGdcdw+OSXmENeNE1yBNRu6tOraTmoOyUbJkTmvT/+XETp8RZLSJFzD3lrPc5N9CzsyPnRTk0Vp4UaI9w==",
            "CC-BY-SA-4.0",
            "OpenMoji, the open-source emoji and icon project",
            "https://openmoji.org",
        ),
        Package(
            "@iconify-json/fluent-emoji-flat",
            "1.2.6",
            "sha512-RY47RgPb47fYUiyrA64sIOL0+UU02s29sXpNBbIQRBUlPlfNFTKUmZDERGuxDs/7yNGWqQYvuaSYM1M4fRXlUw==",
            "MIT",
            "Microsoft Corporation",
            "https://github.com/microsoft/fluentui-emoji",
        ),
        Package(
            "@iconify-json/fluent-emoji-high-contrast",
            "1.2.6",
            "sha512-esqhZPpkrF7sNX3NsLoh8KW64okEr/bzko7WNnFP+qTJGAqDPDYjp0925yxuivXy3HtVQB8xhIKu3+Nq1byX5w==",
            "MIT",
            "Microsoft Corporation",
            "https://github.com/microsoft/fluentui-emoji",
        ),
        Package(
            "@lobehub/fluent-emoji-3d",
            "1.1.0",
            "sha512-Wlq2lVStTnr8BDpIJ0pEnTKO4LuDxxqTEhTvRtD1DLRF0me7ogeRQjKoehDHXuVJ2Qaecgl5wRBv60lUAG3h7g==",
            "MIT",
            "Microsoft Corporation (Fluent Emoji), packaged by LobeHub",
            "https://github.com/microsoft/fluentui-emoji",
        ),
        Package(
            "@iconify-json/noto-v1",
            "1.2.5",
            "sha512-/DsVMius69Q0fRS53z7QK1TROSuar606jiIx+laXtdsYGMXpf6LtHBx6CGfoo3UHHb/XpBsw+1L1x3eyPqMuVA==",
            "Apache-2.0",
            "Google Inc",
            "https://github.com/googlefonts/noto-emoji",
        ),
        Package(
            "@iconify-json/emojione",
            "1.2.3",
            "sha512-T9+T3HIbJNLKKsmxYKlaYhvnHYkz/HNYTV7SHCXVZPfeUi4FqskY70YeN8yYAZT8cCv7w5vJxS4Q1m8zb9CMMg==",
            "CC-BY-4.0",
            "Emoji One (EmojiOne 2, released as EmojiTwo)",
            "https://github.com/EmojiTwo/emojitwo",
        ),
    )
}


def default_cache_dir() -> Path:
    """Return the cache folder: `$RADAPTER_CACHE` if set, else `~/.cache/radapter`."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "radapter"


def sri_sha512(path: Path) -> str:
    """Return the Subresource Integrity string (`sha512-<base64>`) of the file at `path`."""
    digest = hashlib.sha512()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def verify_integrity(path: Path, package: Package) -> None:
    """Check the tarball at `path` against `package.integrity`.

    Raises:
        IntegrityError: The hashes differ; the message explains how to recover.
    """
    actual = sri_sha512(path)
    if actual != package.integrity:
        raise IntegrityError(
            f"{package.spec} failed its integrity check: {path} has {actual}, the registry reported "
            f"{package.integrity}. Delete {path} and rerun; if it fails again, the registry or a proxy "
            "serves a different tarball and the build must not use it."
        )


def fetch_package(package: Package, cache_dir: Path) -> Path:
    """Return the verified tarball of `package` under `cache_dir/npm`, running `npm pack` if needed.

    A cached tarball is hashed again on every call, so a corrupted cache is caught, not used.

    Raises:
        NpmNotFoundError: `npm` is not installed.
        IntegrityError: The tarball (cached or fresh) does not match the pinned integrity.
        NpmPackError: `npm pack` failed or timed out.
    """
    target = cache_dir / "npm" / package.tarball_name
    if target.exists():
        verify_integrity(target, package)
        logger.debug("Reusing %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".pack-") as staging:
        reported = _npm_pack(package, Path(staging))
        if reported != package.integrity:
            raise IntegrityError(
                f"the registry reports integrity {reported} for {package.spec}, but this build pins "
                f"{package.integrity}. The published package changed; do not build from it."
            )
        staged = Path(staging) / package.tarball_name
        verify_integrity(staged, package)
        os.replace(staged, target)
    logger.info("Fetched %s (%.1f MB)", package.spec, target.stat().st_size / 1e6)
    return target


def _npm_pack(package: Package, destination: Path) -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise NpmNotFoundError(
            "npm was not found on PATH; the benchmark packages come from the npm registry. Install "
            "Node.js with npm (Debian/Ubuntu: `apt-get install npm`; elsewhere see nodejs.org), then rerun."
        )
    command = [npm, "pack", package.spec, "--json", "--pack-destination", str(destination)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as error:
        raise NpmPackError(f"`npm pack {package.spec}` timed out after {NPM_TIMEOUT_S} s.") from error
    if result.returncode != 0:
        if "ENOSPC" in result.stderr:
            raise DiskFullError(f"no space left while `npm pack {package.spec}` wrote into {destination}.")
        raise NpmPackError(
            f"`npm pack {package.spec}` failed with exit code {result.returncode}: "
            f"{result.stderr.strip()[-800:]}\nCheck that the npm registry is reachable (`npm ping`)."
        )
    return json.loads(result.stdout)[0]["integrity"]


def read_members(tarball: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """Read the regular files whose path (without the leading `package/`) satisfies `wanted`.

    The tarball is read in one streaming pass and never unpacked, so nothing half-extracted can
    outlive an interrupted build.
    """
    members: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            if not member.isfile():
                continue
            name = member.name.split("/", 1)[1] if "/" in member.name else member.name
            if wanted(name):
                handle = archive.extractfile(member)
                if handle is not None:
                    members[name] = handle.read()
    return members
