"""`radapter data build`: build the emoji renditions benchmark and print its summary and NOTICE."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import BuildOptions, BuildReport, build
from .files import DiskFullError
from .sources import NpmPackError, default_cache_dir
from .styles import STYLES

OUT_SUBDIR = "emoji-renditions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the `build` subcommand and its options on `parser`."""
    subcommands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    build_parser = subcommands.add_parser(
        "build",
        help="fetch the pinned npm packages, render, split and write manifests",
        description=(
            "Build the emoji renditions benchmark. "
            "Rerunning reuses the cache and resumes an interrupted build."
        ),
    )
    build_parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="folder for npm tarballs and rendered images (default: $RADAPTER_CACHE or ~/.cache/radapter)",
    )
    build_parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"folder for manifests, images and NOTICE (default: CACHE/{OUT_SUBDIR})",
    )
    build_parser.add_argument(
        "--styles",
        nargs="+",
        choices=list(STYLES),
        default=list(STYLES),
        metavar="STYLE",
        help=f"styles to build (default: all): {' '.join(STYLES)}",
    )
    build_parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="build at most N concepts, for quick checks"
    )
    build_parser.add_argument(
        "--min-class-concepts",
        type=int,
        default=None,
        metavar="N",
        help="concepts a subcategory needs to become a class (default: 12, scaled down with --limit)",
    )


def run(args: argparse.Namespace) -> int:
    """Run `radapter data build`, print the summary table and NOTICE, and return the exit code."""
    cache_dir = args.cache if args.cache is not None else default_cache_dir()
    out_dir = args.out if args.out is not None else cache_dir / OUT_SUBDIR
    options = BuildOptions(
        cache_dir=cache_dir.expanduser(),
        out_dir=out_dir.expanduser(),
        styles=tuple(args.styles),
        limit=args.limit,
        min_class_concepts=args.min_class_concepts,
    )
    try:
        report = build(options)
    except (DiskFullError, NpmPackError) as error:
        # Environment failures with a remedy in the message; a traceback would bury it.
        print(f"radapter data: error: {error}", file=sys.stderr)
        return 1
    print(format_report(report))
    return 0


def format_report(report: BuildReport) -> str:
    """Return the summary table, unreadable and dropped images, and the NOTICE as text."""
    width = max(len(name) for name in report.splits) if report.splits else 5
    lines = [f"{'split':<{width}}  {'images':>7}  {'classes':>7}  {'concepts':>8}"]
    for name, summary in report.splits.items():
        lines.append(f"{name:<{width}}  {summary.images:>7}  {summary.classes:>7}  {summary.concepts:>8}")
    lines.append("")
    lines.append(f"{len(report.classes)} classes; manifests, classes.json and NOTICE in {report.out_dir}")
    for style, errors in sorted(report.unreadable.items()):
        lines.append(f"unreadable, skipped: {style}: {len(errors)} ({', '.join(sorted(errors)[:5])})")
    if report.dropped:
        counts = ", ".join(f"{style} {count}" for style, count in report.dropped.items())
        lines.append(f"dropped for foreground outside 5-95% of the square: {counts}")
    lines.append(f"built in {report.elapsed_s:.1f} s")
    lines.append("")
    lines.append(report.notice.rstrip())
    return "\n".join(lines)
