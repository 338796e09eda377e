"""``prostseg train``: one flag per configuration field, read back into the configuration."""

from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest

from prostseg.cli import _training_config, build_parser
from prostseg.errors import ProstsegError
from prostseg.networks.runs import FIELD_CHOICES, Pix2PixTrainingConfig, UNetTrainingConfig

CONFIGS = {"unet": UNetTrainingConfig, "pix2pix": Pix2PixTrainingConfig}


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` of ``parser``."""
    return next(action.choices[name] for action in parser._actions
                if isinstance(action, argparse._SubParsersAction))


def _other_value(field: dataclasses.Field, kind: type):
    """A valid value of ``field`` that is not its default."""
    if field.name in FIELD_CHOICES:
        return next(value for value in FIELD_CHOICES[field.name] if value != field.default)
    if kind is bool:
        return not field.default
    if kind is str:
        return f"/somewhere/{field.name}"
    if field.name in ("val_fraction", "test_fraction", "foreground_fraction", "beta_1"):
        return 0.25 if field.default != 0.25 else 0.3
    if kind is float:
        return 3.5 if field.default != 3.5 else 4.5
    if field.name == "image_size":
        return 128 if field.default != 128 else 64  # divisible by 2**depth
    return field.default + 1 if field.default else 2


@pytest.mark.parametrize("model", CONFIGS)
def test_every_configuration_field_is_a_flag_that_reaches_the_configuration(model):
    config_class = CONFIGS[model]
    hints = typing.get_type_hints(config_class)
    expected, argv = {}, ["train", model]
    for field in dataclasses.fields(config_class):
        if field.name == "split_file":  # fixes the parts; the fractions would be refused with it
            expected[field.name] = None
            continue
        kind = next(t for t in typing.get_args(hints[field.name]) or (hints[field.name],)
                    if t is not type(None))
        value = _other_value(field, kind)
        expected[field.name] = value
        flag = "--out" if field.name == "output_dir" else "--" + field.name.replace("_", "-")
        if kind is bool:
            argv.append(flag if value else flag.replace("--", "--no-", 1))
        else:
            argv += [flag, str(value)]
    expected["cache"] = False  # cache and slice_cache exclude each other
    argv.append("--no-cache")

    config = _training_config(build_parser().parse_args(argv))

    assert dataclasses.asdict(config) == expected


@pytest.mark.parametrize("model", CONFIGS)
def test_every_training_flag_is_documented_from_the_configuration(model):
    parser = _subcommand(_subcommand(build_parser(), "train"), model)
    fields = {field.name for field in dataclasses.fields(CONFIGS[model])}
    helps = {action.dest: action.help for action in parser._actions if action.dest in fields}
    assert set(helps) == fields
    assert all(text and text[0].isupper() and text.endswith(".") for text in helps.values()), helps


def test_a_value_outside_the_choices_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "unet", "--loss", "focal"])
    assert "invalid choice: 'focal'" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("--learning-rate", "inf", "must be a finite number > 0, got inf"),
    ("--learning-rate", "nan", "must be a finite number > 0, got nan"),
    ("--val-fraction", "1.5", "must be a number in [0, 1), got 1.5"),
    ("--foreground-fraction", "2", "must be a number in (0, 1], got 2"),
    ("--image-size", "0", "must be a whole number >= 1, got 0"),
    ("--epochs", "2.5", "must be a whole number >= 1, got '2.5'"),
])
def test_a_number_outside_its_range_is_refused_by_the_parser_naming_the_flag(flag, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "unet", "--data-dir", "d", "--out", "o", flag, value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("prostseg train unet: error: ")
    assert f"argument {flag}: {message}" in err


def test_a_fraction_given_with_a_split_file_is_refused():
    args = build_parser().parse_args(["train", "unet", "--data-dir", "d", "--out", "o",
                                      "--split-file", "split.json", "--val-fraction", "0.2"])
    with pytest.raises(ProstsegError, match="--val-fraction has no effect with a split file"):
        _training_config(args)


@pytest.mark.parametrize("model, size, message", [
    ("unet", 100, "image_size=100 does not fit a U-Net of depth=4"),
    ("pix2pix", 36, "image_size=36 does not fit the Pix2Pix generator"),
    ("pix2pix", 16, "image_size=16 does not fit the PatchGAN"),
])
def test_an_image_size_the_network_cannot_take_is_refused_by_the_configuration(model, size, message):
    with pytest.raises(ValueError, match=message):
        CONFIGS[model]("d", "o", image_size=size)


def test_data_folder_and_output_folder_are_required():
    args = build_parser().parse_args(["train", "pix2pix", "--data-dir", "/data"])
    with pytest.raises(ProstsegError, match="--out is required"):
        _training_config(args)
