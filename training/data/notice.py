"""The NOTICE that the art licenses require: authors, licenses and the changes we made."""

from __future__ import annotations

from collections.abc import Iterable

from .sources import Package

ATTRIBUTION_LICENSES = ("CC-BY-4.0", "CC-BY-SA-4.0")
LICENSE_URLS = {
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "CC-BY-SA-4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "Apache-2.0": "https://www.apache.org/licenses/LICENSE-2.0",
    "MIT": "https://opensource.org/license/mit",
}


def notice_text(packages: Iterable[Package]) -> str:
    """Return the NOTICE for a build that used `packages`, attribution licenses first."""
    ordered = sorted(
        packages, key=lambda package: (package.license not in ATTRIBUTION_LICENSES, package.name)
    )
    lines = [
        "The emoji renditions benchmark contains images derived from the following works.",
        "Changes: drawings were rasterised or rescaled to 64 x 64 pixels, composited onto white or onto",
        "photographs, and grouped into labelled splits.",
        "Credit these authors in anything shipped that was trained on these images.",
        "",
    ]
    for package in ordered:
        lines.append(f"{package.spec}: {package.author}, {package.url}")
        lines.append(
            f"    License: {package.license} ({LICENSE_URLS.get(package.license, 'see the package')})"
        )
        if package.license == "CC-BY-SA-4.0":
            lines.append("    Derivatives of this art must be shared under CC BY-SA 4.0.")
    lines += [
        "",
        "Segmentation backgrounds are sample photographs shipped with scikit-image, scikit-learn and",
        "matplotlib. Two need attribution under CC BY 2.0 (https://creativecommons.org/licenses/by/2.0/):",
        "    china.jpg: Flickr user danielbuechele, photo 6061409035, via scikit-learn.",
        "    flower.jpg: Flickr user vultilion, photo 6056698931, via scikit-learn.",
        "The others are described, with their sources and terms, in each package's data README.",
    ]
    return "\n".join(lines) + "\n"
