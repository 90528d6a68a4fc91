"""Every world_model module whose comments give tensor shapes, `# (B, T, h, w)`, opens with a legend of the
dimension letters it uses ("Shapes: B batch, T frames, ..."), and uses only the package's letters (issue 18 item 5)."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "world_model"
SHAPE_COMMENT = re.compile(r"#\s*(\([A-Z])")  # a comment that starts with a shape: "# (B, T-1, d)", "# (N,)"
LETTER = re.compile(r"(?<![A-Za-z0-9_])[A-Z][a-z]?(?![A-Za-z0-9_])")  # B, T, Tc, Lp, ...


def _group(text: str, start: int) -> str:
    """The parenthesised group opening at text[start], nested parentheses included."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start : i + 1]
    return text[start:]


def shape_letters(source: str) -> set[str]:
    """The dimension letters of the module's shape comments."""
    letters: set[str] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and (match := SHAPE_COMMENT.match(token.string)):
            letters |= set(LETTER.findall(_group(token.string, match.start(1))))
    return letters


def legend(source: str, opening: str = "Shapes:") -> str | None:
    """The module docstring's paragraph that starts with `opening`, or None."""
    docstring = ast.get_docstring(ast.parse(source)) or ""
    for paragraph in docstring.split("\n\n"):
        if paragraph.startswith(opening):
            return paragraph
    return None


def missing_from_legend(source: str) -> list[str]:
    """The shape comments' letters the module's legend does not name (all of them without a legend)."""
    letters = shape_letters(source)
    text = legend(source) or ""
    return sorted(letter for letter in letters if not re.search(rf"(?<![A-Za-z0-9_]){letter}(?![A-Za-z0-9_])", text))


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if shape_letters(p.read_text()))


def test_modules_with_shape_comments_are_found():
    names = {p.relative_to(PACKAGE).as_posix() for p in MODULES}
    assert {"dynamics.py", "tokenizer.py", "evaluation/rollouts.py", "training/loop.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_shape_comments_have_a_legend(path: Path):
    source = path.read_text()
    assert legend(source) is not None, f"{path}: shape comments but no 'Shapes: B batch, ...' line in the docstring"
    assert not missing_from_legend(source), f"{path}: the legend does not name {missing_from_legend(source)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_shape_letters_are_the_package_letters(path: Path):
    """One meaning per letter across the package: world_model/__init__.py names every letter a module uses."""
    package = legend((PACKAGE / "__init__.py").read_text(), "Dimension letters")
    assert package is not None
    unknown = sorted(set(LETTER.findall(legend(path.read_text()) or "")) & shape_letters(path.read_text())
                     - set(LETTER.findall(package)))
    assert not unknown, f"{path}: letters {unknown} are not in world_model/__init__.py's legend"


def test_a_removed_legend_is_caught():
    source = (PACKAGE / "dynamics.py").read_text()
    paragraph = legend(source)
    assert paragraph is not None and "B batch" in paragraph and not missing_from_legend(source)
    without = source.replace(paragraph, "Shapes are as usual.")
    assert legend(without) is None
    assert "B" in missing_from_legend(without)
    assert missing_from_legend(source.replace("M masked", "masked")) == ["M"]
