"""Loading `configs/<name>.py[:variant]` files and applying `--config.a.b=value` overrides."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import ml_collections

from jaxav.errors import ConfigError

OVERRIDE_PREFIX = "--config."


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Imports `path.py[:arg]` and returns its `get_config(arg)` (or `get_config()`)."""
    path, _, arg = spec.partition(":")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file not found: {path}")
    name = f"jaxav_config_{file.stem}"
    module_spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # the user's file: report which one broke
        raise ConfigError(f"cannot import config file {path}: {type(e).__name__}: {e}") from e
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} has no get_config()")
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except (KeyError, ValueError) as e:
        raise ConfigError(f"config file {path}: unknown variant {arg!r}: {e}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}:get_config() must return an ml_collections.ConfigDict")
    return config


def _parse_value(key: str, text: str, current):
    """Parses `text` into the type of the existing value `current`."""
    if isinstance(current, bool):
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigError(f"config key '{key}' expects a bool, got {text!r}")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"config key '{key}' expects an int, got {text!r}") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"config key '{key}' expects a float, got {text!r}") from None
    if isinstance(current, str):
        return text
    if current is None or isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a bare string where the default was None
        if isinstance(current, (tuple, list)):
            if not isinstance(value, (tuple, list)):
                value = (value,)
            return type(current)(value)
        return value
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(f"config key '{key}' is a group; set one of its fields instead")
    raise ConfigError(
        f"config key '{key}' has a type ({type(current).__name__}) "
        "that cannot be set from the command line"
    )


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]):
    """Applies `a.b=value` strings in place; an unknown key raises ConfigError naming it."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, text = item.split("=", 1)
        parts = key.split(".")
        node = config
        for i, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                raise ConfigError(
                    f"unknown config key '{'.'.join(parts[: i + 1])}' (from --config.{item})"
                )
            if i < len(parts) - 1:
                node = node[part]
        with node.unlocked() if hasattr(node, "unlocked") else _null():
            node[parts[-1]] = _parse_value(key, text, node[parts[-1]])
    return config


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def split_config_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Splits argv into (other args, ['a.b=v', ...]) from `--config.a.b=v` or `--config.a.b v`."""
    rest, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(OVERRIDE_PREFIX):
            body = arg[len(OVERRIDE_PREFIX) :]
            if "=" not in body:
                if i + 1 >= len(argv):
                    raise ConfigError(f"override {arg} has no value")
                body = f"{body}={argv[i + 1]}"
                i += 1
            overrides.append(body)
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def get_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads a config file (`path.py[:variant]`), applies overrides, returns it locked."""
    config = load_config_file(spec)
    apply_overrides(config, overrides)
    config.lock()
    return config


def config_to_json(config: ml_collections.ConfigDict) -> str:
    """Serialises a config to JSON (tuples become lists)."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def config_from_json(text: str) -> ml_collections.ConfigDict:
    """Inverse of `config_to_json` (lists stay lists: compare with `config_to_json`)."""
    return ml_collections.ConfigDict(json.loads(text))


if __name__ == "__main__":  # pragma: no cover
    print(config_to_json(get_config(sys.argv[1], sys.argv[2:])))
