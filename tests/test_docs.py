"""The generated config reference is up to date with the schema."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_config_reference_is_current():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_config_reference.py"), "--check"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, "docs/CONFIG.md is stale: run python scripts/gen_config_reference.py"


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
