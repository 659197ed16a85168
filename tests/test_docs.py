"""The repository explains itself: every Markdown file the code, tests, configs and docs name
is in the repository, every section they cite is a heading of it, every link in the README and
docs/ resolves, and every code reference of the README and docs/ (a file, a file's name, a
dotted name) names code that exists (see "code references" below).

A citation is a path or bare file name ending in ``.md``, optionally with ``#section`` (the
heading's anchor as GitHub makes it): ``docs/methods.md#dkd``, ``masking.md``. A path is read
relative to the file that names it or to the repository root; a bare name may be any file of
the repository with that name.
"""

from __future__ import annotations

import ast
import os
import re
from functools import lru_cache
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


def guide_lines(root: Path):
    """(path, "file:line", line) of README.md and docs/*.md, fenced code blocks (and their fences) left out."""
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        fenced = False
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if FENCE.match(line):
                fenced = not fenced
                continue
            if not fenced:
                yield path, f"{rel}:{number}", line


def link_problems(root: Path) -> list[str]:
    """Every Markdown link of README.md and docs/*.md to a repository path that does not resolve."""
    root = root.resolve()
    problems = []
    for path, where, line in guide_lines(root):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue  # a URL (http:, mailto:)
            name, _, anchor = target.partition("#")
            resolved = (path.parent / name).resolve() if name else path
            if not resolved.exists():
                problems.append(f"{where}: link to {name}, which does not exist")
            else:
                _check_anchor(resolved, anchor, where, target, problems)
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


# --- code references -----------------------------------------------------------------------
#
# README.md and docs/*.md name code in backticks. Three shapes are checked, by reading the
# source with ``ast`` (nothing is imported, so the check stays fast):
#
# * a path to a Python file, ``raydistill/search/run.py`` or package-relative ``search/run.py``
#   (its first folder a top-level folder of the repository or of ``raydistill/``): the file
#   exists. A bare ``run.py`` is not checked (files raydistill writes, ``expert.py``, are bare).
# * a path or bare file name with a name, ``models/heads.py: PredictionHead`` or
#   ``heads_fit.py: DevSelection.update``, or a path followed by the name in brackets,
#   ``models/config.py`` (``PRESETS``): the file exists (a bare name: some file of that name)
#   and defines the name (dotted: a class and its attribute).
# * a dotted name, ``raydistill.models.macs.macs_per_second`` (the module, then names in it;
#   ``raydistill.status`` and other MLflow tags, whose second part is no module, are left alone),
#   or ``Class.attribute`` where ``Class`` is a class raydistill defines: the attribute exists.
# Anything else in backticks (options, config paths such as ``optim.lr``, shell commands) is
# left alone. Fenced code blocks are not read.

CODE_SPAN = re.compile(r"`([^`\n]+)`")
PY_PATH = re.compile(r"^((?:[\w.-]+/)*[\w-]+\.py)(?::\s*([A-Za-z_][\w.]*))?$")
DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")
NAME_AFTER = re.compile(r"^\s*\(`([A-Za-z_]\w*)`\)")


@lru_cache(maxsize=None)
def _tree(path: Path):
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _body_names(body) -> dict:
    """Names a module or class body binds: {name: the node (a ClassDef for classes) or None}."""
    out: dict = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        out[sub.id] = None
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
            out[node.target.id] = None
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                out[(alias.asname or alias.name).split(".")[0]] = None
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for part in ("body", "orelse", "finalbody"):
                out.update(_body_names(getattr(node, part, [])))
            for handler in getattr(node, "handlers", []):
                out.update(_body_names(handler.body))
    return out


def _class_names(cls: ast.ClassDef) -> set:
    """A class's attributes: its body's names, ``self.x = ...`` in its methods, NamedTuple and
    dataclass fields (annotated names are in the body)."""
    names = set(_body_names(cls.body))
    for node in ast.walk(cls):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                    names.add(target.attr)
    return names


def _defines(path: Path, dotted: str) -> bool:
    """Whether the Python file ``path`` defines ``dotted`` (``Name`` or ``Class.attr``)."""
    tree = _tree(path)
    if tree is None:
        return False
    first, *rest = dotted.split(".")
    names = _body_names(tree.body)
    if path.name == "__init__.py":  # a package's submodules are its attributes
        names.update({p.stem: None for p in path.parent.glob("*.py")})
        names.update({p.name: None for p in path.parent.iterdir() if (p / "__init__.py").is_file()})
    if first not in names:
        return False
    node = names[first]
    if not rest:
        return True
    if isinstance(node, ast.ClassDef):
        return rest[0] in _class_names(node)
    return True  # an attribute of something other than a class: not followed


def _module_file(root: Path, parts: list[str]):
    """The file of the module ``parts`` (``["raydistill", "models", "macs"]``), or None."""
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _python_files(root: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for path in _walk(root, root):
        if path.suffix == ".py":
            out.setdefault(path.name, []).append(path)
    return out


def _raydistill_classes(root: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    package = root / "raydistill"
    if package.is_dir():
        for path in _walk(root, package):
            tree = _tree(path) if path.suffix == ".py" else None
            for node in tree.body if tree else []:
                if isinstance(node, ast.ClassDef):
                    out.setdefault(node.name, []).append(path)
    return out


def code_reference_problems(root: Path) -> list[str]:
    """Every backticked code reference of README.md and docs/*.md that names no file or name."""
    root = root.resolve()
    top = {p.name for p in root.iterdir() if p.is_dir()}
    package = root / "raydistill"
    sub = {p.name for p in package.iterdir() if p.is_dir()} if package.is_dir() else set()
    files = _python_files(root)
    classes = _raydistill_classes(root)
    problems = []

    def check_path(where: str, path: str, name) -> None:
        first = path.split("/")[0]
        if "/" in path:
            if first not in top and first not in sub:
                return  # a path under a folder raydistill writes (runs/, exported/, ...)
            candidates = [c for c in (root / path, package / path) if c.is_file()]
            if not candidates:
                problems.append(f"{where}: `{path}` is not in the repository")
                return
        else:
            candidates = files.get(path, [])
            if not name:
                return  # a bare file name: maybe one raydistill writes
            if not candidates:
                problems.append(f"{where}: `{path}: {name}`: no file {path} in the repository")
                return
        if name and not any(_defines(c, name) for c in candidates):
            shown = ", ".join(sorted(c.relative_to(root).as_posix() for c in candidates))
            problems.append(f"{where}: `{path}: {name}`: {shown} defines no {name}")

    def check_dotted(where: str, token: str) -> None:
        parts = token.split(".")
        if parts[0] == "raydistill":
            if _module_file(root, parts[:2]) is None:
                return  # not a module: an MLflow tag such as raydistill.status
            for cut in range(len(parts), 0, -1):
                module = _module_file(root, parts[:cut])
                if module is not None:
                    rest = parts[cut:]
                    if rest and not _defines(module, ".".join(rest[:2])):
                        problems.append(f"{where}: `{token}`: {module.relative_to(root).as_posix()} defines no "
                                        f"{'.'.join(rest[:2])}")
                    return
            problems.append(f"{where}: `{token}`: no such module")
        elif parts[0] in classes and len(parts) == 2:
            if not any(_defines(c, token) for c in classes[parts[0]]):
                shown = ", ".join(sorted(c.relative_to(root).as_posix() for c in classes[parts[0]]))
                problems.append(f"{where}: `{token}`: class {parts[0]} ({shown}) has no attribute {parts[1]}")

    for _, where, line in guide_lines(root):
        for span in CODE_SPAN.finditer(line):
            token = span[1].strip()
            if PY_PATH.match(token):
                file, name = PY_PATH.match(token).groups()
                after = NAME_AFTER.match(line[span.end():])
                check_path(where, file, name or (after[1] if after else None))
            elif DOTTED.match(token):
                check_dotted(where, token)
    return problems


def test_code_references_resolve():
    problems = code_reference_problems(ROOT)
    assert not problems, "\n".join(problems)


def test_the_code_reference_check_catches_what_it_is_for(tmp_path):
    """A missing file, a name a file does not define, a class without the attribute and a
    dotted name a module lacks are each reported with file:line; the rest is left alone."""
    pkg = tmp_path / "raydistill" / "models"
    pkg.mkdir(parents=True)
    (tmp_path / "raydistill" / "__init__.py").write_text('"""p."""\n')
    (pkg / "__init__.py").write_text('"""m."""\n')
    (pkg / "hubert.py").write_text("PRESETS = {}\n\nclass HubertModel:\n    def __init__(self):\n"
                                   "        self.mask_emb = 1\n\n    def forward(self):\n        pass\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        "`models/hubert.py: HubertModel.forward` `raydistill/models/hubert.py` (`PRESETS`) `HubertModel.mask_emb`\n"
        "`raydistill.models.hubert.HubertModel` `raydistill.status` `optim.lr` `runs/cache/x.py` `expert.py` `mask.prob`\n"
        "```\n`models/gone.py`\n```\n"
        "`models/gone.py` `models/hubert.py: PredictionHead` `hubert.py: Nope` `models/hubert.py` (`NOPE`)\n"
        "`HubertModel.nope` `raydistill.models.hubert.Gone` `raydistill.models.gone.X` `heads.py: H`\n")
    assert code_reference_problems(tmp_path) == [
        "README.md:6: `models/gone.py` is not in the repository",
        "README.md:6: `models/hubert.py: PredictionHead`: raydistill/models/hubert.py defines no PredictionHead",
        "README.md:6: `hubert.py: Nope`: raydistill/models/hubert.py defines no Nope",
        "README.md:6: `models/hubert.py: NOPE`: raydistill/models/hubert.py defines no NOPE",
        "README.md:7: `HubertModel.nope`: class HubertModel (raydistill/models/hubert.py) has no attribute nope",
        "README.md:7: `raydistill.models.hubert.Gone`: raydistill/models/hubert.py defines no Gone",
        "README.md:7: `raydistill.models.gone.X`: raydistill/models/__init__.py defines no gone.X",
        "README.md:7: `heads.py: H`: no file heads.py in the repository",
    ]
