"""The ``attn-bench`` command: dispatch to a subcommand, or train (a Hydra app; ``-m`` sweeps).

User mistakes (:class:`~attn_bench.errors.ConfigError`) end as one line on stderr and exit
status 2; real crashes keep their traceback.
"""
from __future__ import annotations

import importlib
import sys

from attn_bench.errors import ConfigError, did_you_mean, fail

# subcommand -> module with ``main(argv) -> int`` (imported only when used)
SUBCOMMANDS = {
    "blocks": "attn_bench.commands.blocks",
    "check-block": "attn_bench.commands.check_block",
    "eval": "attn_bench.commands.eval",
    "export": "attn_bench.commands.export",
    "profile": "attn_bench.commands.profile",
    "report": "attn_bench.commands.report",
    "visualize": "attn_bench.commands.visualize",
}
TRAIN = "attn_bench.commands.train.app"


def register() -> None:
    """What Hydra needs from attn-bench before an app starts: the ``ab_dirname`` resolver of
    ``configs/hydra/default.yaml``, the ``gpu_queue`` launcher class and our shell completions. Hydra's own plugin scan
    finds the launcher in a regular install but not in an editable one, hence by hand."""
    from hydra.core.plugins import Plugins
    from omegaconf import OmegaConf

    from attn_bench.commands import completion
    from hydra_plugins.attn_bench_launcher import submitit
    from hydra_plugins.attn_bench_launcher.gpu_queue import GpuQueueLauncher

    OmegaConf.register_new_resolver("ab_dirname", _run_dirname, replace=True)
    completion.install(SUBCOMMANDS)
    Plugins.instance().register(GpuQueueLauncher)
    if submitit.LocalLauncher is not None:  # the optional submitit launchers, with attn-bench's sweep layout
        Plugins.instance().register(submitit.AttnBenchLocalLauncher)
        Plugins.instance().register(submitit.AttnBenchSlurmLauncher)


def _run_dirname(overrides: str) -> str:
    """``ab_dirname``: a run's directory name (imported on first use: the registry brings torch, which
    ``--help`` and completion do not need)."""
    from attn_bench.attention.registry import tag_sources
    from attn_bench.rundir import dirname_for

    return dirname_for(tag_sources(overrides))


def unknown_subcommand(word: str) -> str:
    return (f"unknown subcommand '{word}'; {did_you_mean(word, SUBCOMMANDS)}valid subcommands: {', '.join(SUBCOMMANDS)} "
            f"(training takes key=value overrides: attn-bench --help)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
        if argv and not argv[0].startswith("-") and "=" not in argv[0]:  # Hydra would call it a grammar error
            raise ConfigError(unknown_subcommand(argv[0]))
        register()
        return importlib.import_module(TRAIN).main(argv)
    except ConfigError as err:
        return fail(str(err))
    except KeyboardInterrupt:
        print("attn-bench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
