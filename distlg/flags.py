"""A run's settings from a config file (``load``) and command-line flags, which come from the
settings dataclasses: one option per field, named after it, its --help the docstring under the
field (``distlg.fielddocs``) and the default it falls back to (the field's own, or the table of
``distlg.defaults`` the field names).

``add_arguments`` / ``from_args`` do it for ``distlg train``'s ``Config`` (one group per
section; a config file, then the flags given, which override it); ``add_fields`` / ``given``
for any dataclass (extend's, ingest's and pack's options).
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Literal, Sequence

from . import defaults
from .config import Config, ConfigError, sections, unwrap_optional
from .fielddocs import field_docs


def load(path: str | Path) -> Config:
    """Read a YAML (.yaml/.yml), TOML (.toml) or JSON config file."""
    path = Path(path)
    if path.is_dir() or path.suffix not in (".yaml", ".yml", ".toml", ".json"):
        what = "a folder" if path.is_dir() else "not a .yaml, .yml, .toml or .json file"
        raise ConfigError(f"{path} is {what}, so not a config file; a signal is given as "
                          f"--signal {path}")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            import tomllib
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # parse errors of any of the three formats
        raise ConfigError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections")
    return Config.from_dict(data)


_METAVARS = {int: "N", float: "X", str: "TEXT"}


def add_fields(group: Any, cls: type, prefix: str = "", names: Sequence[str] | None = None) -> None:
    """One option per field of the dataclass ``cls`` (or those in ``names``), named after it,
    help from the docstring under it (with the kind-dependent defaults of ``distlg.defaults``
    where the field names its ``table`` entry), stored as ``prefix + name``; only given flags are set."""
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.init and (names is None or f.name in names):
            group.add_argument(f.metadata.get("flag", "--" + f.name.replace("_", "-")),
                               **_option(f, hints[f.name], docs.get(f.name, ""), prefix))


def _option(f: dataclasses.Field, hint: Any, doc: str, prefix: str) -> dict[str, Any]:
    """argparse keywords for field ``f``."""
    tp, _ = unwrap_optional(hint)
    default = f.default if f.default is not dataclasses.MISSING else None
    if "table" in f.metadata:
        doc += " " + defaults.describe(f.metadata["table"])
    elif default is not None and "Default" not in doc:
        doc += f" (default: {default})"
    # argparse formats help with %
    kwargs: dict[str, Any] = dict(dest=prefix + f.name, default=argparse.SUPPRESS,
                                  help=doc.replace("%", "%%"))
    if tp is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(tp) in (list, collections.abc.Sequence):
        kwargs.update(nargs="+", type=typing.get_args(tp)[0], metavar="N")
    elif typing.get_origin(tp) is Literal:
        kwargs.update(choices=typing.get_args(tp))
    else:
        kwargs.update(type=tp, metavar=_METAVARS.get(tp, "VALUE"))
    if "choices" in f.metadata:
        kwargs.update(choices=f.metadata["choices"], metavar=None)
    kwargs["metavar"] = f.metadata.get("metavar", kwargs.get("metavar"))
    return {k: v for k, v in kwargs.items() if k != "metavar" or v is not None}


def given(args: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` set on the command line (``add_fields`` with ``prefix``)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k[len(prefix):]: v for k, v in vars(args).items()
            if k.startswith(prefix) and k[len(prefix):] in names}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per config field, grouped by section; defaults come from the file/dataclass."""
    for section, cls in sections():
        add_fields(parser.add_argument_group(f"{section} options"), cls, f"{section}__")


def from_args(args: argparse.Namespace, file: str | None = None) -> Config:
    """The config of ``file`` (if any) with every flag given on the command line applied."""
    config = load(file) if file else Config()
    overrides = {k: v for k, v in vars(args).items() if "__" in k}
    return config.replace(**overrides) if overrides else config
