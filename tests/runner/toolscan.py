"""Finds the external programs the project's code and scripts run, for test_hosttools.

I/O: reads the source tree and runs `shfmt --to-json` to parse shell scripts. Python
files are read with `ast`. What counts as running a program:

- Python: the first element of an argv list literal passed to a process-spawning call
  (`subprocess.run`, `Popen`, `create_subprocess_exec`, `os.execvp`, a local `_run`…),
  assigned to a name containing `argv` or `cmd`, or whose second element is an option
  (`["taskset", "-c", …]`, whoever builds it; not the arguments of a CLI's own `main`);
  the first of several constant arguments to a local helper (`run("gpg", "--verify")`);
  the first word of each command of a `shell=True` string; a constant given to
  `shutil.which` or `require_tool`, also through a `for` loop over constants or a
  `parametrize` column named `tool`.
- Shell: every command word of every simple command (pipelines, `$(…)`, case arms and
  function bodies included; heredoc bodies excluded, as they are data), looking through
  `env`, `setpriv`, `xargs`, `exec`, `command -v`, `find -exec` to the program they run.
  Builtins, the script's own functions and paths (`scripts/install`) are not programs.

A program named by a variable (`[config.nspawn, …]`) is invisible here; the list's
reverse check (every listed program is named somewhere) still covers it.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[2]
PYTHON_DIRS = ("runner", "sandbox", "webhooks", "tests", "bench")
#: Shell scripts that run on the host (tests/standin/mkarchiso and the packages'
#: .install scriptlets run inside the sandbox base, so they are not listed here).
SHELL_GLOBS = ("scripts/*", ".ci/*", "tests/**/*.sh", "tests/**/PKGBUILD")

SPAWNERS = frozenset(
    {
        "run",
        "Popen",
        "check_output",
        "check_call",
        "call",
        "create_subprocess_exec",
        "create_subprocess_shell",
        "execvp",
        "execv",
        "execlp",
        "run_process",
        "open_process",
        "_run",
        "_spawn_quietly",
        "start",
    }
)
LOOKUPS = frozenset({"which", "require_tool"})
_TOOLISH = re.compile(r"[a-z][a-z0-9+._-]*")
_ARGV_NAME = re.compile(r"argv|cmd")
_OPTION = re.compile(r"--?[A-Za-z]")
CLI_ENTRIES = frozenset({"main", "parse_args"})

_BASH_BUILTINS = """. : [ [[ alias bg bind break builtin caller cd command compgen complete
    compopt continue declare dirs disown echo enable eval exec exit export false fc fg getopts
    hash help history jobs kill let local logout mapfile popd printf pushd pwd read readarray
    readonly return set shift shopt source suspend test time times trap true type typeset
    ulimit umask unalias unset wait"""
SHELL_BUILTINS = frozenset(_BASH_BUILTINS.split())
#: Programs whose first argument that is not an option (`-x`) or an assignment
#: (`HOME=…`) is the program they run.
SHELL_RUNNERS = frozenset({"env", "setpriv", "xargs", "exec", "command", "nice", "timeout"})


# --- Python -------------------------------------------------------------------------


def _const(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _argv_head(node: ast.AST) -> str | None:
    """The program of an argv expression: a list literal, or the left end of `a + b`."""
    while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        node = node.left
    if isinstance(node, ast.List | ast.Tuple) and node.elts:
        return _const(node.elts[0])
    return None


def _shell_head(node: ast.AST) -> list[str]:
    """The programs of a shell command string (`"curl -s URL | tar -x"`)."""
    if isinstance(node, ast.JoinedStr):
        text = "".join(_const(part) or "X" for part in node.values)
    else:
        text = _const(node) or ""
    programs = []
    for segment in re.split(r"\||;|&&", text):
        words = segment.split()
        if words:
            programs.append(words[0])
    return programs


def _call_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def _python_programs(tree: ast.AST) -> Iterator[str]:  # noqa: PLR0912 - one branch per rule
    # Lists given to a CLI's own entry point are its arguments, not a program to run.
    cli_args = {
        id(node.args[0])
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _call_name(node) in CLI_ENTRIES and node.args
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _call_name(node)
            if name in LOOKUPS and node.args and (value := _const(node.args[0])):
                yield value
            elif name in SPAWNERS and node.args:
                head = _argv_head(node.args[0])
                if head is not None:
                    yield head
                elif any(k.arg == "shell" for k in node.keywords):
                    yield from _shell_head(node.args[0])
                elif (
                    # A local helper taking the argv as arguments: run("gpg", "--verify", …)
                    isinstance(node.func, ast.Name)
                    and len(node.args) > 1
                    and (value := _const(node.args[0]))
                    and _TOOLISH.fullmatch(value)
                ):
                    yield value
            elif name == "parametrize" and len(node.args) >= 2:
                yield from _parametrized_tools(node.args[0], node.args[1])
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is not None and any(
                isinstance(t, ast.Name) and _ARGV_NAME.search(t.id) for t in targets
            ):
                head = _argv_head(node.value)
                if head is not None:
                    yield head
        elif isinstance(node, ast.List) and len(node.elts) >= 2 and id(node) not in cli_args:
            head, second = _const(node.elts[0]), _const(node.elts[1])
            if head and second and _OPTION.match(second) and _TOOLISH.fullmatch(head):
                yield head
        elif isinstance(node, ast.For) and isinstance(node.target, ast.Name):
            yield from _looked_up_in_loop(node, node.target.id)


def _parametrized_tools(names: ast.AST, values: ast.AST) -> Iterator[str]:
    """The `tool` column of `pytest.mark.parametrize(("tool", …), [(…), …])`."""
    columns = [c.strip() for c in (_const(names) or "").split(",")]
    if isinstance(names, ast.Tuple | ast.List):
        columns = [_const(elt) or "" for elt in names.elts]
    if "tool" not in columns or not isinstance(values, ast.List | ast.Tuple):
        return
    index = columns.index("tool")
    for row in values.elts:
        cell = row.elts[index] if isinstance(row, ast.Tuple) and len(columns) > 1 else row
        if value := _const(cell):
            yield value


def _looked_up_in_loop(loop: ast.For, var: str) -> Iterator[str]:
    """`for tool in ("a", "b"): which(tool)` names a and b."""
    if not isinstance(loop.iter, ast.Tuple | ast.List):
        return
    looked_up = any(
        isinstance(call, ast.Call)
        and _call_name(call) in LOOKUPS
        and call.args
        and isinstance(call.args[0], ast.Name)
        and call.args[0].id == var
        for statement in loop.body
        for call in ast.walk(statement)
    )
    if looked_up:
        for elt in loop.iter.elts:
            if value := _const(elt):
                yield value


def python_programs(source: str) -> set[str]:
    """The programs a Python module runs (rules in the module docstring)."""
    return set(_python_programs(ast.parse(source)))


# --- shell --------------------------------------------------------------------------


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value)


def _literal(word: dict[str, Any]) -> str | None:
    """The word's text when it is a plain literal (quotes allowed), else None."""
    text = ""
    for part in word.get("Parts", []):
        kind = part.get("Type")
        if kind in ("Lit", "SglQuoted"):
            text += part.get("Value", "")
        elif kind == "DblQuoted" and all(p.get("Type") == "Lit" for p in part.get("Parts", [])):
            text += "".join(p.get("Value", "") for p in part.get("Parts", []))
        else:
            return None
    return text


def _prefix(word: dict[str, Any]) -> str:
    """The literal start of a word (`HOME=` of `HOME="${x}"`)."""
    parts = word.get("Parts", [])
    return parts[0].get("Value", "") if parts and parts[0].get("Type") == "Lit" else ""


def _command_words(args: list[dict[str, Any]]) -> Iterator[str]:
    """The programs of one simple command, looking through runners and `find -exec`."""
    index = 0
    while index < len(args):
        name = _literal(args[index])
        if name is None:
            return
        yield name
        if name == "find":
            for position, word in enumerate(args):
                if _literal(word) in ("-exec", "-execdir") and position + 1 < len(args):
                    program = _literal(args[position + 1])
                    if program is not None:
                        yield program
            return
        if name not in SHELL_RUNNERS:
            return
        index += 1
        while index < len(args) and (
            _prefix(args[index]).startswith("-") or "=" in _prefix(args[index])
        ):
            index += 1


def shell_programs(script: str) -> set[str]:
    """The programs a shell script runs: command words that are not builtins or functions."""
    parsed = subprocess.run(
        ["shfmt", "--to-json"], input=script, capture_output=True, text=True, check=True
    )
    tree = json.loads(parsed.stdout)
    functions = {node["Name"]["Value"] for node in _nodes(tree) if node.get("Type") == "FuncDecl"}
    programs: set[str] = set()
    for node in _nodes(tree):
        if node.get("Type") == "CallExpr" and node.get("Args"):
            programs.update(_command_words(node["Args"]))
    return {
        name
        for name in programs
        if name not in SHELL_BUILTINS and name not in functions and "/" not in name and name
    }


# --- the tree -----------------------------------------------------------------------


def python_files(root: Path = ROOT) -> list[Path]:
    """Every Python module of the packages, the tests and the benchmarks."""
    return sorted(path for top in PYTHON_DIRS for path in (root / top).rglob("*.py"))


def shell_files(root: Path = ROOT) -> list[Path]:
    """Every shell script that runs on the host."""
    found = {path for pattern in SHELL_GLOBS for path in root.glob(pattern) if path.is_file()}
    return sorted(path for path in found if not path.name.endswith((".py", ".md")))


def programs_in_tree(root: Path = ROOT) -> dict[str, set[str]]:
    """Program → the files (relative to `root`) that run it."""
    found: dict[str, set[str]] = {}
    for path in python_files(root):
        for program in python_programs(path.read_text(encoding="utf-8")):
            found.setdefault(program, set()).add(str(path.relative_to(root)))
    for path in shell_files(root):
        for program in shell_programs(path.read_text(encoding="utf-8")):
            found.setdefault(program, set()).add(str(path.relative_to(root)))
    return found


def quoted(names: set[str]) -> str:
    """Names for an assertion message."""
    return " ".join(shlex.quote(name) for name in sorted(names))
