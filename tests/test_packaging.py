"""The project's set-up files agree with each other and with the public API."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import eventlab as el

ROOT = Path(__file__).resolve().parent.parent


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement(text: str) -> tuple[str, str]:
    """('name', 'specifier') with the name normalised as pip and conda compare it."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", text)
    assert match, text
    return match.group(1).lower().replace("_", "-"), match.group(2).replace(" ", "")


def environment_requirements() -> tuple[set[tuple[str, str]], list[str]]:
    """The conda and pip requirements of environment.yml (a flat list of '- item' lines)."""
    conda: set[tuple[str, str]] = set()
    pip: list[str] = []
    in_dependencies = in_pip = False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"\w", line):  # a top-level key starts a new section
            in_dependencies = line.startswith("dependencies:")
        item = re.fullmatch(r"(\s*)- (.+?)\s*(#.*)?", line)
        if not item or not in_dependencies:
            continue
        indent, value = len(item.group(1)), item.group(2)
        if value == "pip:":
            in_pip = True
        elif in_pip and indent > 2:
            pip.append(value)
        else:
            in_pip = False
            conda.add(requirement(value))
    return conda, pip


def test_environment_yml_declares_exactly_the_pyproject_dependencies():
    project = pyproject()["project"]
    declared = set(map(requirement, project["dependencies"]))
    for extra in ("notebooks", "dev"):
        declared |= set(map(requirement, project["optional-dependencies"][extra]))
    conda, pip = environment_requirements()
    assert pip[-1] == "-e .", "the pip section must end by installing eventlab itself"
    from_env = conda | set(map(requirement, pip[:-1]))
    python = requirement("python" + project["requires-python"])
    assert python in from_env
    assert from_env - {python, ("pip", "")} == declared


def test_environment_yml_uses_conda_forge():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"channels:\s*\n\s*- conda-forge\b", text)


def test_core_dependencies_are_the_chosen_few():
    names = {requirement(r)[0] for r in pyproject()["project"]["dependencies"]}
    # orjson: the store's JSON encoder (a payload is encoded on every append).
    assert names == {"duckdb", "pyarrow", "pandas", "matplotlib", "ipywidgets", "tqdm", "orjson"}
    duckdb = dict(map(requirement, pyproject()["project"]["dependencies"]))["duckdb"]
    assert duckdb == ">=2.0,<3"


def test_all_is_sorted_and_lists_every_public_name():
    assert el.__all__ == sorted(el.__all__)
    assert len(set(el.__all__)) == len(el.__all__)
    for name in el.__all__:
        assert hasattr(el, name), name
    exported = {
        name
        for name, value in vars(el).items()
        if not name.startswith("_")
        and isinstance(value, type)
        and value.__module__.startswith("eventlab.")
    }
    assert exported <= set(el.__all__), exported - set(el.__all__)


def test_every_error_is_exported_and_an_eventlab_error():
    from eventlab import errors

    classes = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, Exception)
    }
    assert classes <= set(el.__all__)
    for name in classes:
        assert issubclass(getattr(el, name), el.EventlabError)


def test_readme_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == ["make lab", "make test"]


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", script, re.M)


def test_makefile_has_the_documented_targets():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("lab", "test", "demo", "bench", "bench-quick"):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), target
    assert "ruff check" in makefile
    assert "ruff format --check" in makefile
    assert "--nbmake" in makefile


def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the examples write shop.duckdb and lake/ here
    namespace: dict = {}
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert capsys.readouterr().out == "1 2\n"  # the ConcurrencyError's expected and actual
    assert (namespace["order"].status, namespace["order"].version) == ("paid", 2)
    namespace["store"].close()
    namespace["copy"].close()
