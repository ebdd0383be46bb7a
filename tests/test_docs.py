"""The documentation: the mkdocs site builds in strict mode (a broken link, a missing anchor or a page left out of the
nav fails it), every page of docs/ is in the nav, and the README stays short, starts with the two commands and links
only to files that exist. Each check is also run on a broken input, to show that it can fail."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONFIG = ROOT / "mkdocs.yml"
DOCS = ROOT / "docs"
MAX_README_LINES = 200
FIRST_COMMANDS = ["make demo", "make test"]  # .ci/run calls `make test`; a newcomer's first two commands

needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None,
    reason="mkdocs is not installed (it is in requirements.txt and the 'docs' extra: pip install 'mkdocs>=1.6')",
)

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target) and ![alt](target)
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of ``config`` into ``site``, with its output."""
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config)]
    return subprocess.run([*command, "--site-dir", str(site)], capture_output=True, text=True, timeout=300)


def nav_pages(config_text: str) -> set[str]:
    """The Markdown files the ``nav`` of a mkdocs.yml text lists (paths relative to docs_dir)."""
    match = re.search(r"^nav:\n((?:[ \t]+.*\n?)*)", config_text, re.MULTILINE)
    assert match, "mkdocs.yml has no nav: list every page there"
    return set(re.findall(r"([\w./-]+\.md)\b", match.group(1)))


def orphans(docs: Path, config_text: str) -> list[str]:
    """Pages under ``docs`` that the nav does not list."""
    listed = nav_pages(config_text)
    return sorted(
        p.relative_to(docs).as_posix() for p in docs.rglob("*.md") if p.relative_to(docs).as_posix() not in listed
    )


def broken_links(markdown: str, base: Path) -> list[str]:
    """Relative link targets in ``markdown`` (anchors and queries dropped) with no file or folder under ``base``."""
    broken = []
    for target in LINK.findall(markdown):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):  # https:, mailto:, an anchor here
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        if not (base / path).exists():
            broken.append(target)
    return broken


def shell_commands(markdown: str) -> list[str]:
    """The commands of the shell code blocks in ``markdown``, in order, without comments."""
    commands = []
    for language, body in FENCE.findall(markdown):
        if language not in SHELL_FENCES:
            continue
        for line in body.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


# --- the site --------------------------------------------------------------------------------------------------


@needs_mkdocs
def test_the_site_builds_in_strict_mode(tmp_path):
    result = mkdocs_build(CONFIG, tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    for page in nav_pages(CONFIG.read_text()):
        assert (tmp_path / "site" / Path(page).with_suffix("") / "index.html").is_file() or page == "index.md", page
    assert (tmp_path / "site" / "index.html").is_file()


@needs_mkdocs
@pytest.mark.parametrize(
    "breakage, message",
    [
        ("[a page that is not there](nowhere.md)", "nowhere.md"),
        ("[an anchor that is not there](training.md#no-such-section)", "no-such-section"),
    ],
)
def test_a_broken_link_fails_the_build(tmp_path, breakage, message):
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(CONFIG, tmp_path / "mkdocs.yml")
    with open(tmp_path / "docs" / "index.md", "a") as f:
        f.write(f"\n{breakage}\n")
    result = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0 and message in result.stdout + result.stderr, result.stdout + result.stderr


def test_every_page_is_in_the_nav():
    assert orphans(DOCS, CONFIG.read_text()) == []
    assert all((DOCS / page).is_file() for page in nav_pages(CONFIG.read_text()))


def test_a_page_left_out_of_the_nav_is_found(tmp_path):
    shutil.copytree(DOCS, tmp_path / "docs")
    (tmp_path / "docs" / "forgotten.md").write_text("# Forgotten\n")
    assert orphans(tmp_path / "docs", CONFIG.read_text()) == ["forgotten.md"]


# --- the README ------------------------------------------------------------------------------------------------


def readme_problems(text: str, root: Path) -> list[str]:
    """What is wrong with a README ``text`` whose relative links start at ``root``: its length, its first two
    commands, its broken links."""
    problems = []
    lines = len(text.splitlines())
    if lines > MAX_README_LINES:
        problems.append(f"{lines} lines, more than {MAX_README_LINES}: move the detail into docs/")
    first = shell_commands(text)[:2]
    if first != FIRST_COMMANDS:
        problems.append(f"its first two commands are {first}, not {FIRST_COMMANDS}")
    problems += [f"relative link to a missing file: {target}" for target in broken_links(text, root)]
    return problems


def test_readme_is_short_starts_with_the_two_commands_and_links_to_files():
    assert readme_problems(README.read_text(), ROOT) == []
    assert any(t.startswith("docs/") for t in LINK.findall(README.read_text())), "the README links to no guide"


def test_readme_links_every_guide():
    linked = {t.split("#", 1)[0] for t in LINK.findall(README.read_text())}
    missing = sorted(
        f"docs/{p}" for p in nav_pages(CONFIG.read_text()) if p != "index.md" and f"docs/{p}" not in linked
    )
    assert missing == [], f"the README's Documentation section lacks {missing}"


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda t: t + "\n".join(["more"] * MAX_README_LINES), "lines, more than"),
        (lambda t: t.replace("make demo ", "make tset ", 1), "first two commands"),
        (lambda t: t.replace("make test ", "make lint ", 1), "first two commands"),
        (lambda t: "```\npip install tresnet-nb\n```\n" + t, "first two commands"),
        (lambda t: t + "\n[gone](docs/no-such-guide.md)\n", "docs/no-such-guide.md"),
        (lambda t: t.replace("(docs/training.md)", "(docs/trainng.md)"), "docs/trainng.md"),
    ],
)
def test_each_readme_check_can_fail(change, problem):
    problems = readme_problems(change(README.read_text()), ROOT)
    assert any(problem in p for p in problems), problems
