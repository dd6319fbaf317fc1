"""YAML for recipes: safe_load that refuses duplicate keys and reports syntax errors with a line number."""

from __future__ import annotations

import os
import stat
from typing import Any

import yaml

from audiovae.errors import UserError

_MERGE_TAG = "tag:yaml.org,2002:merge"
MAX_ALIASES = 100  # a recipe reuses a few anchors; a 'billion laughs' bomb needs many aliases to expand
MAX_RECIPE_BYTES = 1 << 20  # recipes are a few kB; /dev/zero or a huge file is refused before it is read


class DuplicateKeyError(yaml.YAMLError):
    """The same key twice in one mapping; plain YAML keeps the last and silently drops the first."""

    def __init__(self, key_path: str, first_line: int, second_line: int):
        super().__init__(f"{key_path}: duplicate key (lines {first_line} and {second_line})")
        self.key_path, self.first_line, self.second_line = key_path, first_line, second_line


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader whose mappings, at any depth, raise DuplicateKeyError on a repeated key.

    Each node's key path (`model.strides`, `losses[1].name`) is recorded while its parent is built, so the
    error names where the duplicate is, not only its last key.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._key_paths: dict[int, str] = {}  # id(node) -> dotted key path of that node
        self.aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases (*name): refused, as a document that "
                                     "expands them into a huge value would be")
        return super().compose_node(parent, index)

    def _child_path(self, node: yaml.Node, child: str) -> str:
        parent = self._key_paths.get(id(node), "")
        return f"{parent}{child}" if child.startswith("[") or not parent else f"{parent}.{child}"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:  # `<<: *defaults` merges are allowed to repeat keys
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
            path = self._child_path(node, str(key))
            if first is not None:
                raise DuplicateKeyError(path, first, key_node.start_mark.line + 1)
            seen[key] = key_node.start_mark.line + 1
            self._key_paths[id(value_node)] = path
        return super().construct_mapping(node, deep=deep)

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> list[Any]:
        for index, item in enumerate(node.value):
            self._key_paths[id(item)] = self._child_path(node, f"[{index}]")
        return super().construct_sequence(node, deep=deep)


def load_yaml(text: str, path: str | os.PathLike) -> Any:
    """Parse one YAML document like `yaml.safe_load`, but every problem is a UserError naming `path`:

    `PATH: model: duplicate key (lines 3 and 12); YAML keeps only the last, so merge them into one`
    `PATH: not valid YAML at line 4: mapping values are not allowed here`
    """
    loader = UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    except DuplicateKeyError as error:
        raise UserError(f"{os.fspath(path)}: {error}; YAML keeps only the last, so merge them into one") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error) or "invalid YAML"
        raise UserError(f"{os.fspath(path)}: not valid YAML{where}: {problem}") from None
    finally:
        loader.dispose()


def read_small_text(path: str | os.PathLike, what: str = "recipe", limit: int = MAX_RECIPE_BYTES) -> str:
    """The text of a regular file of at most `limit` bytes: a FIFO (which would wait for a writer), a device
    (/dev/zero never ends) or a larger file is a UserError before anything is read."""
    try:
        with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK)) as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise UserError(f"{os.fspath(path)}: not a regular file; a {what} is a YAML file")
            if info.st_size > limit:
                raise UserError(f"{os.fspath(path)}: {info.st_size} bytes; a {what} is at most {limit} bytes")
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise UserError(f"{os.fspath(path)}: is a folder; a {what} is a YAML file") from None
    if len(data) > limit:
        raise UserError(f"{os.fspath(path)}: more than {limit} bytes; a {what} is at most {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{os.fspath(path)}: cannot read {what} ({error})") from None
