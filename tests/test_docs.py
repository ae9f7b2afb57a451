"""Docs that cannot drift: the commands and the code shown in README.md, docs/*.md and CONTRIBUTING.md.

- Every ``python -m nin ...`` or ``nin ...`` command in a fenced shell block (bash, sh, shell, or console
  with ``$`` prompts; ``\\`` continuations joined, ``&&`` / ``;`` / ``|`` chains split) parses with the CLI's
  own parser, ``nin.cli._parser()``: its flags, types and choices. Parsing imports no framework.
- Every ```python block runs, once per backend it offers (``from nin import torch as nin  # or: mxnet / tf``,
  or a backend's name as a string, with the others named in that line's ``# or`` comment) among those that
  ``NIN_BACKENDS`` requests (``tests/conftest.py``: one that cannot import fails), in a temporary directory,
  with tiny sizes (:data:`SIZES`, :data:`TINY_PRESETS`) and ``NIN_DATA`` pointing at a few fake images.
- Relative links point to files that exist, and their ``#anchors`` to headings that exist; the README's
  ``torch==`` pin is tox.ini's; README.md and docs/ speak of no particular machine.

A block that cannot run in a test is marked in the markdown, on the line right before its fence, with
``<!-- docs-test: skip (the reason) -->``; the test reports it as skipped, with the reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import linecache
import re
import shlex
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

import nin
import nin.cli
from conftest import REQUESTED, import_backend
from fakedata import make_set
from nin import presets

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "CONTRIBUTING.md"]
FRAMEWORKS = ("mxnet", "torch", "tensorflow", "keras", "jax", "flax", "optax", "paddle")

#: What the Python blocks are run with, instead of their own sizes: (pattern, replacement), in order.
SIZES = [
    (r"\bresize=\d+", "resize=67"),  # the smallest images NiN takes (spec.min_image_size)
    (r"\b(num_)?epochs=\d+", r"\g<1>epochs=1"),
    (r"\bbatch_size=\d+", "batch_size=4"),
    (r"\b(load_data_fashion_mnist\(\s*)\d+", r"\g<1>4"),  # its first argument: the batch size
    (r"\(\s*(\d+),\s*(\d+),\s*\d+,\s*\d+\s*\)", r"(\1, \2, 67, 67)"),  # an N,C,H,W input shape: 67x67 images
]
#: ...and every preset of nin.presets.PRESETS with these settings (presets.train, presets.resolve).
TINY_PRESETS = {"epochs": 1, "resize": 67, "batch_size": 4}
#: the fake Fashion-MNIST that NIN_DATA points at
FAKE_TRAIN, FAKE_TEST = 8, 4

SHELL = {"bash", "sh", "shell", "console", "zsh"}
FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
MARKER = re.compile(r"<!--\s*docs-test\b(?P<rest>.*?)-->")
MARKER_LINE = re.compile(r"^\s*<!--\s*docs-test\b(?P<rest>.*?)-->\s*$")
SKIP = re.compile(r"^:\s*skip\s*\((?P<reason>[^)]+)\)\s*$")
NAMES = "|".join(nin.BACKENDS)
BACKEND_IMPORT = re.compile(rf"\bfrom nin import (?P<name>{NAMES}) as nin\b")
BACKEND_STRING = re.compile(rf"""(?P<q>["'])(?P<name>{NAMES})(?P=q)""")
OPERATORS = {"&&", "||", ";", "|", "&", "(", ")"}
REDIRECTS = re.compile(r"^\d*[<>]+&?$")
MACHINE_TALK = re.compile(r"this project's machine|\bthis machine\b|\.\./shared|/work/", re.IGNORECASE)


@dataclass(frozen=True)
class Block:
    """A fenced code block of a markdown file."""

    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    skip: str | None  # the reason given by a skip marker right before the fence

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def read_markdown(path: Path) -> tuple[list[Block], list[tuple[int, str]]]:
    """The fenced blocks of ``path``, and its lines outside them as ``(line number, text)``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, prose, i = [], [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        fence, start = match["fence"], i
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        i += 1
        while i < len(lines) and not closing.match(lines[i]):
            i += 1
        before = next((line for line in reversed(lines[:start]) if line.strip()), "")
        marker = MARKER_LINE.match(before)
        skip = SKIP.match(marker["rest"]) if marker else None
        blocks.append(Block(path, start + 1, (match["info"].split() or [""])[0].lower(),
                            "".join(line + "\n" for line in lines[start + 1:i]), skip and skip["reason"].strip()))
        i += 1
    return blocks, prose


MARKDOWN = {path: read_markdown(path) for path in DOCS}
BLOCKS = [block for blocks, _ in MARKDOWN.values() for block in blocks]


# --- shell commands -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    where: str
    shown: str  # the command as the docs show it (continuations joined)
    args: list[str]  # what follows `python -m nin` or `nin`
    skip: str | None


def logical_lines(block: Block) -> list[tuple[int, str]]:
    """The shell lines of a block as ``(line number, text)``, ``\\`` continuations joined; in a console
    block only the lines after a ``$`` prompt (the rest is output)."""
    found, current, first = [], None, 0
    for number, line in enumerate(block.text.splitlines(), start=block.line + 1):
        if current is not None:
            current += " " + line.strip()
        elif block.lang == "console":
            if not line.startswith("$ "):
                continue
            current, first = line[2:], number
        else:
            current, first = line, number
        if current.rstrip().endswith("\\"):
            current = current.rstrip()[:-1].rstrip()
            continue
        found.append((first, current.strip()))
        current = None
    if current is not None:
        found.append((first, current.strip()))
    return found


def nin_commands(line: str) -> list[list[str]]:
    """The ``nin`` commands of one shell line: what follows ``python -m nin`` or ``nin`` in each simple
    command (``&&``, ``;``, ``|`` split; comments, redirections and leading ``VAR=value`` dropped)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    segments, current = [], []
    for token in lexer:
        if token in OPERATORS:
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    commands = []
    for words in segments:
        words = [w for i, w in enumerate(words) if not REDIRECTS.match(w)
                 and not (i and REDIRECTS.match(words[i - 1]))]
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words = words[1:]
        if words[:1] in (["python"], ["python3"]) and words[1:3] == ["-m", "nin"]:
            commands.append(words[3:])
        elif words[:1] == ["nin"]:
            commands.append(words[1:])
    return commands


COMMANDS = [Command(f"{block.path.relative_to(ROOT)}:{number}", line, args, block.skip)
            for block in BLOCKS if block.lang in SHELL
            for number, line in logical_lines(block) for args in nin_commands(line)]


def test_the_docs_show_commands_and_code():
    """The extraction finds what the README is known to show: guards against a parser that finds nothing."""
    assert any(c.where.startswith("README.md") and c.args[:1] == ["summary"] for c in COMMANDS)
    assert any(c.args[:1] == ["train"] for c in COMMANDS)
    assert sum(block.lang == "python" for block in BLOCKS) >= 3


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_command_parses(command):
    if command.skip:
        pytest.skip(f"marked in the docs: {command.skip}")
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            nin.cli._parser().parse_args(command.args)
    except SystemExit as exit_:
        if exit_.code == 0 and {"-h", "--help"} & set(command.args):
            return
        pytest.fail(f"{command.where}: `{command.shown}` does not parse: {stderr.getvalue().strip()}", pytrace=False)


def test_parsing_the_commands_imports_no_framework():
    commands = [c.args for c in COMMANDS if not c.skip and not {"-h", "--help"} & set(c.args)]
    code = ("import json, sys\nimport nin.cli\nparser = nin.cli._parser()\n"
            "for args in json.load(sys.stdin):\n    parser.parse_args(args)\n"
            f"print(json.dumps(sorted(set(sys.modules) & set({FRAMEWORKS!r}))))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(commands), capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


# --- Python blocks --------------------------------------------------------------------------------------------


def comments(code: str) -> dict[int, tuple[int, str]]:
    """Line number (1-based, in ``code``) -> (column, text) of each comment."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = (token.start[1], token.string)
    return found


def backend_lines(code: str) -> dict[int, tuple[set[str], set[str]]]:
    """Line number -> (backends its code names, backends its ``# or`` comment offers instead)."""
    notes, found = comments(code), {}
    for number, line in enumerate(code.splitlines(), start=1):
        column, comment = notes.get(number, (len(line), ""))
        names = {m["name"] for pattern in (BACKEND_IMPORT, BACKEND_STRING) for m in pattern.finditer(line[:column])}
        if names:
            others = set(re.findall(rf"\b({NAMES})\b", comment)) if re.search(r"\bor\b", comment) else set()
            found[number] = names, others
    return found


def offered_backends(block: Block) -> list[str | None]:
    """The backends a block runs in: the one its code names, and those its ``# or`` comments offer
    (every backend line must offer them); ``[None]`` for a block that names no backend."""
    lines = backend_lines(block.text)
    if not lines:
        return [None]
    named = set().union(*(names for names, _ in lines.values()))
    if len(named) > 1:  # a block that uses several backends at once runs once, with all of them
        return ["+".join(sorted(named, key=list(nin.BACKENDS).index))]
    offered = named | set.intersection(*(others for _, others in lines.values()))
    return sorted(offered, key=list(nin.BACKENDS).index)


def runnable(block: Block, backend: str | None) -> str:
    """The block's code in ``backend`` instead of the one it names, with the sizes of :data:`SIZES`."""
    code = block.text
    if backend and "+" not in backend:
        lines, notes, found = code.splitlines(keepends=True), comments(code), backend_lines(code)
        (shown,) = set().union(*(names for names, _ in found.values()))  # the one backend the code names

        def swap(match: re.Match) -> str:
            return f"{match['q']}{backend}{match['q']}" if match["name"] == shown else match[0]

        for number in found:
            line = lines[number - 1]
            column = notes.get(number, (len(line),))[0]
            head = BACKEND_STRING.sub(swap, BACKEND_IMPORT.sub(f"from nin import {backend} as nin", line[:column]))
            lines[number - 1] = head + line[column:]
        code = "".join(lines)
    for pattern, replacement in SIZES:
        code = re.sub(pattern, replacement, code)
    return code


def python_cases():
    cases = []
    for block in BLOCKS:
        if block.lang not in ("python", "py"):
            continue
        if block.skip:
            reason = f"{block.where}: marked in the docs: {block.skip}"
            cases.append(pytest.param(block, None, id=block.where, marks=pytest.mark.skip(reason=reason)))
            continue
        offered = offered_backends(block)
        runs = [b for b in offered if b is None or set(b.split("+")) <= set(REQUESTED)]
        cases += [pytest.param(block, b, id=f"{block.where}-{b or 'no-backend'}") for b in runs]
        if not runs:
            cases.append(pytest.param(block, None, id=f"{block.where}-{'|'.join(offered)}", marks=pytest.mark.skip(
                reason=f"{block.where} offers {', '.join(offered)}; NIN_BACKENDS requests {', '.join(REQUESTED)}")))
    return cases


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("fashion-mnist")
    make_set(directory, n_train=FAKE_TRAIN, n_test=FAKE_TEST)
    return directory


@pytest.mark.parametrize("block, backend", python_cases())
def test_python_block_runs(block, backend, fake_data, tmp_path, monkeypatch):
    for name in (backend or "").split("+"):
        if name:
            import_backend(name)  # a requested backend that cannot import fails here, loudly
    monkeypatch.setenv("NIN_DATA", str(fake_data))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.chdir(tmp_path)  # what a block writes (runs/, weights files) lands here
    for name, settings in list(presets.PRESETS.items()):
        monkeypatch.setitem(presets.PRESETS, name, {**settings, **TINY_PRESETS})
    code = runnable(block, backend)
    # Line numbers as in the markdown file, and the code that ran in tracebacks.
    filename = f"{block.path.relative_to(ROOT)} [{backend or 'no backend'}, sizes of test_docs.SIZES]"
    source = "\n" * block.line + code
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    try:
        exec(compile(source, filename, "exec"), {"__name__": "__docs__"})
    finally:
        linecache.cache.pop(filename, None)


def test_backend_substitution():
    block = Block(ROOT / "README.md", 1, "python",
                  'from nin import torch as nin   # or: mxnet / tf\nnet = nin.NiN()\n'
                  'h = presets.train("torch", "cpu", resize=224)  # or: "mxnet", "tf"\n', None)
    assert offered_backends(block) == ["mxnet", "torch", "tf"]
    code = runnable(block, "tf")
    assert code.splitlines() == ["from nin import tf as nin   # or: mxnet / tf", "net = nin.NiN()",
                                 'h = presets.train("tf", "cpu", resize=67)  # or: "mxnet", "tf"']
    one = Block(ROOT / "README.md", 1, "python", 'presets.train("torch", "cpu")\n', None)
    assert offered_backends(one) == ["torch"]


def test_shell_extraction():
    block = Block(ROOT / "README.md", 1, "console",
                  "$ NIN_DATA=d python -m nin train --backend torch \\\n    --epochs 2  # two\noutput line\n"
                  "$ pip install x && nin summary --backend tf | head > out.txt\n", None)
    lines = logical_lines(block)
    assert lines == [(2, "NIN_DATA=d python -m nin train --backend torch --epochs 2  # two"),
                     (5, "pip install x && nin summary --backend tf | head > out.txt")]
    assert nin_commands(lines[0][1]) == [["train", "--backend", "torch", "--epochs", "2"]]
    assert nin_commands(lines[1][1]) == [["summary", "--backend", "tf"]]


# --- links, markers, pins, wording ----------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, links by their text, only letters, digits, ``_``, ``-`` and
    spaces kept, and each space a ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for _, line in (MARKDOWN[path] if path in MARKDOWN else read_markdown(path))[1]:
        match = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match[1])
            found.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return found


LINK = re.compile(r"!?\[[^\]]*\]\((?P<target><[^>]+>|[^)\s]+)(?:\s+\"[^\"]*\")?\)")


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_relative_links_resolve(path):
    prose = MARKDOWN[path][1]
    # the prose as one text (a link may wrap), inline code blanked out with its length kept
    text = re.sub(r"`[^`\n]*`", lambda m: " " * len(m[0]), "\n".join(line for _, line in prose))
    broken = []
    for match in LINK.finditer(text):
        number = prose[text.count("\n", 0, match.start("target"))][0]
        target = match["target"].strip("<>")
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{path.relative_to(ROOT)}:{number}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{path.relative_to(ROOT)}:{number}: {target} (no heading #{anchor})")
    assert not broken, "\n".join(broken)


def test_skip_markers_give_a_reason_and_precede_a_fence():
    wrong = []
    for path, (_, prose) in MARKDOWN.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in prose:
            if not MARKER.search(re.sub(r"`[^`]*`", "", line)):  # not one shown as inline code
                continue
            marker = MARKER_LINE.match(line)
            following = next((text for text in lines[number:] if text.strip()), "")
            if not marker or not SKIP.match(marker["rest"]) or not FENCE.match(following):
                wrong.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not wrong, ("write `<!-- docs-test: skip (the reason) -->` on the line before a fence:\n"
                       + "\n".join(wrong))


def test_readme_stays_short():
    """The README says what nin is, how to start and what it reaches, and links to the rest: a first screen."""
    assert len((ROOT / "README.md").read_text(encoding="utf-8")) <= 10_000, "move the details to docs/"


def test_readme_torch_pin_is_tox_ini():
    readme = set(re.findall(r"torch==([\w.+]+)", (ROOT / "README.md").read_text(encoding="utf-8")))
    tox = set(re.findall(r"torch==([\w.+]+)", (ROOT / "tox.ini").read_text(encoding="utf-8")))
    assert readme and readme == tox


@pytest.mark.parametrize("path", [p for p in DOCS if p.name != "CONTRIBUTING.md"],
                         ids=[str(p.relative_to(ROOT)) for p in DOCS if p.name != "CONTRIBUTING.md"])
def test_user_docs_speak_of_no_particular_machine(path):
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if MACHINE_TALK.search(line)]
    assert not found, "local notes belong in CONTRIBUTING.md:\n" + "\n".join(found)
