"""YAML reading for job specs: safe loading only, duplicate keys rejected, `1e-3` read
as a float (PyYAML's YAML 1.1 resolver would read it as a string), and `--set` overrides."""
import re
from typing import Any

import yaml

from launch.spec.problems import Problem, SpecError


class SpecLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last one."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"duplicate key {key!r} (first defined on line {seen[key] + 1}); keep only one",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


# Floats written without a dot (1e-3, 5E+2), which YAML 1.1 leaves as strings.
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_yaml(text: str, *, source: str) -> Any:
    try:
        return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - SpecLoader is a SafeLoader
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise SpecError([Problem(source, f"invalid YAML at {where}: {err.problem or err.context}")]) from None
    except yaml.YAMLError as err:
        raise SpecError([Problem(source, f"invalid YAML: {err}")]) from None


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """Apply `key.path=value` overrides; values are parsed as YAML scalars."""
    problems = []
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path.strip():
            problems.append(Problem("--set", f"{item!r} is not of the form key.path=value"))
            continue
        keys = path.strip().split(".")
        node = tree
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                problems.append(Problem(".".join(keys[:depth + 1]),
                                        f"--set {path}: this key holds a {type(child).__name__}, not a mapping"))
                break
            node = child
        else:
            node[keys[-1]] = parse_yaml(raw, source=f"--set {path}")
    if problems:
        raise SpecError(problems)
    return tree
