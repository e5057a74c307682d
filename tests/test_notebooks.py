"""The lessons in notebooks/ stay reviewable: paired text files, no outputs, numbered names.

Each notebook's source of truth is a py:percent text file (``NN_name.py``) paired
with ``NN_name.ipynb`` by jupytext. Running the notebooks is nbmake's job
(``pytest --nbmake notebooks``); these tests check how they are kept in git.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
IPYNBS = sorted(NOTEBOOKS.glob("*.ipynb"))
TEXTS = sorted(NOTEBOOKS.glob("*.py"))
NAME = re.compile(r"^(\d{2})_[a-z0-9]+(?:_[a-z0-9]+)*$")
PAIRING = "ipynb,py:percent"


def fix(path: Path) -> str:
    return f"edit {path.stem}.py, then run `.venv/bin/jupytext --sync notebooks/{path.stem}.py`"


def ids(paths: list[Path]) -> list[str]:
    return [path.name for path in paths]


def cells(path: Path) -> list[tuple[str, str]]:
    """Each cell's type and source, as jupytext reads the file."""
    notebook = jupytext.read(path)
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def test_there_are_notebooks() -> None:
    assert (NOTEBOOKS / "01_event_store.ipynb") in IPYNBS
    assert (NOTEBOOKS / "01_event_store.py") in TEXTS


@pytest.mark.parametrize("path", IPYNBS + TEXTS, ids=ids(IPYNBS + TEXTS))
def test_name_is_numbered(path: Path) -> None:
    assert NAME.match(path.stem), (
        f"{path.name}: notebooks are named NN_name (two digits, an underscore, then "
        f"lower-case words joined by underscores), e.g. 02_aggregates.ipynb"
    )


def test_numbers_are_unique() -> None:
    numbers: dict[str, str] = {}
    for path in IPYNBS:
        number = path.stem[:2]
        assert number not in numbers, (
            f"{path.name} and {numbers[number]} share the number {number}; renumber one"
        )
        numbers[number] = path.name


@pytest.mark.parametrize("path", IPYNBS, ids=ids(IPYNBS))
def test_notebook_has_its_text_file(path: Path) -> None:
    assert path.with_suffix(".py").exists(), (
        f"{path.name} has no paired {path.stem}.py; create it with "
        f"`.venv/bin/jupytext --set-formats {PAIRING} notebooks/{path.name}`"
    )


@pytest.mark.parametrize("path", TEXTS, ids=ids(TEXTS))
def test_text_file_has_its_notebook(path: Path) -> None:
    assert path.with_suffix(".ipynb").exists(), (
        f"{path.name} has no paired {path.stem}.ipynb; create it with "
        f"`.venv/bin/jupytext --to ipynb notebooks/{path.name}`"
    )


@pytest.mark.parametrize("path", IPYNBS + TEXTS, ids=ids(IPYNBS + TEXTS))
def test_pairing_is_declared(path: Path) -> None:
    metadata = jupytext.read(path).metadata.get("jupytext", {})
    assert metadata.get("formats") == PAIRING, (
        f"{path.name} must declare jupytext formats {PAIRING!r}, has "
        f"{metadata.get('formats')!r}; run `.venv/bin/jupytext --set-formats {PAIRING} "
        f"notebooks/{path.name}`"
    )


@pytest.mark.parametrize("path", TEXTS, ids=ids(TEXTS))
def test_text_file_is_percent_format(path: Path) -> None:
    representation = jupytext.read(path).metadata["jupytext"].get("text_representation", {})
    assert representation.get("format_name") == "percent", (
        f"{path.name} is not a py:percent file (its header says "
        f"{representation.get('format_name')!r}); {fix(path)}"
    )


@pytest.mark.parametrize(
    "path", [p for p in IPYNBS if p.with_suffix(".py").exists()], ids=lambda p: p.name
)
def test_notebook_matches_its_text_file(path: Path) -> None:
    text = path.with_suffix(".py")
    in_notebook, in_text = cells(path), cells(text)
    for index, (ours, theirs) in enumerate(zip(in_notebook, in_text, strict=False)):
        assert ours == theirs, (
            f"cell {index} differs between {path.name} and {text.name}; {fix(path)}.\n"
            f"--- {path.name} ({ours[0]}):\n{ours[1]}\n--- {text.name} ({theirs[0]}):\n{theirs[1]}"
        )
    assert len(in_notebook) == len(in_text), (
        f"{path.name} has {len(in_notebook)} cells but {text.name} has {len(in_text)}; {fix(path)}"
    )


@pytest.mark.parametrize("path", IPYNBS, ids=ids(IPYNBS))
def test_no_outputs_committed(path: Path) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    dirty = [
        index
        for index, cell in enumerate(notebook["cells"])
        if cell["cell_type"] == "code"
        and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path.name} has outputs or execution counts in cells {dirty}; notebooks are "
        f"committed clean. Regenerate it from its text file with "
        f"`.venv/bin/jupytext --to ipynb notebooks/{path.stem}.py` (or clear all outputs)"
    )


@pytest.mark.parametrize("path", IPYNBS, ids=ids(IPYNBS))
def test_readme_describes_notebook(path: Path) -> None:
    readme = (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    assert path.name in readme, f"notebooks/README.md should say what {path.name} teaches"
