"""The README is executable, and its results live in ``docs/results.md`` with their provenance.

Every ```` ```python ```` block of README.md runs, in order, in one namespace (blocks share state
like notebook cells), in a fresh Python process: the README's own imports must be enough, and no
other test's compiled graphs, RNG state or imports can make a block pass. ```` ```bash ```` blocks
are shell commands and are not run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results.md"


class Block(NamedTuple):
    line: int  # 1-based line number of the block's first code line in the markdown file
    source: str


def python_blocks(text: str) -> list[Block]:
    """The ```` ```python ```` fenced blocks of a markdown text, in order.

    Raises:
        ValueError: naming the line of a fence that is never closed.
    """
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = lines[i].strip()
        if not fence.startswith("```"):
            i += 1
            continue
        opened = i
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        if i == len(lines):
            raise ValueError(f"python_blocks: the fence at line {opened + 1} is never closed")
        if fence[3:].strip() == "python":
            blocks.append(Block(opened + 2, "\n".join(lines[opened + 1 : i]) + "\n"))
        i += 1
    return blocks


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a markdown heading: lower case, punctuation but ``-`` and ``_``
    dropped, spaces to ``-``."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(text: str) -> dict[str, str]:
    """``{anchor: heading}`` of the ``#``-headings outside code blocks."""
    out: dict[str, str] = {}
    in_code = False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip()
            out[github_anchor(title)] = title
    return out


# The runner executes the blocks in a fresh interpreter; on an exception it prints one JSON line
# (marked) naming the block, so the test can say which block failed and where.
# Each block is compiled after line - 1 blank lines, so tracebacks give README.md's line numbers.
_RUNNER = r"""
import json, sys, traceback
blocks = json.load(sys.stdin)
namespace = {"__name__": "__readme__"}
for line, source in blocks:
    try:
        exec(compile("\n" * (line - 1) + source, "README.md", "exec"), namespace)
    except BaseException:
        print("@@README-FAILURE@@" + json.dumps({"line": line, "traceback": traceback.format_exc()}))
        sys.exit(1)
"""

_MARK = "@@README-FAILURE@@"


def run_blocks(blocks: list[Block]) -> str | None:
    """Runs ``blocks`` in order in one namespace in a fresh interpreter (this checkout's funcrl
    first on the path). Returns ``None`` when every block ran, else a message naming the failing
    block's line, its first line and its traceback."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",  # a shared CI machine: one intra-op thread, as conftest.py sets
    }
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=json.dumps([list(b) for b in blocks]),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=900,  # a hang guard, not a timing check
    )
    if proc.returncode == 0:
        return None
    failure = next((ln for ln in proc.stdout.splitlines() if ln.startswith(_MARK)), None)
    if failure is None:
        return f"the block runner exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    info = json.loads(failure[len(_MARK) :])
    first = next(b.source.splitlines()[0] for b in blocks if b.line == info["line"])
    return f"block at line {info['line']} (first line: {first!r}) raised:\n{info['traceback']}"


# -- the extractor ---------------------------------------------------------------------------------


def test_python_blocks_finds_python_fences_with_their_line_numbers():
    text = (
        "# title\n"  # 1
        "```bash\n"  # 2
        "make demo\n"  # 3
        "```\n"  # 4
        "text\n"  # 5
        "```python\n"  # 6
        "x = 1\n"  # 7
        "y = x + 1\n"  # 8
        "```\n"  # 9
        "```\n"  # 10: an unlabelled block (a file tree) is not run
        "funcrl/\n"  # 11
        "```\n"  # 12
        "```python\n"  # 13
        "z = y\n"  # 14
        "```\n"  # 15
    )
    assert python_blocks(text) == [Block(7, "x = 1\ny = x + 1\n"), Block(14, "z = y\n")]


_code_line = st.text(alphabet="abcxyz =+1()#", min_size=0, max_size=12)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["python", "bash", ""]),
            st.lists(_code_line, min_size=1, max_size=4),
            st.integers(0, 2),  # prose lines before the block
        ),
        max_size=5,
    )
)
def test_python_blocks_returns_exactly_the_python_blocks(spec):
    lines: list[str] = []
    expected: list[Block] = []
    for lang, code, prose in spec:
        lines += ["some prose"] * prose + [f"```{lang}"]
        if lang == "python":
            expected.append(Block(len(lines) + 1, "\n".join(code) + "\n"))
        lines += [*code, "```"]
    assert python_blocks("\n".join(lines) + "\n") == expected


def test_python_blocks_rejects_an_unclosed_fence():
    with pytest.raises(ValueError, match=r"python_blocks: the fence at line 2 is never closed"):
        python_blocks("text\n```python\nx = 1\n")


def test_github_anchor_matches_github_slugs():
    assert github_anchor("`make demo` and SAC on Pendulum") == "make-demo-and-sac-on-pendulum"
    assert github_anchor("Multi-agent (VMAS)") == "multi-agent-vmas"
    assert github_anchor("Where the update step's time goes") == "where-the-update-steps-time-goes"
    assert github_anchor("SAC on HalfCheetah-v5") == "sac-on-halfcheetah-v5"


def test_run_blocks_shares_one_namespace_and_names_the_failing_block():
    text = "```python\nx = 1\n```\n\n```python\ny = x + 1\nz = y + missing\n```\n"
    failure = run_blocks(python_blocks(text))
    assert failure is not None
    assert failure.startswith("block at line 6 (first line: 'y = x + 1') raised:")
    assert 'File "README.md", line 7' in failure  # the markdown file's own line number
    assert "NameError: name 'missing' is not defined" in failure
    assert (
        run_blocks(python_blocks("```python\nx = 1\n```\n```python\nassert x == 1\n```\n")) is None
    )


# -- the README ------------------------------------------------------------------------------------


def test_readme_has_the_user_sections():
    found = set(headings(README.read_text()).values())
    for title in (
        "Quickstart",
        "Building a batch `Record`",
        "Composing a loss in your own loop",
        "Custom networks",
        "Layout",
        "Feature table",
        "Headline results",
    ):
        assert title in found, f"README.md lacks the section {title!r}"


def test_readme_python_blocks_run_in_order_in_a_fresh_process():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 5, f"README.md has only {len(blocks)} python blocks"
    failure = run_blocks(blocks)
    if failure is not None:
        pytest.fail(f"README.md {failure}")


def test_readme_and_results_carry_no_session_narration():
    pattern = re.compile(
        r"\b(this|previous|earlier|last|current) session\b|\bthe lead\b|\bwe\b", re.IGNORECASE
    )
    for path in (README, RESULTS):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            hit = pattern.search(line)
            assert hit is None, f"{path.name}:{n} narrates ({hit.group(0)!r}): {line.strip()}"


def test_readme_links_into_results_resolve():
    anchors = headings(RESULTS.read_text())
    links = re.findall(r"\]\(docs/results\.md(?:#([^)]*))?\)", README.read_text())
    assert links, "README.md links to no table of docs/results.md"
    for anchor in links:
        assert anchor == "" or anchor in anchors, (
            f"README.md links to docs/results.md#{anchor}, which has no such heading; "
            f"headings: {sorted(anchors)}"
        )


def test_results_internal_links_and_figures_resolve():
    text = RESULTS.read_text()
    anchors = headings(text)
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in anchors, f"docs/results.md links to #{anchor}, which has no heading"
    for target in re.findall(r"!\[[^\]]*\]\(([^)#]+)\)", text):
        assert (RESULTS.parent / target).is_file(), f"docs/results.md shows missing {target}"


def test_every_results_table_names_its_commit_and_command():
    sections = re.split(r"^## ", RESULTS.read_text(), flags=re.MULTILINE)[1:]
    with_tables = [s for s in sections if re.search(r"^\|---", s, flags=re.MULTILINE)]
    assert len(with_tables) >= 8
    for section in with_tables:
        title = section.splitlines()[0]
        assert re.search(r"\b[0-9a-f]{7}\b", section), f"section {title!r} names no commit"
        assert re.search(r"`(python|make) ", section), f"section {title!r} names no command"
