"""Write docs/CLI.md, the reference of every command-line option (argument, default, meaning), from the program's
own parser (`jaxstress._cli.build_parser`).

    python scripts/gen_cli_reference.py            # rewrite docs/CLI.md
    python scripts/gen_cli_reference.py --check    # exit 1 if docs/CLI.md is stale (used by the tests)
"""

import argparse
import pathlib

from jaxstress import _cli

OUT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "CLI.md"

# what the parser's argument types accept, in words (a type not named here is shown by its name)
TYPES = {
    int: "integer",
    float: "number",
    _cli._positive_int: "integer >= 1",
    _cli._nonneg_int: "integer >= 0",
    _cli._seed: "integer in [0, 2^32)",
    _cli._positive_float: "number > 0",
    _cli._devices: "`all` or an integer >= 1",
}


def _cell(text: str) -> str:
    """Text for one cell of a Markdown table: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _help(action: argparse.Action, prog: str) -> str:
    """The help text as `--help` prints it (argparse's %-expansion: '%%' is '%', '%(default)s' the default)."""
    if not action.help:
        return ""
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = prog
    return action.help % params


def _argument(action: argparse.Action) -> str:
    """The value an option takes, as `--help` names it (its metavar), with the type it must be; '' for a flag."""
    if action.nargs == 0:
        return ""
    if action.option_strings:
        name = action.metavar or action.dest.upper()
    else:
        name = action.metavar or action.dest
    if action.nargs == "?":
        name = f"[{name}]"
    elif action.nargs == "+":
        name = f"{name} [{name} ...]"
    text = f"`{name}`"
    if action.type is not None:
        text += f" ({TYPES.get(action.type, getattr(action.type, '__name__', str(action.type)))})"
    if action.choices:
        text += " (one of " + ", ".join(f"`{c}`" for c in action.choices) + ")"
    return text


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if action.nargs == 0:
        return "off"
    if action.default is None or action.default == []:
        return "unset"
    return f"`{action.default}`"


def _options_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| option | argument | default | meaning |", "|---|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}` (positional)"
        if action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._AppendAction):
            name += " (repeatable)"
        default = "" if isinstance(action, argparse._VersionAction) else _default(action)
        rows.append(f"| {name} | {_cell(_argument(action))} | {default} | {_cell(_help(action, parser.prog))} |")
    return rows


def _subcommands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    """(command words, parser, one-line help) of every leaf subcommand, in the order the parser lists them."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help for a in action._choices_actions}
        for name, sub in action.choices.items():
            if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                yield from _subcommands(sub, (*words, name))
            else:
                yield (*words, name), sub, helps.get(name) or ""


def render() -> str:
    parser = _cli.build_parser()
    commands = list(_subcommands(parser))
    lines = [
        "# Command-line reference",
        "",
        "Generated from the program's parser (`jaxstress/_cli.py`, `jaxstress/_calibrate_cli.py`) by",
        "`scripts/gen_cli_reference.py`; do not edit by hand. `jaxstress COMMAND -h` prints the same options.",
        "Without a command, `jaxstress` runs `run`, and options given without a command are `run`'s",
        "(`jaxstress --paths 1000` is `jaxstress run --paths 1000`). `argument` is the value an option takes, named",
        "as `--help` names it, with the type the parser reads it as (a command may check more before any work, e.g.",
        "that a count is positive);",
        "`default` is the value used when the option is not given (`unset`: the meaning says what applies then,",
        "usually the scenario's own value; `off` for a flag). The exit statuses are in the",
        "[README](../README.md#exit-statuses).",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    for words, _, text in commands:
        anchor = "-".join(words)
        lines.append(f"| [`{' '.join(words)}`](#{anchor}) | {_cell(text)} |")
    lines += ["", "## Top-level options", "", f"`{parser.prog} [--version] [-h] COMMAND ...`", ""]
    lines += _options_table(parser) + [""]
    for words, sub, text in commands:
        lines += [f"## {' '.join(words)}", "", f"`{sub.prog}`: {_cell(sub.description or text)}", ""]
        lines += _options_table(sub) + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    from gen_config_reference import write_or_check  # beside this script

    write_or_check(OUT, render())
