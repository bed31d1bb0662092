"""The docs match the code: the generated config and command-line references are current and complete, and the
README names every output key and reported variable."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script, doc", [("gen_config_reference.py", "CONFIG.md"), ("gen_cli_reference.py", "CLI.md")])
def test_generated_reference_is_current(script, doc):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--check"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"docs/{doc} is stale: run python scripts/{script}"


def test_every_schema_key_is_documented():
    from jaxstress._schema import DYNAMIC_TABLES, SECTIONS

    text = (ROOT / "docs" / "CONFIG.md").read_text()
    for sec, rows in SECTIONS.items():
        for key in rows:
            assert f"`{sec}.{key}`" in text
    for table, rows in DYNAMIC_TABLES.items():
        for key in rows:
            assert f"`{table}.NAME.{key}`" in text


def test_relative_links_in_the_docs_resolve():
    """Every relative link in the README and docs/ names a file that exists (docs moved or renamed break here)."""
    import re

    missing = []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", md.read_text()):
            if "://" not in target and not (md.parent / target).exists():
                missing.append(f"{md.relative_to(ROOT)} -> {target}")
    assert not missing, f"broken links: {missing}"


def test_readme_python_uses_public_names_that_exist():
    """The README's Python examples use only public names of the package (no `jaxstress._private` imports), and
    every `jaxstress.NAME` they use exists."""
    import re

    import jaxstress

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks, "the README shows no Python example"
    code = "\n".join(blocks)
    assert not re.search(r"jaxstress\._", code), "a README example imports a private module"
    for name in re.findall(r"\bjaxstress\.([A-Za-z_]\w*)", code):
        assert hasattr(jaxstress, name), f"the README uses jaxstress.{name}, which does not exist"


def test_portfolio_example_in_the_reference_loads(tmp_path):
    """The portfolio file shown in docs/CONFIG.md is a valid portfolio."""
    import re

    from jaxstress import load_portfolio

    text = (ROOT / "docs" / "CONFIG.md").read_text()
    example = re.search(r"## Portfolio files.*?```toml\n(.*?)```", text, flags=re.S).group(1)
    (tmp_path / "my_book.toml").write_text(example)
    port = load_portfolio(tmp_path / "my_book.toml")
    assert port.name == "my_book" and port.kinds == ("bond", "future")


def test_every_cli_option_is_documented():
    """docs/CLI.md has a section for every command and names each of its options."""
    import argparse

    from jaxstress._cli import build_parser

    text = (ROOT / "docs" / "CLI.md").read_text()

    def walk(parser, words=()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, (*words, name))
        if words and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            yield words, parser

    commands = list(walk(build_parser()))
    assert {" ".join(w) for w, _ in commands} >= {"run", "sensitivities", "bench", "calibrate history",
                                                   "calibrate event", "reverse", "scenarios", "compare", "validate"}
    assert "`--version`" in text
    for words, parser in commands:
        head = f"\n## {' '.join(words)}\n"
        assert head in text, head
        section = text.split(head, 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            for opt in action.option_strings:
                if opt not in ("-h", "--help"):
                    assert f"`{opt}`" in section, (words, opt)


def _keys_in(fn) -> set[str]:
    """The string keys that `fn`'s source writes: keys of its dict literals, subscript assignments
    `x["key"] = ...`, the keywords of its `np.savez_compressed` calls and the column names of a CSV header."""
    import ast
    import inspect
    import textwrap

    keys = set()
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(fn)))):
        if isinstance(node, ast.Dict):
            keys |= {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
        elif isinstance(node, ast.Assign):
            keys |= {t.slice.value for t in node.targets
                     if isinstance(t, ast.Subscript) and isinstance(t.slice, ast.Constant)
                     and isinstance(t.slice.value, str)}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "savez_compressed":
            keys |= {kw.arg for kw in node.keywords if kw.arg}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "writerow":  # a CSV's header
            keys |= {e.value for a in node.args if isinstance(a, ast.List) for e in a.elts
                     if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return keys


def test_readme_names_every_output_key():
    """The README's Outputs section names (in backticks) every key that run, sensitivities and reverse write into
    summary.json, quantiles.csv, paths.npz, sensitivities.json and reverse.json (read from the code that writes
    them) and every per-path metric."""
    import re

    from jaxstress import _calibrate_cli, _cli, _output, _reverse, _sensitivities
    from jaxstress._simulate import METRIC_NAMES

    text = (ROOT / "README.md").read_text()
    outputs = text.split("\n## Outputs\n", 1)[1].split("\n## Exit statuses\n", 1)[0]
    keys = set().union(*(_keys_in(fn) for fn in (
        _output.summary_dict, _output.portfolio_risk, _output.holder_sales, _output.write_outputs, _cli.cmd_run,
        _cli.cmd_sensitivities, _sensitivities.sensitivities, _reverse.reverse_stress, _reverse.fresh_estimate,
        _calibrate_cli.cmd_reverse)))
    keys -= {"chunk_paths"}  # sensitivities' consistency check between processes, not an output
    keys |= set(METRIC_NAMES) | {"metric_<name>", "foreign_sales_<holder>_bn_mean"}
    named = set(re.findall(r"`([^`]+)`", outputs)) | set(re.findall(r'"(\w+)"', outputs))
    missing = sorted(k for k in keys if k not in named)
    assert not missing, f"the README's Outputs section does not name {missing}"


def test_readme_names_every_reported_variable():
    """The README's quantiles.csv table names every reported variable, those of a maturity or a holder by pattern."""
    from jaxstress import load_scenario
    from jaxstress._simulate import variable_names

    text = (ROOT / "README.md").read_text()
    outputs = text.split("\n### quantiles.csv\n", 1)[1].split("\n### ", 1)[0]
    params = load_scenario("april_2025").params()
    patterns = ("yield_", "par_yield_", "holdings_")
    for var in variable_names(params):
        if not var.startswith(patterns):
            assert f"`{var}`" in outputs, var
    for pattern in ("`yield_<m>y`", "`par_yield_<m>y`", "`holdings_<holder>`"):
        assert pattern in outputs
