import dataclasses
from typing import Literal

import pytest

from shared.config import ConfigError, TrainConfig, bounded, load_config


@dataclasses.dataclass
class Section:
    size: int = bounded(4, low=1)
    rate: float = bounded(0.5, low=0.0, high=1.0)
    mode: Literal["a", "b"] = "a"
    names: list[str] | None = None


@dataclasses.dataclass
class Root:
    section: Section = dataclasses.field(default_factory=Section)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


def test_defaults_then_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("section:\n  size: 8\ntrain:\n  epochs: 3\n")
    config = load_config(
        Root, path, ["section.rate=0.25", "train.learning_rate=1e-3", "section.names=[x, y]"]
    )
    assert config.section.size == 8
    assert config.section.rate == 0.25
    assert config.train.epochs == 3
    assert config.train.learning_rate == pytest.approx(1e-3)
    assert config.section.names == ["x", "y"]
    assert config.train.batch_size == TrainConfig().batch_size


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("section.sise=3", "unknown key section.sise; allowed keys here: mode, names, rate, size"),
        ("section.size=abc", "section.size: expected an integer, got 'abc'"),
        ("section.size=0", "section.size: must be >= 1, got 0"),
        ("section.rate=2", "section.rate: must be <= 1.0, got 2.0"),
        ("section.mode=c", "section.mode: expected one of 'a', 'b', got 'c'"),
        (
            "train.mixed_precision=maybe",
            "train.mixed_precision: expected true or false, got 'maybe'",
        ),
        ("train.learning_rate=0", "train.learning_rate: must be > 0.0, got 0.0"),
        ("train.learning_rate=nan", "train.learning_rate: expected a finite number, got nan"),
        ("train.learning_rate=.inf", "train.learning_rate: expected a finite number, got inf"),
        ("train.weight_decay=-.inf", "train.weight_decay: expected a finite number, got -inf"),
        ("noequals", "--set expects key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match="^" + __import__("re").escape(message)):
        load_config(Root, None, [override])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Root, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("section: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Root, bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Root, listed)


@pytest.mark.parametrize(("raw", "value"), [("|", "|"), (">", ">"), ("a|b", "a|b"), ('"|"', "|")])
def test_a_value_yaml_reads_as_nothing_stays_as_typed(raw, value):
    from shared.config import _parse_scalar

    assert _parse_scalar(raw) == value
    assert _parse_scalar("null") is None and _parse_scalar("") == ""


def test_every_float_key_rejects_nan_from_a_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("section:\n  rate: .nan\n")
    with pytest.raises(ConfigError, match="^section.rate: expected a finite number, got nan$"):
        load_config(Root, path)


def test_a_str_key_takes_a_yaml_date_or_integer_as_the_text_typed():
    @dataclasses.dataclass
    class Period:
        start: str = ""
        label: str = ""

    period = load_config(Period, None, ["start=2019-06-15", "label=2"])
    assert (period.start, period.label) == ("2019-06-15", "2")


def test_a_config_that_is_not_utf8_is_one_line_naming_the_byte_and_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("section:\n  size: 8  # taille réduite\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(Root, path)
    message = str(caught.value)
    assert message == f"{path}: not UTF-8 text (byte 0xe9 on line 2); save the config as UTF-8"


def test_a_config_with_a_byte_order_mark_reads_its_first_key(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfsection:\n  size: 8\n")
    assert load_config(Root, path).section.size == 8


def test_a_non_utf8_config_through_the_cli_is_one_error_line(tmp_path, capsys):
    from shared.cli import main

    path = tmp_path / "bad.yaml"
    path.write_bytes(b"train:\n  epochs: 2 # caf\xe9\n")
    assert main(["fraud", "train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line] == [
        f"error: {path}: not UTF-8 text (byte 0xe9 on line 2); save the config as UTF-8"
    ]


def test_every_string_key_set_on_the_command_line_takes_the_text_typed():
    @dataclasses.dataclass
    class Keys:
        negative_class: str = ""
        column: str | None = "amount"
        mode: Literal["0", "1"] = "1"
        names: list[str] | None = None
        epochs: int = 1
        paths: str | list[str] = ""

    typed = ["negative_class=1.10", "column=0.5", "mode=0", "names=[1, b]", "epochs=3"]
    keys = load_config(Keys, None, typed)
    assert (keys.negative_class, keys.column, keys.mode) == ("1.10", "0.5", "0")
    assert (keys.names, keys.epochs) == (["1", "b"], 3)
    assert load_config(Keys, None, ["paths=[a.pos, b.neg]"]).paths == ["a.pos", "b.neg"]
    assert load_config(Keys, None, ["paths=2019"]).paths == "2019"
    assert load_config(Keys, None, ["column=null", "negative_class=true"]).column is None
    assert load_config(Keys, None, ["negative_class=true"]).negative_class == "true"
    with pytest.raises(ConfigError, match="^epochs: expected an integer, got 'x'$"):
        load_config(Keys, None, ["epochs=x"])
