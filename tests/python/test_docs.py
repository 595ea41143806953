"""The documentation: its links resolve, and it documents the command line.

- Every relative link in README.md, docs/**/*.md and
  example-connectors/*/README.md points to a file or folder that exists, and
  every `#anchor` (in the same file, or `file.md#anchor`) to a heading of the
  target markdown file, by GitHub's anchor rules: lower case, punctuation
  other than `-` and `_` dropped, each space a `-`, and `-1`, `-2`, ... for a
  repeated heading. Links to http(s):// and mailto: and links inside fenced
  code blocks or code spans are not checked.
- Every long flag `flyte-connect --help` prints is in
  docs/operating/cli.md, and every one `flyte-connect run --help` prints in
  docs/authoring/local-run.md; a flag with an alias (`--prometheus_port`,
  `--prometheus-port`) counts if either spelling is.

The checkers return what they find rather than assert, so the tests at the
end can show that they do find a broken link, a broken anchor and an
undocumented flag.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Set
from urllib.parse import unquote

import pytest
from conftest import REPO_ROOT, SERVER_BIN

#: The pages whose links are checked.
DOC_FILES = sorted(
    [
        REPO_ROOT / "README.md",
        *(REPO_ROOT / "docs").rglob("*.md"),
        *(REPO_ROOT / "example-connectors").glob("*/README.md"),
    ]
)
#: Where each command's flags must be documented.
SERVER_FLAGS_DOC = REPO_ROOT / "docs" / "operating" / "cli.md"
RUN_FLAGS_DOC = REPO_ROOT / "docs" / "authoring" / "local-run.md"

#: Links the checker leaves alone.
EXTERNAL = ("http://", "https://", "mailto:")
#: Flags every clap command has, documented nowhere in particular.
IGNORED_FLAGS = {"--help", "--version"}

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)\s*$")
HTML_ID = re.compile(r"""<a\s[^>]*\b(?:name|id)\s*=\s*["']([^"']+)["']""", re.I)
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
# [text](target) or [text](target "title"); the text may hold one level of
# brackets and may span lines. Images (![alt](src)) match too.
INLINE_LINK = re.compile(r"\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.M)
FLAG = re.compile(r"--[a-z][a-z0-9_-]*")
ALIASES = re.compile(r"\[alias(?:es)?: ([^\]]*)\]")
OPTION_LINE = re.compile(r"^\s+(?:-\w, )?(--[a-z][a-z0-9_-]*)")


# -- reading markdown -----------------------------------------------------------------


def without_fences(text: str) -> str:
    """`text` with its fenced code blocks blanked out, keeping every
    newline, so offsets still give line numbers."""
    lines = text.split("\n")
    fence = ""
    for i, line in enumerate(lines):
        opening = FENCE.match(line)
        if fence:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = ""
            lines[i] = ""
        elif opening:
            fence = opening.group(1)
            lines[i] = ""
    return "\n".join(lines)


def prose(text: str) -> str:
    """`text` with fenced code blocks and code spans blanked out, keeping
    every newline."""

    def blank(span: re.Match) -> str:
        if re.search(r"\n[ \t]*\n", span.group(0)):
            return span.group(0)  # a code span never crosses a blank line
        return re.sub(r"[^\n]", " ", span.group(0))

    return CODE_SPAN.sub(blank, without_fences(text))


def anchor_of(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(text: str) -> Iterator[str]:
    """The headings of a markdown text, outside code blocks."""
    previous = ""
    for line in without_fences(text).split("\n"):
        atx = ATX_HEADING.match(line)
        if atx:
            yield atx.group(2)
        elif SETEXT_UNDERLINE.match(line) and is_paragraph_line(previous):
            yield previous.strip()
        previous = line


def is_paragraph_line(line: str) -> bool:
    """Whether `line` may be a setext heading's text (not a table row, list
    item, quote or heading)."""
    return bool(line.strip()) and not line.lstrip().startswith(("|", "-", "*", "+", ">", "#"))


def anchors(path: Path) -> Set[str]:
    """Every anchor a link may name in the markdown file `path`."""
    text = path.read_text(encoding="utf-8")
    found: Set[str] = set()
    seen: Dict[str, int] = {}
    for heading in headings(text):
        anchor = anchor_of(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    found.update(HTML_ID.findall(text))
    return found


def links(text: str) -> Iterator[tuple[int, str]]:
    """(line number, target) of each link in a markdown text, outside code."""
    checked = prose(text)
    for match in INLINE_LINK.finditer(checked):
        yield checked.count("\n", 0, match.start(2)) + 1, match.group(2)
    for match in REFERENCE_DEFINITION.finditer(checked):
        yield checked.count("\n", 0, match.start(1)) + 1, match.group(1)


# -- the checkers -----------------------------------------------------------------------


def link_problems(page: Path) -> List[str]:
    """Every relative link of the markdown file `page` that does not
    resolve: a missing file or folder, or an anchor no heading has."""
    problems = []
    text = page.read_text(encoding="utf-8")
    where = page.relative_to(REPO_ROOT) if page.is_relative_to(REPO_ROOT) else page
    for line, target in links(text):
        if not target or target.startswith(EXTERNAL):
            if not target:
                problems.append(f"{where}:{line}: an empty link")
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not resolved.exists():
            problems.append(f"{where}:{line}: {target}: no such file or folder")
            continue
        if anchor and resolved.is_file() and resolved.suffix == ".md" and unquote(anchor) not in anchors(resolved):
            problems.append(f"{where}:{line}: {target}: no heading has the anchor #{anchor}")
    return problems


def flag_groups(help_text: str) -> List[Set[str]]:
    """The long flags a command's help prints, each with its aliases (one
    set per option); --help and --version left out."""
    groups: List[Set[str]] = []
    for flag in sorted(set(FLAG.findall(help_text)) - IGNORED_FLAGS):
        if not any(flag in group for group in groups):
            groups.append({flag})
    current = None
    for line in help_text.split("\n"):
        option = OPTION_LINE.match(line)
        if option:
            current = option.group(1)
        for aliases in ALIASES.findall(line):
            if current is None:
                continue
            names = {current, *FLAG.findall(aliases)}
            merged = {flag for group in groups if group & names for flag in group} | names
            groups = [group for group in groups if not group & names] + [merged - IGNORED_FLAGS]
    return groups


def undocumented_flags(help_text: str, doc_text: str) -> List[str]:
    """The flags of `help_text` whose every spelling is missing from `doc_text`."""

    def documented(flag: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", doc_text) is not None

    return sorted(" / ".join(sorted(group)) for group in flag_groups(help_text) if not any(map(documented, group)))


def help_of(*args: str) -> str:
    assert SERVER_BIN.is_file(), f"{SERVER_BIN} not found: build it (make build) or set FLYTE_CONNECT_BIN"
    result = subprocess.run([str(SERVER_BIN), *args, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- the documentation --------------------------------------------------------------------


def test_the_checked_pages_include_the_readme_and_the_docs_index():
    assert REPO_ROOT / "README.md" in DOC_FILES
    assert REPO_ROOT / "docs" / "README.md" in DOC_FILES


@pytest.mark.parametrize("page", DOC_FILES, ids=lambda page: str(page.relative_to(REPO_ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path):
    problems = link_problems(page)
    assert not problems, "\n".join(problems)


def test_every_server_flag_is_documented_in_the_cli_page():
    missing = undocumented_flags(help_of(), SERVER_FLAGS_DOC.read_text(encoding="utf-8"))
    assert not missing, f"flags `flyte-connect --help` prints that {SERVER_FLAGS_DOC.name} lacks: {missing}"


def test_every_run_flag_is_documented_in_the_local_run_page():
    missing = undocumented_flags(help_of("run"), RUN_FLAGS_DOC.read_text(encoding="utf-8"))
    assert not missing, f"flags `flyte-connect run --help` prints that {RUN_FLAGS_DOC.name} lacks: {missing}"


# -- the checkers themselves ----------------------------------------------------------------


def test_the_link_checker_reports_a_missing_file_and_an_unknown_anchor(tmp_path: Path):
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n"
        "\n"
        "[fine](other.md#a-section), [here](#page), [a folder](.), [the web](https://example.com/x.md#y).\n"
        "[gone](missing.md) and [no such\n"
        "anchor](other.md#no-such-heading), [nor here](#nowhere).\n"
        "\n"
        "```md\n"
        "[in a code block](missing-too.md)\n"
        "```\n"
        "`[in a code span](missing-three.md)`\n",
        encoding="utf-8",
    )
    problems = link_problems(page)
    assert len(problems) == 3, problems
    assert "missing.md: no such file or folder" in problems[0]
    assert ":5: other.md#no-such-heading: no heading has the anchor #no-such-heading" in problems[1]
    assert "#nowhere: no heading has the anchor #nowhere" in problems[2]


def test_anchors_follow_githubs_rules():
    assert anchor_of("What a manifest may read") == "what-a-manifest-may-read"
    assert anchor_of("`[[http.tls]]`") == "httptls"
    assert anchor_of("allowed_hosts rules") == "allowed_hosts-rules"
    assert anchor_of("Tutorial: a connector that calls an HTTP API") == "tutorial-a-connector-that-calls-an-http-api"
    assert anchor_of("What the sandbox's bounds cost") == "what-the-sandboxs-bounds-cost"
    assert anchor_of("See [Limits](limits.md) — twice") == "see-limits--twice"


def test_a_repeated_heading_gets_a_numbered_anchor(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("# Notes\n\n## Notes\n\n```\n# not a heading\n```\n", encoding="utf-8")
    assert anchors(page) == {"notes", "notes-1"}


def test_a_heading_of_code_is_anchored_by_the_code_text(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("# Keys\n\n### `[http]`\n\n### `[[http.tls]]`\n", encoding="utf-8")
    assert anchors(page) == {"keys", "http", "httptls"}


def test_the_flag_checker_reports_an_undocumented_flag_and_accepts_either_spelling_of_an_alias():
    help_text = (
        "Options:\n"
        "      --port <PORT>\n"
        "          Port [default: 8000]\n"
        "      --prometheus_port <PROMETHEUS_PORT>\n"
        "          Metrics port [default: 9090] [alias: --prometheus-port]\n"
        "      --max-queued-calls <MAX_QUEUED_CALLS>\n"
        "          Calls that may wait\n"
        "  -h, --help\n"
        "          Print help\n"
    )
    doc = "| `--port` | ... |\n| `--prometheus-port` | ... |\n| `--max-queued` | not the same flag |\n"
    assert undocumented_flags(help_text, doc) == ["--max-queued-calls"]
