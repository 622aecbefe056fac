"""Finds the client snippets in README.md and docs/*.md, reads their markers, and compares
what a snippet printed with the output the docs show for it.

See docs/testing.md, "Docs that run", for the marking rules. In short: an HTML comment on the
line right before a fenced block,

    <!-- snippet: NAME; key: value; key: value -->
    <!-- snippet: skip (why this one cannot run here) -->

Keys (all optional):
  hub: default | api-key       the hub the runner starts for this snippet
  output: next                 a `sh` block's expected output is the next fenced block
  save: FILE                   a program (python, js): saved as FILE; the next fenced block is
                               the transcript (`$ command`, then its output) that runs it
  socket: CHANNELS             the runner holds a socket of its own on these channels (from
                               127.0.0.2) during the snippet; a UUID in a command is its client_id
  hold: CHANNELS               the runner holds a socket from 127.0.0.1 (the snippet's own IP),
                               so the snippet meets the one-connection-per-IP limit
  seed: CHANNEL*N[,…]          the runner publishes N events on CHANNEL before the snippet
  publish: CHANNEL [after N]   the runner publishes one event on CHANNEL once the snippet has
                               printed N lines (default 1); for subscribers
  order: any                   a short command's lines may come in any order (a map's keys)
  exit: N                      a short command's expected exit code (default 0)
  epoch: live                  an epoch in a command (`epoch=…`, `--epoch …`) is the live hub's
                               (without it, a shown epoch is kept: it stands for another run's)
  event-id: CHANNEL:SEQ         a 64-hex id in a command is the id of that event of the live hub
  hub-env: KEY=VALUE[,…]       settings for the hub, as environment variables
  unset: VAR                   the snippet runs without this variable (e.g. the JWT secret)
  expect: contains "TEXT"      the output must contain TEXT (in addition to the shown output)

A transcript (a `text` block whose commands start with `$ `) shows each command and then its
output; `> LINE` is typed into the client once the output above it has arrived, `< LINE` and
plain lines are output, and a line `...` stands for any number of lines.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = ["README.md", *sorted(p.relative_to(REPO_ROOT).as_posix()
                                  for p in (REPO_ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(\s*)(`{3,})\s*([^`\s]*)(.*)$")
MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(.*?)\s*-->\s*$")

# The hub's client subcommands: a block running one of them is a client snippet.
CLI_CLIENT_SUBCOMMANDS = {"publish", "tail", "mint-token", "hash-key", "check-config"}
CLIENT_TOOLS = {"curl", "wscat", "websocat", "python", "python3", "node", "go"}
SHELL_LANGS = {"sh", "bash", "shell", "console", "text", ""}
# A program in a fenced block that uses a WebSocket client library.
PROGRAM_CLIENT = {
    "python": re.compile(r"^\s*(import websockets|from websockets)", re.M),
    "py": re.compile(r"^\s*(import websockets|from websockets)", re.M),
    "js": re.compile(r"require\(['\"]ws['\"]\)|from ['\"]ws['\"]"),
    "javascript": re.compile(r"require\(['\"]ws['\"]\)|from ['\"]ws['\"]"),
    "go": re.compile(r"gorilla/websocket"),
}


@dataclass
class Block:
    file: str
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marker: str | None = None  # the text after `snippet:`, None when unmarked


@dataclass
class Snippet:
    file: str
    line: int
    name: str
    lang: str
    text: str
    options: dict[str, str]
    skip: str | None = None
    output: Block | None = None  # `output: next` / `save:`: the block after this one

    @property
    def id(self) -> str:
        return f"{self.file}:{self.name}"


def read_blocks(path: Path, rel: str) -> list[Block]:
    lines = path.read_text().split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, ticks, lang = m.group(1), m.group(2), m.group(3).lower()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(ticks):
            j += 1
        body = [line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:j]]
        marker = None
        if i > 0 and (mm := MARKER.match(lines[i - 1])):
            marker = mm.group(1)
        blocks.append(Block(rel, i + 1, lang, "\n".join(body), marker))
        i = j + 1
    return blocks


def command_lines(block: Block) -> list[str]:
    """The commands of a shell block (every line of `sh`; the `$ ` lines of a transcript)."""
    out = []
    for line in block.text.split("\n"):
        s = line.strip()
        if block.lang in ("text", "console", ""):
            if s.startswith("$ "):
                out.append(s[2:])
        elif s and not s.startswith("#"):
            out.append(s)
    return out


def _words(command: str) -> list[str]:
    # `export X=$(cmd ...)` and `X=$(cmd ...)`: look inside the substitution.
    command = re.sub(r"^(export\s+)?[A-Za-z_][A-Za-z0-9_]*=\$\(", "", command)
    command = command.replace("$(", " ").replace("|", " ")
    try:
        words = shlex.split(command, posix=True)
    except ValueError:
        words = command.split()
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words.pop(0)  # VAR=value prefixes
    return words


def is_client_command(command: str) -> bool:
    words = _words(command)
    if not words:
        return False
    first = Path(words[0]).name
    if first in ("python", "python3") and words[1:2] == ["-m"]:
        return False  # a module (pytest, pip), not a client program
    if first in CLIENT_TOOLS:
        return True
    if first == "echo" and "events-hub" in words:  # echo KEY | events-hub hash-key
        words = words[words.index("events-hub"):]
        first = "events-hub"
    if first == "events-hub" or (first == "cargo" and "run" in words[:2] and "--" in words):
        rest = words[words.index("--") + 1:] if first == "cargo" else words[1:]
        rest = [w for w in rest if not w.startswith("-")]
        # `--config FILE` precedes the subcommand: drop option values that are paths.
        return any(w in CLI_CLIENT_SUBCOMMANDS for w in rest[:2])
    return False


def is_client_block(block: Block) -> bool:
    if block.lang in PROGRAM_CLIENT:
        return bool(PROGRAM_CLIENT[block.lang].search(block.text))
    if block.lang in SHELL_LANGS:
        return any(is_client_command(c) for c in command_lines(block))
    return False


def parse_marker(text: str) -> tuple[str, dict[str, str], str | None]:
    """`NAME; k: v; ...` -> (name, options, None); `skip (reason)` -> ("skip", {}, reason)."""
    m = re.match(r"^skip\s*\((.+)\)\s*$", text, re.S)
    if m:
        return "skip", {}, m.group(1).strip()
    if text.startswith("skip"):
        raise ValueError(f"a skip needs a reason in parentheses: {text!r}")
    parts = [p.strip() for p in text.split(";") if p.strip()]
    name, options = parts[0], {}
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise ValueError(f"snippet name must be lower-case words with dashes: {name!r}")
    for part in parts[1:]:
        key, sep, value = part.partition(":")
        if not sep:
            raise ValueError(f"option without `key:` in marker {text!r}")
        options[key.strip()] = value.strip()
    return name, options, None


KNOWN_OPTIONS = {"hub", "hub-env", "output", "save", "socket", "hold", "seed", "publish", "exit",
                 "expect", "epoch", "unset", "order", "event-id"}


def collect(files: list[str] | None = None) -> tuple[list[Snippet], list[str]]:
    """Every marked snippet, and a problem for each unmarked client block or bad marker."""
    snippets: list[Snippet] = []
    problems: list[str] = []
    for rel in files or DOC_FILES:
        blocks = read_blocks(REPO_ROOT / rel, rel)
        consumed: set[int] = set()
        skips = 0
        for k, block in enumerate(blocks):
            if k in consumed:
                continue
            if block.marker is None:
                if is_client_block(block):
                    problems.append(f"{rel}:{block.line}: unmarked client snippet ({block.lang}): "
                                    f"{block.text.splitlines()[0][:80]!r}; mark it "
                                    "`<!-- snippet: NAME; ... -->` or `<!-- snippet: skip (reason) -->`")
                continue
            try:
                name, options, skip = parse_marker(block.marker)
            except ValueError as e:
                problems.append(f"{rel}:{block.line}: {e}")
                continue
            unknown = set(options) - KNOWN_OPTIONS
            if unknown:
                problems.append(f"{rel}:{block.line}: unknown marker keys {sorted(unknown)}")
            if skip is not None:
                skips += 1
                name = f"skip-{block.line}"
            snip = Snippet(rel, block.line, name, block.lang, block.text, options, skip)
            if options.get("output") == "next" or "save" in options:
                if k + 1 >= len(blocks):
                    problems.append(f"{rel}:{block.line}: `{block.marker}` needs a following block")
                else:
                    snip.output = blocks[k + 1]
                    consumed.add(k + 1)
            if any(s.id == snip.id for s in snippets):
                problems.append(f"{rel}:{block.line}: duplicate snippet name {name!r}")
            snippets.append(snip)
    return snippets, problems


# --------------------------------------------------------------------------- #
# Transcripts and shapes                                                       #
# --------------------------------------------------------------------------- #


@dataclass
class Step:
    command: str
    # ("out", text) expected output line, ("in", text) typed input, ("any", "") for `...`
    lines: list[tuple[str, str]] = field(default_factory=list)
    shown: bool = True  # False: the docs show no output for it (only its exit code counts)


def parse_transcript(text: str) -> list[Step]:
    """`$ command` lines (continued while quotes are open or a line ends with `\\`), each
    followed by its output."""
    steps: list[Step] = []
    raw = text.split("\n")
    i = 0
    while i < len(raw):
        line = raw[i]
        if line.startswith("$ "):
            cmd = line[2:]
            while i + 1 < len(raw) and (cmd.endswith("\\") or not _complete(cmd)):
                i += 1
                cmd = cmd + "\n" + raw[i]
            steps.append(Step(cmd))
        elif steps:
            s = line.strip()
            if not s:
                pass
            elif s == "^C":
                pass  # the runner stops a long-running client itself
            elif s in ("...", "…"):
                steps[-1].lines.append(("any", ""))
            elif line.startswith("> "):
                steps[-1].lines.append(("in", line[2:]))
            else:
                steps[-1].lines.append(("out", line))
        i += 1
    return steps


def output_lines(text: str) -> list[tuple[str, str]]:
    """A plain output block (after a `sh` snippet): every non-blank line is expected output."""
    return parse_transcript("$ :\n" + text)[0].lines


def _complete(cmd: str) -> bool:
    try:
        shlex.split(cmd)
        return True
    except ValueError:
        return False


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def clean(line: str) -> str:
    line = _ANSI.sub("", line).rstrip()
    # wscat's `< ` before a frame, and its `> ` prompt left on the line on a pipe.
    while line.startswith(("< ", "> ")):
        line = line[2:]
    return line


def _structured(line: str):
    """(prefix, value) when the line ends in a JSON object/array or a Python dict repr."""
    for start in (i for i, ch in enumerate(line) if ch in "{["):
        tail = line[start:]
        try:
            return line[:start], json.loads(tail)
        except ValueError:
            pass
        try:
            value = ast.literal_eval(tail)
            if isinstance(value, (dict, list)):
                return line[:start], value
        except (ValueError, SyntaxError):
            pass
        break  # only the first bracket starts the value
    return None


# Values compared exactly; everything else only by type.
EXACT_KEYS = {"event_type", "message", "error", "code", "namespace", "name", "recovered"}


def shape_diff(expected, actual, path: str = "$") -> list[str]:
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {type(actual).__name__}"]
        diffs = []
        missing = [k for k in expected if k not in actual]
        extra = [k for k in actual if k not in expected]
        if missing:
            diffs.append(f"{path}: missing keys {missing}")
        if extra:
            diffs.append(f"{path}: keys not in the docs {extra}")
        for k in expected:
            if k in ("body", "message") and "seq" in expected:
                # A published event's message and body are whatever its publisher sent.
                if k == "message" and not isinstance(actual.get(k), str):
                    diffs.append(f"{path}.message: not a string")
                continue
            if k in actual:
                if k in EXACT_KEYS and isinstance(expected[k], (str, bool, int)) \
                        and "…" not in str(expected[k]) and expected[k] != actual[k]:
                    diffs.append(f"{path}.{k}: docs say {expected[k]!r}, hub said {actual[k]!r}")
                else:
                    diffs.extend(shape_diff(expected[k], actual[k], f"{path}.{k}"))
        return diffs
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path}: expected an array, got {type(actual).__name__}"]
        if expected and not actual:
            return [f"{path}: expected a non-empty array"]
        if expected and actual:
            return shape_diff(expected[0], actual[0], f"{path}[0]")
        return []
    kinds = (bool, (int, float), str, type(None))
    for kind in kinds:
        if isinstance(expected, kind):
            if isinstance(expected, bool) != isinstance(actual, bool) or not isinstance(actual, kind):
                return [f"{path}: expected {type(expected).__name__}, got {actual!r}"]
            return []
    return []


_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_TOKENS = re.compile(rf"(…|{_UUID}|eyJ[A-Za-z0-9_.-]+|\d{{4}}-\d\d-\d\dT[\d:.]+Z"
                     r"|(?<![0-9A-Za-z])[0-9a-f]*\d[0-9a-f]*(?![0-9A-Za-z])"
                     r"|(?<![0-9A-Za-z.])\d+(?:\.\d+)?)")


def line_pattern(expected: str) -> re.Pattern:
    """A plain text line: ids, digests, numbers, UUIDs, timestamps and `…` vary."""
    out = []
    for k, part in enumerate(_TOKENS.split(expected)):
        if k % 2 == 0:
            out.append(re.escape(part))
        elif part == "…":
            out.append(".*")
        elif re.fullmatch(_UUID, part):
            out.append(_UUID)
        elif part.startswith("eyJ"):
            out.append(r"eyJ[A-Za-z0-9_.-]+")
        elif "T" in part:
            out.append(r"\d{4}-\d\d-\d\dT[\d:.]+Z")
        elif re.fullmatch(r"\d+(?:\.\d+)?", part):
            out.append(r"\d+(?:\.\d+)?")
        elif len(part) >= 8:
            out.append(r"[0-9a-f]+")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out) + r"\s*$")


def line_diff(expected: str, actual: str) -> list[str]:
    """Why `actual` does not match the docs' `expected` line ([] when it matches)."""
    e, a = clean(expected), clean(actual)
    es = _structured(e)
    if es is not None:
        as_ = _structured(a)
        if as_ is None:
            return [f"docs show structured output {e[:80]!r}, client printed {a[:120]!r}"]
        if not line_pattern(es[0].strip()).match(as_[0].strip()):
            return [f"prefix {es[0]!r} vs {as_[0]!r}"]
        return shape_diff(es[1], as_[1])
    if line_pattern(e.strip()).match(a.strip()):
        return []
    return [f"docs show {e!r}, client printed {a!r}"]
