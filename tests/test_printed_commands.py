"""Every ``papermill`` and ``prostseg`` command the book and the READMEs print runs as printed.

Commands are collected from the chapters (markdown and code cells, f-strings included),
``book/intro.md``, ``README.md`` and ``benchmarks/README.md``. A ``papermill`` command
must name an existing chapter, set only parameters of that chapter's ``parameters``
cell, and write its executed copy into a folder that a fresh clone has (relative to the
repository root, where the commands are run). A ``prostseg`` command must name existing
subcommands and options; a complete one (in a code block) must parse as a whole.
Placeholders written in capitals (``CHAPTER.ipynb``, ``-p NAME VALUE``) are templates
and are not checked against a notebook.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from prostseg.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [*sorted((ROOT / "book").glob("*.ipynb")), ROOT / "book" / "intro.md", ROOT / "README.md",
           ROOT / "benchmarks" / "README.md"]
# papermill options that take one value, and those that take a name and a value
_ONE_VALUE = {"--cwd", "-f", "--parameters_file", "-y", "--parameters_yaml", "-b", "--parameters_base64",
              "-k", "--kernel", "-l", "--language", "--log-level", "--start-timeout", "--execution-timeout"}
_NAME_VALUE = {"-p", "--parameters", "-r", "--parameters_raw"}
_PLACEHOLDER = re.compile(r"^[A-Z][A-Z_-]*(\.ipynb)?$")
_PROGRAM = re.compile(r"(?<![\w./-])(papermill|prostseg)(?= )")


@dataclass(frozen=True)
class Command:
    source: str
    words: tuple[str, ...]
    complete: bool  # a code block or a code cell, not an inline mention in prose

    def __str__(self):
        return f"{self.source}: {' '.join(self.words)}"


def _code_text(source: str) -> str:
    """String literals of a code cell (f-string fields become VALUE), concatenated per statement."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    pieces, inside_fstrings = [], set()
    for node in ast.walk(ast.parse("\n".join(lines))):  # parents come before their children
        if isinstance(node, ast.JoinedStr):
            inside_fstrings.update(id(value) for value in node.values)
            pieces.append("".join(v.value if isinstance(v, ast.Constant) else "VALUE" for v in node.values))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inside_fstrings:
            pieces.append(node.value)
    return "\n".join(pieces)  # adjacent literals ("a" f"b") are one node already


def _shell_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined, comments dropped, split at ; && | and do."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0]
        lines.extend(re.split(r";|&&|\|\||\||\bdo\b|\$\(", line))
    return lines


def _commands_in(text: str, source: str, complete: bool) -> list[Command]:
    found = []
    for line in _shell_lines(text):
        match = _PROGRAM.search(line)
        if match:
            try:
                words = shlex.split(line[match.start():])
            except ValueError:
                words = line[match.start():].split()
            found.append(Command(source, tuple(words), complete))
    return found


def _texts(path: Path) -> list[tuple[str, str, bool]]:
    """(where, text, complete) pieces of a source: code blocks, inline code and code cells."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        pieces = []
        for index, cell in enumerate(cells):
            text = "".join(cell["source"])
            where = f"{path.relative_to(ROOT)} cell {index}"
            if cell["cell_type"] == "code":
                pieces.append((where, _code_text(text), True))
            else:
                pieces.extend((where, piece, complete) for piece, complete in _markdown_code(text))
        return pieces
    return [(str(path.relative_to(ROOT)), piece, complete)
            for piece, complete in _markdown_code(path.read_text(encoding="utf-8"))]


def _markdown_code(text: str) -> list[tuple[str, bool]]:
    fenced = re.findall(r"^\s*```(\w*)\n(.*?)^\s*```", text, flags=re.S | re.M)
    blocks = [body for language, body in fenced if language in ("", "bash", "sh", "shell", "console")]
    prose = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.S | re.M)
    inline = re.findall(r"`([^`]+)`", prose)
    return [(block, True) for block in blocks] + [(span.replace("\n", " "), False) for span in inline]


def printed_commands() -> list[Command]:
    return [command for path in SOURCES for where, text, complete in _texts(path)
            for command in _commands_in(text, where, complete)]


COMMANDS = printed_commands()
PAPERMILL = [c for c in COMMANDS if c.words[0] == "papermill"]
PROSTSEG = [c for c in COMMANDS if c.words[0] == "prostseg"]


def notebook_parameters(path: Path) -> set[str]:
    """Names assigned in the notebook's cell tagged ``parameters``."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected one cell tagged 'parameters', found {len(tagged)}"
    tree = ast.parse("".join(tagged[0]["source"]))
    return {target.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)}


def papermill_arguments(words) -> tuple[list[str], dict[str, str]]:
    """(positional arguments, {parameter: value}) of a papermill command line."""
    positional, parameters, index = [], {}, 1
    while index < len(words):
        word = words[index]
        if word in _NAME_VALUE:
            parameters[words[index + 1]] = words[index + 2] if index + 2 < len(words) else ""
            index += 3
        elif word in _ONE_VALUE:
            index += 2
        elif word.startswith("-") or word == "...":
            index += 1
        else:
            positional.append(word)
            index += 1
    return positional, parameters


def _tracked_folders() -> set[str] | None:
    """Folders (relative to the root) that a fresh clone has, or None outside a git checkout."""
    try:
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    folders = {"."}
    for name in files.splitlines():
        for parent in Path(name).parents:
            folders.add(parent.as_posix())
    return folders


def test_the_sources_print_the_commands_we_expect_to_check():
    sources = {c.source.split(" cell")[0] for c in COMMANDS}
    assert {"README.md", "book/intro.md", "book/07_train-unet.ipynb", "book/12_scale.ipynb"} <= sources
    assert len(PAPERMILL) >= 12 and len(PROSTSEG) >= 15


def test_commands_printed_by_code_cells_are_read_from_their_string_literals():
    cell = (
        'print(f"papermill --cwd book book/07_train-unet.ipynb runs/x.ipynb -p data_dir {folder} "\n'
        '      "-p label lesion")\n'
        'other = "not a command"'
    )
    found = _commands_in(_code_text(cell), "cell", True)
    assert [c.words for c in found] == [("papermill", "--cwd", "book", "book/07_train-unet.ipynb",
                                         "runs/x.ipynb", "-p", "data_dir", "VALUE", "-p", "label", "lesion")]


@pytest.mark.parametrize("command", PAPERMILL, ids=str)
def test_papermill_command_names_a_chapter_and_its_parameters(command):
    positional, parameters = papermill_arguments(command.words)
    if not positional or _PLACEHOLDER.match(Path(positional[0]).name):
        assert not command.complete or _PLACEHOLDER.match(Path(positional[0]).name), \
            f"{command}: no notebook named"
        return  # a template or an elided mention ("papermill ... -p epochs 300")
    notebook = ROOT / positional[0]
    assert notebook.is_file(), f"{command}: {positional[0]} does not exist (paths are from the repository root)"
    known = notebook_parameters(notebook)
    unknown = sorted(name for name in parameters if not _PLACEHOLDER.match(name) and name not in known)
    assert not unknown, f"{command}: {notebook.name} has no parameter(s) {unknown}; it has {sorted(known)}"
    if len(positional) > 1 and not _PLACEHOLDER.match(Path(positional[1]).name):
        folder = Path(positional[1]).parent.as_posix()
        folders = _tracked_folders()
        exists = folder in folders if folders is not None else (ROOT / folder).is_dir()
        assert exists, f"{command}: the output folder {folder!r} does not exist in a fresh clone"


def _subparser(parser, words):
    """The parser of the deepest subcommand named by ``words``, and the words after it."""
    while parser._subparsers is not None:
        choices = next(a.choices for a in parser._subparsers._group_actions if a.choices)
        if not words or words[0].startswith("-"):
            break
        assert words[0] in choices, f"no subcommand {words[0]!r}; choices: {sorted(choices)}"
        parser, words = choices[words[0]], words[1:]
    return parser, words


@pytest.mark.parametrize("command", PROSTSEG, ids=str)
def test_prostseg_command_names_existing_subcommands_and_options(command):
    words = [w for w in command.words[1:] if w != "..."]
    try:
        parser, rest = _subparser(build_parser(), words)
    except AssertionError as error:
        pytest.fail(f"{command}: {error}")
    options = set(parser._option_string_actions)
    unknown = [w.split("=")[0] for w in rest if w.startswith("--") and w.split("=")[0] not in options]
    assert not unknown, f"{command}: unknown option(s) {unknown}"
    if command.complete and "--help" not in words:
        try:
            build_parser().parse_args(words)
        except SystemExit:
            pytest.fail(f"{command}: does not parse (see the argparse message above)")
