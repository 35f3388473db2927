import io
import tarfile
from pathlib import Path

import pytest

from training.data.sources import (
    PACKAGES,
    IntegrityError,
    NpmNotFoundError,
    Package,
    default_cache_dir,
    fetch_package,
    read_members,
    sri_sha512,
    verify_integrity,
)


def make_tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_sri_sha512_known_value(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    expected = (
        "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg=="
    )
    assert sri_sha512(path) == expected


def test_verify_integrity_rejects_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "toy.tgz"
    path.write_bytes(b"not the published tarball")
    package = Package("toy", "1.0.0", sri_sha512(path).replace("sha512-", "sha512-X"), "MIT", "a", "u")
    with pytest.raises(IntegrityError, match="toy@1.0.0 failed its integrity check"):
        verify_integrity(path, package)


def test_fetch_package_rejects_corrupt_cache(tmp_path: Path) -> None:
    package = PACKAGES["@iconify-json/noto"]
    cached = tmp_path / "npm" / package.tarball_name
    cached.parent.mkdir()
    cached.write_bytes(b"truncated download")
    with pytest.raises(IntegrityError, match=f"Delete {cached}"):
        fetch_package(package, tmp_path)


def test_fetch_package_without_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(NpmNotFoundError, match="apt-get install npm"):
        fetch_package(PACKAGES["@iconify-json/noto"], tmp_path)


def test_tarball_names_match_npm_pack() -> None:
    assert PACKAGES["@iconify-json/noto"].tarball_name == "iconify-json-noto-1.2.9.tgz"
    assert PACKAGES["openmoji"].tarball_name == "openmoji-17.0.0.tgz"
    assert PACKAGES["@lobehub/fluent-emoji-3d"].spec == "@lobehub/fluent-emoji-3d@1.1.0"


def test_pinned_integrities_are_sha512() -> None:
    for package in PACKAGES.values():
        assert package.integrity.startswith("sha512-"), package.spec
        assert len(package.integrity) == len("sha512-") + 88, package.spec


def test_read_members_filters_and_strips_prefix(tmp_path: Path) -> None:
    tarball = make_tarball(
        tmp_path / "t.tgz", {"a.json": b"{}", "color/svg/1F600.svg": b"<svg/>", "b.txt": b"x"}
    )
    members = read_members(tarball, lambda name: name.endswith((".json", ".svg")))
    assert members == {"a.json": b"{}", "color/svg/1F600.svg": b"<svg/>"}


def test_default_cache_dir_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADAPTER_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("RADAPTER_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "radapter"
