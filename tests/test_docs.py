"""The repository explains itself: every Markdown file the code, tests, configs and docs name
is in the repository, every section they cite is a heading of it, and every link in the
README and docs/ resolves.

A citation is a path or bare file name ending in ``.md``, optionally with ``#section`` (the
heading's anchor as GitHub makes it): ``docs/methods.md#dkd``, ``masking.md``. A path is read
relative to the file that names it or to the repository root; a bare name may be any file of
the repository with that name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("raydistill", "README.md", "docs", "bench", "search_spaces", "studies", "tests")
# Markdown files raydistill writes at run time: named in code and docs, never in the repository.
GENERATED = {"table.md"}  # a study's table (report/study_table.py)

SKIP_DIRS = {".git", ".venv", "__pycache__", "runs", "node_modules", "build", "dist"}
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+")
CITATION = re.compile(r"((?:[\w.-]+/)*[\w.-]*[\w-]\.md)(#[\w-]*)?\b")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def _walk(root: Path, start: Path):
    if start.is_file():
        yield start
        return
    for folder, dirs, files in os.walk(start):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            yield Path(folder) / name


def _text(path: Path):
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:  # figures and other binary files
        return None


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text lower-cased, punctuation dropped, spaces → '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (code blocks left out; repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading and not fenced:
            base = slug(heading[1])
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def _resolve(root: Path, source: Path, name: str, md_names: dict[str, list[Path]]):
    """The file ``name`` (named in ``source``) refers to, or None."""
    for base in (source.parent, root):
        if (base / name).is_file():
            return (base / name).resolve()
    if "/" not in name and md_names.get(name):
        return md_names[name][0]
    return None


def _check_anchor(target: Path, anchor: str, where: str, what: str, problems: list) -> None:
    if anchor and target.suffix == ".md" and anchor not in anchors(target):
        problems.append(f"{where}: {what}: no heading with anchor #{anchor} in {target.name}")


def citation_problems(root: Path) -> list[str]:
    """Every Markdown file named under the scanned paths that is missing, or whose cited section is."""
    root = root.resolve()
    md_names: dict[str, list[Path]] = {}
    for path in _walk(root, root):
        if path.suffix == ".md":
            md_names.setdefault(path.name, []).append(path.resolve())
    problems = []
    for start in SCANNED:
        if not (root / start).exists():
            continue
        for path in _walk(root, root / start):
            text = None if path.resolve() == Path(__file__).resolve() else _text(path)
            if text is None:  # binary, or this file (its examples name missing files on purpose)
                continue
            rel = path.relative_to(root).as_posix()
            for number, line in enumerate(text.splitlines(), 1):
                for match in CITATION.finditer(URL.sub("", line)):
                    name, anchor = match[1], (match[2] or "")[1:]
                    if Path(name).name in GENERATED:
                        continue
                    target = _resolve(root, path, name, md_names)
                    if target is None:
                        problems.append(f"{rel}:{number}: {name} is not in the repository")
                    else:
                        _check_anchor(target, anchor, f"{rel}:{number}", match[0], problems)
    return problems


def link_problems(root: Path) -> list[str]:
    """Every Markdown link of README.md and docs/*.md to a repository path that does not resolve."""
    root = root.resolve()
    problems = []
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        fenced = False
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if FENCE.match(line):
                fenced = not fenced
            if fenced:
                continue
            for target in LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target):
                    continue  # a URL (http:, mailto:)
                name, _, anchor = target.partition("#")
                resolved = (path.parent / name).resolve() if name else path
                if not resolved.exists():
                    problems.append(f"{rel}:{number}: link to {name}, which does not exist")
                else:
                    _check_anchor(resolved, anchor, f"{rel}:{number}", target, problems)
    return problems


def test_named_markdown_files_exist():
    problems = citation_problems(ROOT)
    assert not problems, "\n".join(problems)


def test_markdown_links_resolve():
    problems = link_problems(ROOT)
    assert not problems, "\n".join(problems)


def test_every_subpackage_says_what_it_is():
    import ast

    for folder in sorted((ROOT / "raydistill").iterdir()):
        if folder.is_dir() and folder.name != "__pycache__":
            init = folder / "__init__.py"
            assert init.is_file(), f"{folder.name}/ has no __init__.py"
            assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), f"{init} has no docstring"


def test_the_checks_catch_what_they_are_for(tmp_path):
    """A missing file, a missing section and a broken link are each reported, with where."""
    gone = "GONE" + ".md"
    (tmp_path / "docs").mkdir()
    (tmp_path / "raydistill").mkdir()
    (tmp_path / "docs" / "real.md").write_text("# Real\n\n## A section\n\n```\n# not a heading\n```\n")
    (tmp_path / "raydistill" / "code.py").write_text(
        f'"""See {gone} §4, docs/real.md#a-section and docs/real.md#not-a-heading."""\n'
        "# written at run time: table.md; online: https://example.org/x/ELSEWHERE.md\n")
    (tmp_path / "README.md").write_text(
        f"[ok](docs/real.md#a-section) [gone](docs/{gone}) [no section](docs/real.md#nope) [self](#nope)\n")

    assert citation_problems(tmp_path) == [
        f"raydistill/code.py:1: {gone} is not in the repository",
        "raydistill/code.py:1: docs/real.md#not-a-heading: no heading with anchor #not-a-heading in real.md",
        f"README.md:1: docs/{gone} is not in the repository",
        "README.md:1: docs/real.md#nope: no heading with anchor #nope in real.md",
    ]
    assert link_problems(tmp_path) == [
        f"README.md:1: link to docs/{gone}, which does not exist",
        "README.md:1: docs/real.md#nope: no heading with anchor #nope in real.md",
        "README.md:1: #nope: no heading with anchor #nope in README.md",
    ]
