"""Fuzzing the configuration files and their dotted overrides: the recipes' YAML configs
(``recipes/configs/*.yaml`` through ``RunConfig.from_yaml``) with one key removed or one value of another type,
truncated or garbage; ``apply_overrides`` with every field name (and unknown ones) and YAML scalars of every
kind; every :class:`~unifusion_sam.config.JsonConfig` (``from_dict`` / ``from_json`` / ``load``) from its
defaults or its presets with one mutation; the adapter presets (``load_preset``, ``merge_overrides``). Each
must build or be refused by the rule of :mod:`fuzzing`, naming the key, the value or the file."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import yaml
from fuzzing import check_refusal, counted, ok_or_refused, refused
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import JSON_VALUES, mutate_structure

from unifusion_sam.config import JsonConfig, load_preset_file
from unifusion_sam.data.synthetic import SyntheticConfig
from unifusion_sam.demo.config import DemoConfig
from unifusion_sam.encoders.mask import MaskEncoderConfig
from unifusion_sam.encoders.text import TextEncoderConfig
from unifusion_sam.fusion.unifusion import UniFusionConfig
from unifusion_sam.sam.adapter.config import LoraSettings, list_presets, load_preset, merge_overrides, preset_dirs
from unifusion_sam.sam.builders.stand_in import StandInConfig
from unifusion_sam.sam.training import SamTrainConfig
from unifusion_sam.training.config import DataSource, StageConfig, apply_overrides, flat_fields
from unifusion_sam.uniref.modeling.config import PRESET_DIRS, UniRefConfig
from unifusion_sam.uniref.training.config import UniRefTrainConfig

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "configs"


SKIPPED: dict[str, str] = {}  # recipe -> why it cannot load here


def _loads(cls, path: Path) -> bool:
    try:
        cls.from_yaml(path)
    except FileNotFoundError as exc:  # a recipe of a real data set that is not on this machine
        SKIPPED[path.name] = str(exc)
        return False
    return True


RECIPE_CLASSES = {p.name: cls for p in sorted(RECIPES.glob("*.yaml"))
                  for cls in [SamTrainConfig if p.name == "default.yaml" else UniRefTrainConfig] if _loads(cls, p)}
RECIPE_DATA = {name: yaml.safe_load((RECIPES / name).read_text()) for name in RECIPE_CLASSES}
# every JsonConfig of the library, each from a valid dict (its defaults, or a shipped preset)
CONFIGS = {
    "UniFusionSamConfig": (type(load_preset("sam-tiny")), load_preset("sam-tiny-lora").to_dict()),
    "UniRefConfig": (UniRefConfig, json.loads((PRESET_DIRS[0] / "uniref-small.json").read_text())),
    "UniRefConfig-r50": (UniRefConfig, json.loads((PRESET_DIRS[0] / "uniref-r50.json").read_text())),
    "LoraSettings": (LoraSettings, LoraSettings().to_dict()),
    "UniFusionConfig": (UniFusionConfig, UniFusionConfig().to_dict()),
    "TextEncoderConfig": (TextEncoderConfig, TextEncoderConfig().to_dict()),
    "MaskEncoderConfig": (MaskEncoderConfig, MaskEncoderConfig().to_dict()),
    "SyntheticConfig": (SyntheticConfig, SyntheticConfig().to_dict()),
    "StandInConfig": (StandInConfig, StandInConfig().to_dict()),
    "DataSource": (DataSource, DataSource(kind="synthetic", task="rvos", options={"first_ref": True}).to_dict()),
    "StageConfig": (StageConfig, StageConfig(data=[DataSource()]).to_dict()),
    "DemoConfig": (DemoConfig, DemoConfig().to_dict()),
}
YAML_SCALARS = ["1e-4", "1.0e-3", "true", "no", "off", "null", "~", "[1, 2]", "[]", "{a: 1}", "-5", "0", "3",
                "nan", ".nan", ".inf", "-.inf", "'", "[", "{", ": :", "a: b: c", "!!python/object:os.system ls",
                "*ref", "&a [1]", "\t", "", "both", "image+video", "video+image", "image+image", "2**70",
                "99999999999999999999999", "synthetic", "ris", "outputs/x", "../../etc"]


def needles_for(path, value) -> list:
    """What a message about a change at ``path`` to ``value`` may name: a key on the path or the value."""
    keys = [str(k) for k in path if isinstance(k, str)]
    return [*keys, repr(value), str(value)] if value != "<removed>" else keys


# ------------------------------------------------------------------ recipe YAML files
def test_only_recipes_of_absent_real_data_are_left_out():
    """The recipes this fuzzing cannot load are the ones whose real data set is missing here, nothing else."""
    assert {"default.yaml", "uniref_default.yaml"} <= set(RECIPE_CLASSES)
    assert set(RECIPE_CLASSES) | set(SKIPPED) == {p.name for p in RECIPES.glob("*.yaml")}
    for name, why in SKIPPED.items():
        assert "root folder does not exist: data/" in why, (name, why)


@given(name=st.sampled_from(sorted(RECIPE_CLASSES)), data=st.data())
@example(name="default.yaml", data=None)
@counted("configs")
def test_recipe_yaml_with_one_mutation(name, data):
    if data is None:  # regression: `image: null` was an AttributeError ('NoneType' object has no attribute 'data')
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / name
            file.write_text(yaml.safe_dump({**RECIPE_DATA[name], "image": None}))
            refused(SamTrainConfig.from_yaml, file, needles=["image"], what="image: null")
        return
    cls = RECIPE_CLASSES[name]
    mutated, path, value = mutate_structure(copy.deepcopy(RECIPE_DATA[name]), data)
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / name
        file.write_text(yaml.safe_dump(mutated))
        cfg = ok_or_refused(cls.from_yaml, file, needles=needles_for(path, value),
                            what=f"{name}: {'/'.join(map(str, path))} = {value!r}")
    if cfg is not None:
        assert isinstance(cfg, cls) and cfg.stage_names()


@given(name=st.sampled_from(sorted(RECIPE_CLASSES)), cut=st.floats(0, 1), garbage=st.binary(max_size=24))
@example(name="default.yaml", cut=0.5, garbage=b"\x80")  # regression: UnicodeDecodeError named no file
@example(name="default.yaml", cut=1.0, garbage=b"\n  - [")  # regression: yaml's ParserError named no file
@counted("configs")
def test_recipe_yaml_truncated_or_garbage(name, cut, garbage):
    raw = (RECIPES / name).read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / name
        file.write_bytes(raw[: int(len(raw) * cut)] + garbage)
        cfg = ok_or_refused(RECIPE_CLASSES[name].from_yaml, file, needles=[str(file)], what=f"{name} cut at {cut}")
    if cfg is not None:
        assert cfg.stage_names()


# ------------------------------------------------------------------ dotted overrides
@given(name=st.sampled_from(sorted(RECIPE_CLASSES)), data=st.data(),
       raw=st.one_of(st.sampled_from(YAML_SCALARS), st.text(max_size=12)))
@example(name="default.yaml", data=None, raw="[")  # regression: yaml's ParserError, not naming the key
@example(name="default.yaml", data=None, raw="'")
@example(name="default.yaml", data="image.decay_steps", raw="1e-4")  # regression: int() of the letter 'e'
@example(name="default.yaml", data="image.decay_steps", raw="[.nan]")  # regression: "cannot convert float NaN"
@example(name="default.yaml", data="max_steps", raw="1e-4")  # regression: "'<' not supported between str and int"
@example(name="default.yaml", data="sam_checkpoint", raw="1.0e-3")  # regression: os.stat's TypeError, no key named
@counted("configs")
def test_dotted_overrides(name, data, raw):
    cfg = RECIPE_CLASSES[name].from_yaml(RECIPES / name)
    keys = sorted(flat_fields(cfg))
    if data is None or isinstance(data, str):
        key = data or "image.lr"
    else:
        key = data.draw(st.one_of(st.sampled_from(keys), st.sampled_from(["image", "nope", "image.nope", "", ".",
                                                                          "image..lr", "data.0.kind"])), label="key")
    # the message names the key (dotted, or its field with the section before it) or the value
    leaf = key.split(".")[-1] if "." in key else None
    new = ok_or_refused(apply_overrides, cfg, {key: raw}, needles=[key, repr(key), raw, repr(raw), leaf],
                        what=f"--{key} {raw!r}")
    if new is not None:
        assert isinstance(new, type(cfg)) and key in flat_fields(new)


# ------------------------------------------------------------------ JsonConfig: from_dict / from_json / load
@given(name=st.sampled_from(sorted(CONFIGS)), data=st.data())
@example(name="LoraSettings", data=None)
@example(name="UniRefConfig", data="pixel_mean")  # regression: "'bool' object is not iterable"
@example(name="DataSource", data="options")  # regression: "argument of type 'bool' is not iterable"
@example(name="LoraSettings", data="targets")  # regression: "'bool' object is not iterable"
@example(name="StageConfig", data="decay_steps")  # regression: "'bool' object is not iterable"
@example(name="MaskEncoderConfig", data="strides")  # was fine; [[]] was "unhashable type: 'list'", below
@counted("configs")
def test_json_config_with_one_mutation(name, data):
    cls, good = CONFIGS[name]
    if data is None:  # the valid dict itself round-trips
        assert cls.from_dict(copy.deepcopy(good)).to_dict() == cls.from_dict(good).to_dict()
        return
    if isinstance(data, str):
        mutated, path, value = {**good, data: True}, (data,), True
        if data == "strides":
            mutated, value = {**good, data: [[]]}, [[]]
    else:
        mutated, path, value = mutate_structure(copy.deepcopy(good), data)
    cfg = ok_or_refused(cls.from_dict, mutated, needles=[*needles_for(path, value), cls.__name__],
                        what=f"{name}: {'/'.join(map(str, path))} = {value!r}")
    if cfg is not None:  # what was accepted saves and loads back as itself
        text = cfg.to_json()
        if "NaN" not in text and "Infinity" not in text:
            assert type(cfg).from_json(text).to_dict() == cfg.to_dict()


@given(name=st.sampled_from(sorted(CONFIGS)), text=st.one_of(st.text(max_size=30), st.sampled_from(
    ["", "{", "[]", "null", "1", '"x"', "{\"a\": 1}", "NaN", "{\"lr\": }", "\x00"])))
@example(name="DemoConfig", text="{")  # regression: json's "Expecting property name" named no file
@counted("configs")
def test_json_config_files(name, text):
    cls, _ = CONFIGS[name]
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "config.json"
        file.write_text(text, encoding="utf-8")
        refused(cls.load, file, needles=[str(file)], what=f"{name}.load({text!r})")
    try:
        cls.from_json(text)
    except Exception as exc:  # noqa: BLE001 - judged by the rule
        check_refusal(exc, [], f"{name}.from_json({text!r})")


# ------------------------------------------------------------------ adapter / model presets
@given(name=st.one_of(st.sampled_from(list_presets()), st.sampled_from(["", "sam", "../adapters/sam-tiny",
                                                                        "sam-tiny.json", "SAM-TINY"]),
                      st.text(max_size=10), st.none(), st.integers()),
       overrides=st.dictionaries(st.sampled_from(["lora", "text", "fusion", "image_size", "reference_pool", "nope",
                                                  "sam_family", "mask", "text_point"]),
                                 st.one_of(st.sampled_from(JSON_VALUES), st.dictionaries(
                                     st.sampled_from(["enabled", "r", "dim", "head_dim", "nope", "strides"]),
                                     st.sampled_from(JSON_VALUES), max_size=2)), max_size=2))
@counted("configs")
def test_adapter_presets_and_overrides(name, overrides):
    base = ok_or_refused(load_preset, name, needles=[repr(name), "preset"], what=f"load_preset({name!r})")
    if base is None:
        assert name not in list_presets()
        return
    cfg = ok_or_refused(merge_overrides, base, overrides, needles=[*map(str, overrides), *map(repr, overrides.values())],
                        what=f"merge_overrides({name!r}, {overrides!r})")
    if cfg is not None:
        assert type(cfg).from_json(cfg.to_json()).to_dict() == cfg.to_dict()


@given(dirs=st.sampled_from(["adapter", "uniref"]), data=st.data())
@counted("configs")
def test_preset_files_with_one_mutation(dirs, data):
    folder, cls, prefix = (preset_dirs()[0], type(load_preset("sam-tiny")), "sam-") if dirs == "adapter" else \
        (PRESET_DIRS[0], UniRefConfig, "uniref-")
    source = data.draw(st.sampled_from(sorted(folder.glob(f"{prefix}*.json"))), label="preset")
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / source.name
        if data.draw(st.booleans(), label="structure"):
            mutated, path, value = mutate_structure(json.loads(source.read_text()), data)
            file.write_text(json.dumps(mutated))
            needles = [*needles_for(path, value), str(file)]
        else:
            raw = source.read_bytes()
            file.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")])
            needles = [str(file)]
        ok_or_refused(load_preset_file, [Path(tmp)], file.stem, cls, dirs, needles=needles, what=f"preset {file.name}")


def test_configs_cover_every_json_config():
    """Every JsonConfig subclass of the library is fuzzed (a new one must be added to CONFIGS)."""
    import unifusion_sam.uniref.modeling.config  # noqa: F401 - registers TaskSizes

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    fuzzed = {cls for cls, _ in CONFIGS.values()} | {SamTrainConfig, UniRefTrainConfig}
    missing = {c.__name__ for c in subclasses(JsonConfig) if c.__module__.startswith("unifusion_sam")} \
        - {c.__name__ for c in fuzzed} - {"RunConfig", "TaskSizes"}  # both inside fuzzed ones
    assert not missing, f"JsonConfig subclasses not fuzzed: {sorted(missing)}"
