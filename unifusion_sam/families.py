"""The model families the core can load: a dict registry of plug-ins, like segment-anything's ``sam_model_registry``.

The core knows no family by name. A family is a subclass of :class:`ModelFamily` that says how to
recognise its checkpoint folders (the config file only it writes), where its training runs put their
checkpoint, which untrained presets it builds, which command-line options it takes, and how to load or
build a model. Families come from the ``unifusion_sam.families`` entry-point group (this package declares
``sam`` and ``uniref`` in its ``pyproject.toml``; another package can add its own) or from
:func:`register_family` at run time::

    class ToyFamily(ModelFamily):
        name, title = "toy", "toy model"
        config_name, weights_name, run_subdir = "toy_config.json", "toy.safetensors", "toy"
        def load(self, source, *, run_dir=None, revision=None, **options): ...
        def build(self, preset=None, **options): ...

    register_family(ToyFamily())
    unifusion_sam.from_pretrained("outputs/toy_run")   # now recognised

Entry points are read on first use, so importing this module (or the core) imports no family.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ENTRY_POINT_GROUP = "unifusion_sam.families"


@dataclass(frozen=True)
class FamilyOption:
    """A command-line option a family takes when a front end loads a model (e.g. ``--sam``): ``flag``,
    the keyword argument it becomes (``dest``), ``help``, and argparse's ``type`` / ``choices``."""

    flag: str
    dest: str
    help: str
    type: Any = None
    choices: tuple[str, ...] | None = None


class ModelFamily:
    """What the core needs to know of a model family; subclass it in the family's ``plugin.py``.

    Class attributes: ``name`` (the registry key, also the ``family`` attribute of the family's models),
    ``title`` (for messages), ``config_name`` / ``weights_name`` (the files of a checkpoint folder; the
    config file tells the family apart), ``run_subdir`` (the checkpoint folder inside a training run's
    output folder), ``supports_prompts`` (point / box prompts), ``options`` (see :class:`FamilyOption`) and
    ``runtime`` (what runs its models).
    """

    name: str = ""
    title: str = ""
    config_name: str = ""
    weights_name: str = ""
    run_subdir: str = ""
    supports_prompts: bool = False
    options: tuple[FamilyOption, ...] = ()
    #: what runs the family's models: ``"torch"``, or ``"onnxruntime"`` for exported graphs (``--onnx DIR``)
    runtime: str = "torch"

    def presets(self) -> list[str]:
        """Names of the configurations :meth:`build` accepts (``--checkpoint none --adapter NAME``)."""
        return []

    def load(self, source: str, *, run_dir: Path | None = None, revision: str | None = None, **options: Any):
        """The model of the checkpoint ``source`` (a folder of this family or a Hub repo id), in eval mode.
        ``run_dir``: the training run's output folder when ``source`` is its checkpoint (it may hold more the
        family needs); ``options``: this family's keyword arguments (:attr:`options` and Python-only ones)."""
        raise NotImplementedError

    def build(self, preset: str | None = None, **options: Any):
        """An untrained model of ``preset`` (the family's default when ``None``), in eval mode."""
        raise NotImplementedError

    def claims(self, folder: Path) -> bool:
        """Whether ``folder`` is a checkpoint of this family (its config file is there)."""
        return bool(self.config_name) and (folder / self.config_name).is_file()

    def describe(self, model: Any, source: str | None) -> str:
        """One line naming a loaded model (``source``: its checkpoint, ``None`` for an untrained one)."""
        return f"{self.title} `{source}`" if source is not None else f"untrained {self.title}"

    def owns(self, model: Any) -> bool:
        """Whether ``model`` belongs to this family."""
        return getattr(model, "family", None) == self.name

    def __repr__(self) -> str:
        return f"<model family {self.name!r}: {self.title}>"


_REGISTRY: dict[str, ModelFamily] = {}
_ENTRY_POINTS_READ = False


def register_family(family: ModelFamily, *, replace: bool = False) -> ModelFamily:
    """Add ``family`` to the registry (``replace=True`` overwrites one of the same name); returns it."""
    if not isinstance(family, ModelFamily):
        raise TypeError(f"register_family takes a ModelFamily instance, got {type(family).__name__}")
    if not family.name or not isinstance(family.name, str):
        raise ValueError(f"a model family needs a non-empty name, got {family.name!r}")
    _read_entry_points()
    if family.name in _REGISTRY and not replace and _REGISTRY[family.name] is not family:
        raise ValueError(f"a model family named {family.name!r} is registered already ({_REGISTRY[family.name]!r}); "
                         "pass replace=True to overwrite it")
    _REGISTRY[family.name] = family
    return family


def unregister_family(name: str) -> None:
    """Remove a family from the registry (a no-op for an unknown name)."""
    _read_entry_points()
    _REGISTRY.pop(name, None)


def _read_entry_points() -> None:
    global _ENTRY_POINTS_READ
    if _ENTRY_POINTS_READ:
        return
    _ENTRY_POINTS_READ = True
    for entry in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if entry.name in _REGISTRY:
            continue
        family = entry.load()
        family = family() if isinstance(family, type) else family
        if not isinstance(family, ModelFamily) or family.name != entry.name:
            raise TypeError(f"entry point {entry.name} = {entry.value} in group {ENTRY_POINT_GROUP!r} must give a "
                            f"ModelFamily named {entry.name!r}, got {family!r}")
        _REGISTRY[entry.name] = family


def families() -> list[ModelFamily]:
    """Every registered family, entry points first (by name), then those registered at run time."""
    _read_entry_points()
    return list(_REGISTRY.values())


def get_family(name: str) -> ModelFamily:
    """The family registered as ``name``; a ``ValueError`` listing the known ones otherwise."""
    _read_entry_points()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model family {name!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def family_of_folder(folder: str | os.PathLike) -> ModelFamily | None:
    """The family whose checkpoint ``folder`` is (its config file is there), or ``None``."""
    folder = Path(folder)
    return next((f for f in families() if f.claims(folder)), None)


def family_of_hub_repo(repo_id: str, revision: str | None = None, **hub_kwargs: Any) -> ModelFamily:
    """The family of a Hugging Face Hub repo, from the config file it holds (read through the local HF
    cache when ``HF_HUB_OFFLINE=1``); ``FileNotFoundError`` naming what was tried otherwise."""
    from huggingface_hub import hf_hub_download

    errors = []
    for family in families():
        try:
            hf_hub_download(str(repo_id), family.config_name, revision=revision, **hub_kwargs)
            return family
        except Exception as exc:  # noqa: BLE001 - not found, offline and not cached, invalid id: try the next family
            errors.append(f"{family.config_name}: {type(exc).__name__}: {exc}")
    names = " nor ".join(f"{f.config_name} ({f.title})" for f in families())
    raise FileNotFoundError(f"{repo_id!r} is not a local folder, and neither {names} could be found as a Hugging "
                            f"Face Hub repo ({'; '.join(errors)})")


def family_of_preset(preset: str | None) -> ModelFamily:
    """The family that builds the untrained configuration ``preset`` (``None``: the first registered family,
    whose :meth:`ModelFamily.build` picks its own default)."""
    if preset is None:
        return families()[0]
    for family in families():
        if preset in family.presets():
            return family
    known = {f.name: f.presets() for f in families()}
    raise ValueError(f"unknown preset {preset!r}; presets by model family: {known}")


def family_of_model(model: Any) -> ModelFamily:
    """The family a model belongs to (its ``family`` attribute)."""
    for family in families():
        if family.owns(model):
            return family
    raise ValueError(f"{type(model).__name__} belongs to no registered model family "
                     f"(its family attribute is {getattr(model, 'family', None)!r})")
