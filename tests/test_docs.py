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
