"""The docs a newcomer reads: a README under 250 lines that reaches every page under docs/, and no link or
repository path in README.md, docs/*.md or benchmarks/README.md that points nowhere (the package's folders
move; its docs must follow)."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
PATH = re.compile(r"(?<![\w/.-])((?:tl_research|configs|benchmarks|tests|experiments|docs)/[\w./-]*\w)")


def _targets(page: pathlib.Path):
    text = page.read_text()
    for m in LINK.finditer(text):
        if not re.match(r"[a-z]+://", m.group(1)):
            yield m.group(1), page.parent / m.group(1)
    for m in PATH.finditer(text):
        placeholder = any(re.fullmatch(r"[A-Z_]+(\.\w+)?", part) for part in m.group(1).split("/"))
        if not placeholder and "*" not in m.group(1):  # configs/X.py is a placeholder
            yield m.group(1), ROOT / m.group(1)


def test_the_readme_is_short_and_reaches_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    linked = {pathlib.Path(t).name for t, _ in _targets(ROOT / "README.md")}
    missing = [p.name for p in (ROOT / "docs").glob("*.md") if p.name not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


def test_every_link_and_repository_path_in_the_docs_exists():
    broken = [f"{page.relative_to(ROOT)}: {t}" for page in PAGES for t, path in _targets(page) if not path.exists()]
    assert not broken, "\n".join(broken)
