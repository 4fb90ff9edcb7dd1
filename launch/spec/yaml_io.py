"""YAML reading for job specs: safe loading only, duplicate keys rejected, `1e-3` read
as a float (PyYAML's YAML 1.1 resolver would read it as a string), and `--set` overrides.

A spec is small, so anything that is not is refused before it is built: a file over
MAX_SPEC_BYTES, text that is not UTF-8, more than MAX_VALUES values once aliases are
expanded (an "alias bomb" of nested `*anchor` references expands exponentially), nesting
deeper than MAX_DEPTH, an alias that contains itself. Keys must be text or numbers, and
YAML merge keys (`<<: *anchor`) are refused: a merged key set again is silently
overridden, which the duplicate-key rule exists to prevent.
"""
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from compression.spec_types import shorten
from launch.spec.problems import Problem, SpecError

MAX_SPEC_BYTES = 1 << 20  # the shipped specs are 1-3 KB
MAX_VALUES = 100_000  # every mapping, list and scalar, counted once per alias use
MAX_DEPTH = 32  # the deepest spec key is 6 levels down (e.g. population.pbt.hyperparam_mutations.lr.uniform.0)
MERGE_TAG = "tag:yaml.org,2002:merge"


class SpecShapeError(yaml.MarkedYAMLError):
    """Well-formed YAML that is not a spec's shape (see the module docstring)."""


class SpecLoader(yaml.SafeLoader):
    """SafeLoader that checks the document's shape before building it and refuses
    duplicate mapping keys instead of keeping the last one."""

    def construct_document(self, node):
        _check_shape(node, depth=0, sizes={}, open_nodes=set())
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"duplicate key {shorten(key)} (first defined on line {seen[key] + 1}); keep only one",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # Python refuses to read integers of more than 4300 digits
            raise SpecShapeError(None, None, f"an integer of {len(node.value):,} digits; no spec value is that "
                                 "large", node.start_mark) from None


SpecLoader.add_constructor("tag:yaml.org,2002:int", SpecLoader.construct_yaml_int)
# Floats with an exponent but no dot (1e-3, 5E+2) or an unsigned exponent (1.5e3), which
# YAML 1.1 leaves as strings.
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+.0123456789"))


def _check_shape(node: Node, *, depth: int, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values `node` expands to, aliases expanded; raises SpecShapeError. An
    alias is the same node object again, so each node is sized once (`sizes`)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise SpecShapeError(None, None, "an alias refers to a value that contains it (a loop); write the value out",
                             node.start_mark)
    if depth > MAX_DEPTH:
        raise SpecShapeError(None, None, f"nested more than {MAX_DEPTH} levels deep; a spec's keys are at most "
                             "6 levels deep", node.start_mark)
    size = 1
    if not isinstance(node, ScalarNode):
        open_nodes.add(id(node))
        children = node.value if isinstance(node, SequenceNode) else [v for pair in node.value for v in pair]
        if isinstance(node, MappingNode):
            for key_node, _ in node.value:
                _check_key(key_node)
        for child in children:
            size += _check_shape(child, depth=depth + 1, sizes=sizes, open_nodes=open_nodes)
            if size > MAX_VALUES:
                raise SpecShapeError(None, None, f"more than {MAX_VALUES:,} values once aliases (*name) are "
                                     "expanded; a spec is a few hundred values: remove the repeated aliases",
                                     node.start_mark)
        open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


def _check_key(key_node: Node) -> None:
    if key_node.tag == MERGE_TAG:
        raise SpecShapeError(None, None, "YAML merge keys (`<<: *name`) are not supported in a spec: a merged key "
                             "set again beside it would be silently overridden; write the keys out (or set "
                             "single values with --set)", key_node.start_mark)
    if not isinstance(key_node, ScalarNode):
        kind = "list" if isinstance(key_node, SequenceNode) else "mapping"
        raise SpecShapeError(None, None, f"a key must be text, got a {kind} (`? [...]` or `? {{...}}`); use a "
                             "plain key such as `lr:`", key_node.start_mark)


def read_spec_file(path: Path, *, what: str = "spec file") -> str:
    """The text of a spec file: it must exist, fit MAX_SPEC_BYTES and be UTF-8."""
    if not path.is_file():
        raise SpecError([Problem(str(path), f"{what} not found" if not path.exists() else "not a file")])
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError([Problem(str(path), f"{size:,} bytes; a {what} is at most {MAX_SPEC_BYTES:,} bytes "
                                                "(they are a few kilobytes): is this the right file?")])
        data = path.read_bytes()
    except OSError as err:
        raise SpecError([Problem(str(path), f"cannot read the {what}: {err.strerror}")]) from None
    try:
        return data.decode("utf-8-sig")  # a byte-order mark, if any, is dropped
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise SpecError([Problem(str(path), f"not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); save "
                                            "the file as UTF-8")]) from None


def parse_yaml(text: str, *, source: str) -> Any:
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError([Problem(source, f"{len(text):,} characters; a spec is at most {MAX_SPEC_BYTES:,}")])
    try:
        return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - SpecLoader is a SafeLoader
    except SpecShapeError as err:
        mark = err.problem_mark
        raise SpecError([Problem(source, f"line {mark.line + 1}, column {mark.column + 1}: {err.problem}")]) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise SpecError([Problem(source, f"invalid YAML at {where}: {err.problem or err.context}")]) from None
    except yaml.YAMLError as err:
        raise SpecError([Problem(source, f"invalid YAML: {shorten(str(err), 200)}")]) from None
    except RecursionError:  # PyYAML's composer recurses once per level, before any check of ours
        raise SpecError([Problem(source, f"nested more than {MAX_DEPTH} levels deep; a spec's keys are at most "
                                         "6 levels deep")]) from None


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """Apply `key.path=value` overrides; values are parsed as YAML scalars."""
    problems = []
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path.strip():
            problems.append(Problem("--set", f"{shorten(item)} is not of the form key.path=value"))
            continue
        if blocked := set_dotted(tree, path.strip(), parse_yaml(raw, source=f"--set {path}")):
            problems.append(Problem(blocked[0], f"--set {path}: this key holds a {blocked[1]}, not a mapping"))
    if problems:
        raise SpecError(problems)
    return tree


def set_dotted(tree: dict, key: str, value: Any) -> tuple[str, str] | None:
    """Set the dotted `key` of `tree` to `value`, making the mappings on the way; or, when a
    key on the way holds something else (nothing is set then), (its dotted path, its type)."""
    node, parts = tree, key.split(".")
    for depth, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return ".".join(parts[:depth + 1]), type(node).__name__
    node[parts[-1]] = value
    return None
