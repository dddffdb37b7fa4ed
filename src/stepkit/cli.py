"""The ``stepkit`` command line: ``fit``, ``sample``, ``list``, ``info``.

Example::

    stepkit list
    stepkit info gan --json
    stepkit fit --step gan --epochs 15 --set latent_dim=64 --out runs/gan
    stepkit fit --resume runs/gan --epochs 30
    stepkit sample runs/gan --n 64 --out grid.png

Exit codes: 0 done, 2 bad input (unknown step, bad config, bad data; the message
is on stderr), 130 training interrupted with Ctrl-C (the model and history so
far are saved). The backend's own log lines are hidden unless ``--debug``.

The work is split by command: settings in :mod:`stepkit.cli_settings`, training
in :mod:`stepkit.cli_fit`, sampling in :mod:`stepkit.cli_sample`, the log filter
in :mod:`stepkit.cli_quiet`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from importlib import metadata

from stepkit.cli_fit import classifier_network, run_fit
from stepkit.cli_quiet import BackendLogFilter, quiet_environment
from stepkit.cli_settings import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    STEP_PRESETS,
    UsageError,
    default_preset,
    has_default_networks,
    resolve_settings,
    resolve_step,
)
from stepkit.describe import describe_step, format_step
from stepkit.errors import StepkitError

__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "STEP_PRESETS", "UsageError", "build_parser",
           "classifier_network", "default_preset", "describe_step", "has_default_networks",
           "main", "run_fit"]


def _version() -> str:
    from stepkit import __version__

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return (f"stepkit {__version__} (keras {installed('keras')}, tensorflow "
            f"{installed('tensorflow')}, Python {sys.version.split()[0]})")


# ---------------------------------------------------------------- commands


def _cmd_fit(args: argparse.Namespace) -> int:
    return run_fit(resolve_settings(args), resume=bool(args.resume), verbose=args.verbose)


def _cmd_sample(args: argparse.Namespace) -> int:
    from stepkit.cli_sample import run_sample

    return run_sample(args.source, n=args.n, out=args.out, seed=args.seed, cols=args.cols)


def _cmd_list(args: argparse.Namespace) -> int:
    from stepkit.registry import registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # broken plugins are listed below
        reg = registry()
        steps, broken, conflicts = reg.steps(), reg.broken(), reg.conflicts()
        wrappers = reg.wrappers()
        conflicts.update({f"wrapper {n}": v for n, v in reg.wrapper_conflicts().items()})
    rows = [{"name": i.name, "distribution": i.distribution, "version": i.version,
             "plugin": i.plugin, "roles": list(i.step_class.roles),
             "description": i.step_class.description} for i in steps]
    wrapper_rows = [{"name": i.name, "distribution": i.distribution, "version": i.version,
                     "plugin": i.plugin, "description": i.step_class.description}
                    for i in wrappers]
    bad = [{"plugin": b.plugin, "distribution": b.distribution, "version": b.version,
            "error": b.error} for b in broken]
    clash = {n: [i.source for i in infos] for n, infos in conflicts.items()}
    if args.json:
        print(json.dumps({"steps": rows, "wrappers": wrapper_rows, "broken": bad,
                          "conflicts": clash}, indent=2))
        return 0
    sources = [f"{r['distribution'] or 'plugin ' + r['plugin']} {r['version'] or ''}".strip()
               for r in rows]
    width = max([len(r["name"]) for r in rows] + [4])
    source_width = max([len(s) for s in sources] + [8])
    for r, source in zip(rows, sources, strict=True):
        print(f"{r['name']:<{width}}  {source:<{source_width}}  roles: {', '.join(r['roles'])}")
        print(f"{'':<{width}}  {r['description'] or '(no description)'}")
    if wrapper_rows:
        print("\nwrappers (StepModel(wrappers=[...]), stepkit fit --wrap NAME):")
    for r in wrapper_rows:
        source = f"{r['distribution'] or 'plugin ' + r['plugin']} {r['version'] or ''}".strip()
        print(f"{r['name']:<{width}}  {source:<{source_width}}  "
              f"{r['description'] or '(no description)'}")
    for b in bad:
        source = f"{b['distribution'] or ''} {b['version'] or ''}".strip() or "(no distribution)"
        print(f"BROKEN {b['plugin']} ({source}): {b['error']}")
    for name, where in clash.items():
        print(f"CONFLICT {name}: registered by {' and '.join(where)}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from stepkit.describe import describe_wrapper, format_wrapper
    from stepkit.errors import UnknownStepError
    from stepkit.registry import registry

    try:
        name, _ = resolve_step(args.name)
    except UnknownStepError:
        if args.name not in {i.name for i in registry().wrappers()}:
            raise
        info = describe_wrapper(args.name)
        print(json.dumps(info, indent=2) if args.json else format_wrapper(info))
        return 0
    info = describe_step(name)
    print(json.dumps(info, indent=2) if args.json else format_step(info))
    return 0


# ---------------------------------------------------------------- parser


def _debug_flag(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the backend's own log lines (TensorFlow, absl, CUDA) and "
                        "tracebacks of errors")


def _add_fit(sub: argparse._SubParsersAction) -> None:
    fit = sub.add_parser("fit", help="train a step on a dataset and save the results",
                         description="Train a step; writes the model, history, loss curve, "
                         "TensorBoard logs and (generative steps) sample grids to --out.")
    fit.add_argument("--step", help="registered step name (see `stepkit list`)")
    fit.add_argument("--data", help="'digits' (default), a .npz file (keys x, optional y), an "
                     "image folder, or a cached Keras dataset: mnist, fashion_mnist, cifar10")
    fit.add_argument("--epochs", type=int, help="number of epochs (default 10)")
    fit.add_argument("--batch-size", type=int,
                     help="batch size (default: the step's default_batch_size, else 32; "
                          "16 for gan)")
    fit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="a step config value, e.g. --set latent_dim=64 (repeatable)")
    fit.add_argument("--wrap", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                     help="stack a step wrapper (repeat; outermost first), e.g. --wrap ema "
                          "--wrap sam:rho=0.05 (see `stepkit list`)")
    fit.add_argument("--config", help="a TOML or JSON file with run settings and a "
                     "[config] table of step settings")
    fit.add_argument("--seed", type=int, help="random seed (Python, numpy, Keras, the model); "
                     "default 0, so the same command gives the same run")
    fit.add_argument("--out", help="output folder (default runs/<step>-<timestamp>)")
    fit.add_argument("--limit", type=int, help="use only the first N samples")
    fit.add_argument("--image-size", type=int, help="side of the images made from the digits "
                     "or an image folder (default 28)")
    fit.add_argument("--validation-split", type=float, metavar="FRACTION",
                     help="share of the samples held out for validation (default 0.2 for "
                     "labelled data, 0 otherwise)")
    fit.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its backup")
    fit.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                     help="Keras verbosity: 0 silent, 1 progress bar (default), 2 one line "
                     "per epoch")
    _debug_flag(fit, argparse.SUPPRESS)
    fit.set_defaults(func=_cmd_fit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stepkit", description="Train Keras models with step plugins.")
    parser.add_argument("--version", action="version", version=_version())
    _debug_flag(parser, False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_fit(sub)

    sample = sub.add_parser("sample", help="write a grid of samples of a trained generative "
                            "step", description="Predict images from latent vectors with a "
                            "trained generative step and save them as one grid.")
    sample.add_argument("source", metavar="RUN_OR_MODEL",
                        help="a folder written by `stepkit fit`, or a .keras file")
    sample.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    sample.add_argument("--out", default="samples.png", help="PNG file to write "
                        "(default samples.png)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the latent vectors "
                        "(default 0: the same vectors as the run's sample grids)")
    sample.add_argument("--cols", type=int, help="tiles per row (default: a square grid)")
    _debug_flag(sample, argparse.SUPPRESS)
    sample.set_defaults(func=_cmd_sample)

    lst = sub.add_parser("list", help="show every available step and broken plugins")
    lst.add_argument("--json", action="store_true", help="print JSON")
    _debug_flag(lst, argparse.SUPPRESS)
    lst.set_defaults(func=_cmd_list)

    info = sub.add_parser("info", help="show a step's config fields, optimizers and networks")
    info.add_argument("name", help="step or wrapper name")
    info.add_argument("--json", action="store_true", help="print JSON")
    _debug_flag(info, argparse.SUPPRESS)
    info.set_defaults(func=_cmd_info)
    return parser


def _silence_python_logs() -> None:
    """Python-side chatter of the backend (absl, TensorFlow and Keras warnings)."""
    import logging

    for name in ("absl", "tensorflow", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in ("tensorflow", "keras", "absl", "google"):
        warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or argparse's usage errors (code 2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    quiet = None
    if args.debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    else:
        quiet_environment()  # before Keras loads (lazily)
        quiet = BackendLogFilter.install()
        _silence_python_logs()
    try:
        return args.func(args)
    except StepkitError as exc:
        if args.debug:
            traceback.print_exc()
        message = getattr(exc, "plain", None) or str(exc)
        print(f"stepkit {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if quiet is not None:
            quiet.remove()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
