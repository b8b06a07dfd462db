"""The config package and how to compose it: groups, their options, one ``compose`` helper.

Training (through ``@hydra.main``), ``attn-bench profile``, the tests and the benchmark scripts
all compose from :data:`CONFIG_MODULE`; only :func:`compose` talks to Hydra's compose API.
"""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from attn_bench.errors import ConfigError, did_you_mean

CONFIG_MODULE = "attn_bench.configs"
CONFIG_GROUPS = ("model", "data", "trainer", "experiment", "debug")
# where each group's keys are defined: every trainer recipe starts from quick, a data node's file is its dataset's;
# under model, the block's and timm's own arguments take any key
GROUP_SCHEMAS = {"trainer": ("trainer/quick.yaml", ()), "model": ("_model.yaml", ("attn_args", "timm_kwargs"))}


def group_options(group: str, config_dirs: list[Path] = ()) -> list[str]:
    """The choices of a config group: the shipped ones and those in the user's ``config_dirs``
    (``--config-dir``, ``hydra.searchpath``)."""
    folders = [resources.files(CONFIG_MODULE) / group, *(Path(d) / group for d in config_dirs)]
    return sorted({p.name[:-5] for folder in folders if folder.is_dir() for p in folder.iterdir()
                   if p.name.endswith(".yaml")})


def user_config_dirs(argv: list[str]) -> list[Path]:
    """The config directories a command line adds to Hydra's search path: ``--config-dir DIR``
    (``-cd``) and the ``file://`` or plain entries of ``hydra.searchpath=[...]``."""
    dirs = []
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in ("--config-dir", "-cd"):
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            dirs.append(value)
        elif flag.lstrip("+") == "hydra.searchpath":
            dirs += [entry.strip().strip("'\"") for entry in value.strip().strip("[]").split(",")]
    return [Path(d.removeprefix("file://")).expanduser() for d in dirs if d and not d.startswith("pkg://")]


def compose(config_name: str, overrides: list[str] | None = None, return_hydra_config: bool = False) -> DictConfig:
    """``config_name`` with ``overrides`` applied, exactly as the CLI composes it; mistakes are one line."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()  # an earlier in-process Hydra app may have left it set
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            return hydra_compose(config_name, overrides=list(overrides or []), return_hydra_config=return_hydra_config)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(" ".join(str(err).split())) from None


def shipped_keys(path: str) -> set[str]:
    """The leaf keys a shipped config file defines (a ``_global_`` data file: those under ``data``)."""
    loaded = OmegaConf.to_container(OmegaConf.load(resources.files(CONFIG_MODULE) / path))
    loaded.pop("defaults", None)
    return set(flatten(loaded.get("data", loaded) if path.startswith("data/") else loaded))


def check_known_keys(node: DictConfig, prefix: str, known: set[str], free_form: tuple[str, ...] = ()) -> None:
    """Refuse keys that nothing reads (``+trainer.ema=true`` would otherwise train as if it existed);
    keys under ``free_form`` (block and timm arguments) are the user's own."""
    keys = flatten(OmegaConf.to_container(node))
    unknown = sorted(k for k in keys if k not in known and not any(k == f or k.startswith(f"{f}.") for f in free_form))
    if unknown:
        hint = did_you_mean(unknown[0], sorted(known | set(free_form)), prefix=f"{prefix}.")
        raise ConfigError(f"unknown key {prefix}.{unknown[0]}{' (and more)' if len(unknown) > 1 else ''}: nothing "
                          f"reads it; {hint}valid keys under {prefix}: {', '.join(sorted(known | set(free_form)))}")


def check_group_keys(group: str, node: DictConfig) -> None:
    """The run's ``model``, ``data`` or ``trainer`` node holds only keys its shipped config defines."""
    schema, free_form = GROUP_SCHEMAS.get(group, (f"data/{node.get('name')}.yaml", ()))
    check_known_keys(node, group, shipped_keys(schema), free_form)


def check_unread_keys(cfg: DictConfig) -> None:
    """The composed run config's keys that nothing reads (``+trainer.epoch=2``), found before torch is imported
    and before the config is printed (training.validate, data.spec and models.build check their own node again)."""
    check_group_keys("trainer", cfg.trainer)
    check_group_keys("model", cfg.model)
    if cfg.data.get("name") in group_options("data"):  # an unknown dataset is the data checks' line
        check_group_keys("data", cfg.data)


def check_override_keys(overrides: list[str]) -> None:
    """A ``key=value`` override whose key the composed config does not have: one line with the closest
    key (Hydra's own message is six lines without one). Keys added with ``+``, Hydra's own and group
    choices are left to Hydra; so is everything when the user's own config folders are in play."""
    if user_config_dirs(overrides) or {"-sc", "--shell-completion"} & set(overrides):  # completion: not overrides
        return
    def is_key(key: str) -> bool:
        return key not in CONFIG_GROUPS and not key.startswith("hydra.") and "@" not in key and "/" not in key

    keys = [a.partition("=")[0] for a in overrides if "=" in a and not a.startswith(("+", "~", "-"))]
    keys = [k for k in keys if is_key(k)]
    # keys added with one +: composed in, so that one nothing reads is refused before Hydra makes a run folder
    added = [a for a in overrides if "=" in a and a.startswith("+") and not a.startswith("++")
             and is_key(a[1:].partition("=")[0])]
    if not keys and not added:
        return
    groups = [f"{a.partition('=')[0]}={a.partition('=')[2].split(',')[0]}" for a in overrides
              if a.partition("=")[0] in CONFIG_GROUPS]  # a swept group: its first choice has the same keys
    try:
        cfg = compose("train", groups + added)
    except ConfigError:
        return  # a bad group choice or value: said elsewhere, in its own line
    if added:
        check_unread_keys(cfg)
    for key in keys:
        node, done = cfg, []
        for part in key.split("."):
            if not isinstance(node, DictConfig) or part not in node.keys():  # `in` is False for a ??? value
                siblings = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
                hint = did_you_mean(part, siblings, prefix="".join(f"{p}." for p in done))
                raise ConfigError(f"unknown key '{key}'; {hint}a key of your own needs '+' (+{key}=...); "
                                  f"attn-bench --help lists the config")
            node = None if OmegaConf.is_missing(node, part) else node[part]  # a mandatory ??? leaf is a key too
            done.append(part)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``{"a.b.c": value}`` (lists and scalars are leaves)."""
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    return {k: v for key, value in node.items() for k, v in flatten(value, f"{prefix}{key}.").items()}


def unescape_override(value: str) -> str:
    """An override value as Hydra's parser reads it: a sweep hands each job its values escaped
    (``my_blocks.py\\:Gate``), and the backslash is not part of the value."""
    return re.sub(r"\\(.)", r"\1", value)
