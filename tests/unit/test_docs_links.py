"""Every relative link in the repo's Markdown resolves inside the repo, anchors included.

Links and headings are read with markdown-it-py (CommonMark), so text inside code
spans and fenced blocks is never mistaken for a link. Anchors are checked against
the heading ids GitHub generates (github-slugger's rule: lower case, punctuation
dropped, spaces to hyphens, ``-1``, ``-2`` … for repeats).
"""

from __future__ import annotations

import functools
import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".venv", ".git", "node_modules", ".pytest_cache", ".ruff_cache"}
PARSER = MarkdownIt("commonmark")


def markdown_files() -> list[Path]:
    """Every ``.md`` file of the repo, without descending into a venv or hidden folders."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        found += [Path(folder) / name for name in files if name.endswith(".md")]
    return sorted(found)


def _inline_text(token: Token) -> str:
    return "".join(c.content for c in token.children or [] if c.type in ("text", "code_inline"))


def _links(tokens: list[Token]) -> Iterator[str]:
    for token in tokens:
        for child in token.children or []:
            if child.type == "link_open":
                yield str(child.attrs["href"])
            elif child.type == "image":
                yield str(child.attrs["src"])


def github_slug(text: str) -> str:
    kept = "".join(
        c
        for c in text.strip().lower()
        if c.isalnum() or c in " -_" or unicodedata.category(c).startswith("M")
    )
    return kept.replace(" ", "-")


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    tokens = PARSER.parse(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    ids = set()
    for opening, inline in zip(tokens, tokens[1:], strict=False):
        if opening.type != "heading_open":
            continue
        slug = github_slug(_inline_text(inline))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(ids)


def broken_links(path: Path, text: str | None = None) -> list[str]:
    """The links of ``path`` (or of ``text`` as if it were at ``path``) that do not resolve."""
    problems = []
    source = path.read_text(encoding="utf-8") if text is None else text
    for href in _links(PARSER.parse(source)):
        parts = urlsplit(href)
        if parts.scheme or parts.netloc:  # http(s), mailto: outside the repo by intent
            continue
        target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
        if not target.is_relative_to(ROOT):
            problems.append(f"{href}: points outside the repository")
        elif not target.exists():
            problems.append(f"{href}: {target.relative_to(ROOT)} does not exist")
        elif target.suffix == ".md" and unquote(parts.fragment) not in anchors(target) | {""}:
            problems.append(f"{href}: no heading #{parts.fragment} in {target.name}")
    return problems


def test_the_docs_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in markdown_files()}
    assert {"README.md", "docs/architecture.md", "docs/testing.md"} <= names


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


def test_the_checker_catches_what_it_should() -> None:
    assert "data-flow" in anchors(ROOT / "docs" / "architecture.md")
    assert github_slug("The `GenerationJob`: one job, ×2!") == "the-generationjob-one-job-2"
    probe = (
        "[a](missing.md) [b](architecture.md#no-such-heading) [c](../../outside.md) "
        "`[d](in-code.md)` [e](architecture.md#data-flow) [f](https://example.com/x.md)\n\n"
        "```\n[g](in-a-fence.md)\n```\n"
    )
    problems = broken_links(ROOT / "docs" / "probe.md", probe)
    assert [p.split(":")[0] for p in problems] == [
        "missing.md",
        "architecture.md#no-such-heading",
        "../../outside.md",
    ]
