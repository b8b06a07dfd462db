"""What Hydra needs from attn-bench before it composes a config: the config package, the
run-directory naming resolver and the sweep launcher. Call :func:`register` once."""
from __future__ import annotations

import hashlib
import re
from importlib import resources

from omegaconf import OmegaConf

CONFIG_MODULE = "attn_bench.configs"
CONFIG_GROUPS = ("model", "data", "trainer", "experiment")


def dirname_for(overrides: str) -> str:
    """A directory name for a set of overrides: readable, filesystem-safe, bounded in length."""
    name = re.sub(r"[^A-Za-z0-9=,.+_\-\[\]]", "_", overrides) or "default"
    if len(name) > 120:
        name = f"{name[:100]}-{hashlib.sha1(overrides.encode()).hexdigest()[:10]}"
    return name


def group_options(group: str) -> list[str]:
    folder = resources.files(CONFIG_MODULE) / group
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def register() -> None:
    """The ``ab_dirname`` resolver, and the ``gpu_queue`` launcher (its config and its plugin class)."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.attn_bench_launcher.gpu_queue import GpuQueueLauncher

    OmegaConf.register_new_resolver("ab_dirname", dirname_for, replace=True)
    # Hydra's own scan finds the launcher in a regular install but not in an editable one.
    Plugins.instance().register(GpuQueueLauncher)
