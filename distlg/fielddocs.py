"""The docstrings written under dataclass fields, read from the source: ``--help`` text for the
settings of ``distlg.config``."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass and of the dataclasses it extends
    (read from their source)."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base):
            docs.update(_own_field_docs(base))
    return docs


@functools.cache
def _own_field_docs(cls: type) -> dict[str, str]:
    """Read once per class and process (every command line builds its parser from them)."""
    for attempt in range(3):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
            break
        except (OSError, TypeError):
            return {}
        except SystemError:  # CPython 3.11's "AST constructor recursion depth mismatch" when
            if attempt == 2:  # another thread converts an AST at the same time: parse again
                raise
    docs, body = {}, tree.body[0].body
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs
