"""The design notes and the package maps name every module there is, and only those."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def modules(package):
    return {p.stem for p in (ROOT / package).glob("*.py") if p.stem != "__init__"}


@pytest.mark.parametrize("package", ["models", "trainers"])
def test_package_map_names_every_module(package):
    text = (ROOT / package / "__init__.py").read_text()
    named = set(re.findall(rf"`{package}\.(\w+)`", text))
    assert named == modules(package)


def test_design_notes_name_every_module_and_no_other():
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    for package in ("layers", "models", "trainers"):
        named = set(re.findall(rf"`{package}/(\w+)\.py`", text))
        # a row may list siblings after the first: "`trainers/translate.py`, `sentiment.py`, ..."
        for row in re.findall(rf"^\| `{package}/[^|]*\|", text, flags=re.M):
            named |= set(re.findall(r"`(?:\w+/)?(\w+)\.py`", row))
        assert named == modules(package), package


def test_code_cites_only_documents_of_the_repository():
    """A path like `docs/DESIGN.md` must exist; a bare name like `RESULTS.md` must name a file
    of the repository (not one of the build machines' shared/ folder)."""
    documents = {p.relative_to(ROOT).as_posix() for p in ROOT.glob("**/*.md") if ".venv" not in p.parts}
    for path in ROOT.glob("*/*.py"):
        if path.parts[-2] in {"layers", "models", "trainers", "apps", "benchmarks", "tests", "scripts"}:
            for cited in re.findall(r"(?:[\w.-]+/)*[A-Z]+\.md\b", path.read_text()):
                found = cited in documents or ("/" not in cited and any(d.endswith("/" + cited) for d in documents))
                assert found, f"{path.relative_to(ROOT)} cites {cited}, which is not in the repository"
