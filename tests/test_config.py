"""Config loading: variants, typed overrides, unknown keys refused by name."""

import subprocess
import sys
import textwrap

import pytest

from jaxav.config import (
    apply_overrides,
    config_from_json,
    config_to_json,
    get_config,
    split_config_args,
)
from jaxav.config_defaults import base_config
from jaxav.errors import ConfigError


def test_overrides_keep_types():
    c = base_config()
    apply_overrides(
        c,
        [
            "optim.lr=3e-4",
            "train.num_steps=7",
            "data.with_video=true",
            "model.patch_size=(128, 2)",
            "data.dataset=audio_folder",
        ],
    )
    assert c.optim.lr == pytest.approx(3e-4) and isinstance(c.optim.lr, float)
    assert c.train.num_steps == 7 and isinstance(c.train.num_steps, int)
    assert c.data.with_video is True
    assert tuple(c.model.patch_size) == (128, 2)
    assert c.data.dataset == "audio_folder"


@pytest.mark.parametrize(
    "item,name",
    [
        ("no_such_key=1", "no_such_key"),
        ("optim.no_such=2", "optim.no_such"),
        ("optim.lr.x=1", "optim.lr.x"),
    ],
)
def test_unknown_key_is_named(item, name):
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        apply_overrides(base_config(), [item])


def test_bad_value_type_is_named():
    with pytest.raises(ConfigError, match="train.num_steps"):
        apply_overrides(base_config(), ["train.num_steps=many"])


def test_split_config_args_both_forms():
    rest, ov = split_config_args(["--config", "c.py", "--config.a.b=1", "--config.c", "2", "-x"])
    assert rest == ["--config", "c.py", "-x"] and ov == ["a.b=1", "c=2"]


def test_variant_and_json_round_trip(tmp_path):
    f = tmp_path / "recipe.py"
    f.write_text(
        textwrap.dedent("""
        from jaxav.config_defaults import base_config
        def get_config(arg=None):
            c = base_config()
            if arg == "frame":
                c.model.patch_size = (128, 2)
            elif arg:
                raise ValueError(arg)
            return c
    """)
    )
    c = get_config(f"{f}:frame", ["train.batch_size=4"])
    assert tuple(c.model.patch_size) == (128, 2) and c.train.batch_size == 4
    assert config_to_json(config_from_json(config_to_json(c))) == config_to_json(c)
    with pytest.raises(ConfigError, match="variant"):
        get_config(f"{f}:nope")
    with pytest.raises(ConfigError, match="not found"):
        get_config(str(tmp_path / "missing.py"))


def test_every_recipe_loads():
    import pathlib

    recipes = sorted((pathlib.Path(__file__).parents[1] / "configs").glob("*.py"))
    assert recipes, "no recipes found"
    for path in recipes:
        c = get_config(str(path))
        for key in (
            "train.num_steps",
            "train.batch_size",
            "optim.lr",
            "checkpoint.every_steps",
            "checkpoint.keep",
        ):
            group, field = key.split(".")
            assert field in c[group], (path, key)


def test_cli_refuses_unknown_key_by_name(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxav.cli",
            "train",
            "--config",
            "configs/quickstart.py",
            "--workdir",
            str(tmp_path / "w"),
            "--config.no_such_key=1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "no_such_key" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()
