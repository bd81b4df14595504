#!/usr/bin/env python3
"""Dead relative links in the repository's markdown.

    python3 scripts/check_links.py      (from the repository root; check-ops runs it)

Every inline link `[text](target)` and reference definition `[label]: target`
of every tracked *.md file, outside code: a relative target must exist (from
the file's directory), and a `#fragment` into a markdown file (or into the
same file) must be one of its heading anchors, as GitHub renders them. Links
with a scheme (https:, mailto:) are not fetched.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True  # no scripts/__pycache__ in the work tree

_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)


def strip_code(text: str) -> str:
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def markdown_anchors(path: str) -> set:
    """The heading anchors GitHub gives a markdown file (`## Pre-warm` -> `pre-warm`)."""
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", f.read(), flags=re.M | re.S)
    anchors, counts = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M):
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug if slug not in counts else f"{slug}-{counts[slug]}")
        counts[slug] = counts.get(slug, 0) + 1
    anchors |= set(re.findall(r'<a\s+(?:id|name)="([^"]+)"', text))
    return anchors


def markdown_files() -> list[str]:
    r = subprocess.run(["git", "ls-files", "*.md"], capture_output=True, text=True)
    if r.returncode == 0:  # tracked files only (not target/, not scratch output)
        return [p for p in r.stdout.splitlines() if os.path.exists(p)]
    return [p for p in glob.glob("**/*.md", recursive=True) if not p.startswith("target/")]


def check(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        text = strip_code(f.read())
    errors = []
    for m in _LINK.finditer(text):
        target = m.group(1) or m.group(2)
        if re.match(r"[a-zA-Z][\w+.-]*:", target):
            continue
        file_part, _, fragment = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(dest):
            errors.append(f"{path}: link to {target!r}: {dest} does not exist")
        elif fragment and dest.endswith(".md") and fragment not in markdown_anchors(dest):
            errors.append(f"{path}: link to {target!r}: no heading #{fragment} in {dest}")
    return errors


def main() -> int:
    files = markdown_files()
    errors = [e for p in files for e in check(p)]
    for e in errors:
        print(f"check_links: {e}", file=sys.stderr)
    if not errors:
        print(f"check_links: {len(files)} markdown files, no dead relative links")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
