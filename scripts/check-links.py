#!/usr/bin/env python3
"""Checks the relative links of the repository's Markdown files: every `[text](path)` and
`[text](path#anchor)` must name a file that exists, and an anchor a heading of that file
(GitHub's way of making anchors from headings). Links to other sites, and to files beside
the repository rather than in it, are not followed.

    scripts/check-links.py [FILE.md ...]     (default: every tracked *.md)

Prints each broken link with its file and line and exits 1 when there is one.
"""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, code marks and punctuation other than
    hyphens and underscores dropped, spaces made hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def prose(path: Path):
    """The file's lines outside fenced code blocks, with their numbers."""
    in_fence = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            yield number, line


def anchors(path: Path) -> set:
    seen = {}
    out = set()
    for _, line in prose(path):
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path):
    for number, line in prose(path):
        # Inline code is not a link.
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            yield number, target


def main(argv) -> int:
    if argv:
        files = [Path(a).resolve() for a in argv]
    else:
        listed = subprocess.run(
            ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
        files = [ROOT / f for f in listed]
    cache = {}
    broken = 0
    for md in files:
        for number, target in links(md):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:, …
                continue
            file_part, _, anchor = target.partition("#")
            dest = (md.parent / file_part).resolve() if file_part else md
            if not dest.is_relative_to(ROOT):
                # Beside the repository (the SPEC the README cites): not in a clone.
                continue
            where = f"{md.relative_to(ROOT)}:{number}"
            if not dest.exists():
                print(f"{where}: link to {target}: no file {dest.relative_to(ROOT)}")
                broken += 1
                continue
            if anchor and dest.suffix == ".md":
                if dest not in cache:
                    cache[dest] = anchors(dest)
                if anchor not in cache[dest]:
                    print(f"{where}: link to {target}: no heading gives #{anchor}")
                    broken += 1
    if broken:
        print(f"check-links.py: {broken} broken link(s)")
        return 1
    print(f"check-links.py: the relative links of {len(files)} Markdown files resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
