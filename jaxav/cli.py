"""The `jaxav` command: `jaxav prepare|train|probe|export ...`.

Each sub-command parses its flags and calls one library function. Errors meant for users
(`JaxavError`) print one line naming what is wrong and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from jaxav.errors import JaxavError
from jaxav.xla_flags import apply_cpu_flags


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="synth_av | audio_folder | manifest")
    p.add_argument("--source", default=None, help="folder (audio_folder) or CSV/JSONL (manifest)")
    p.add_argument(
        "--data_dir",
        default=None,
        help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxav", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="build a dataset (TFDS, ArrayRecord) and print a summary")
    _add_data_args(p)
    p.add_argument("--strict", action="store_true", help="fail on the first bad audio file")

    p = sub.add_parser("train", help="pretrain; resumes from the workdir's latest checkpoint")
    p.add_argument("--config", required=True, help="configs/NAME.py[:variant]")
    p.add_argument("--workdir", required=True)
    p.add_argument("--coordinator_address", default=None, help="host:port of process 0")
    p.add_argument("--num_processes", type=int, default=None)
    p.add_argument("--process_id", type=int, default=None)

    p = sub.add_parser("probe", help="linear probe + kNN of a checkpoint's frozen features")
    p.add_argument("--workdir", required=True)
    p.add_argument("--step", type=int, default=None)
    _add_data_args(p)
    p.add_argument("--out", default=None, help="output folder (default: WORKDIR/probe/<dataset>)")
    p.add_argument("--baseline", choices=("random", "mfcc"), default=None)

    p = sub.add_parser("export", help="export a checkpoint's encoder to PyTorch / Hugging Face")
    p.add_argument("--workdir", required=True)
    p.add_argument("--step", type=int, default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=("torch", "hf"), default="torch")
    return parser


def _run(args, overrides) -> int:
    if args.command == "prepare":
        from jaxav.data.prepare import prepare_dataset

        ds = prepare_dataset(
            args.dataset, source=args.source, data_dir=args.data_dir, strict=args.strict
        )
        print(ds.summary())
        return 0
    if args.command == "train":
        from jaxav import distributed
        from jaxav.config import get_config

        config = get_config(args.config, overrides)  # before JAX starts: config errors are fast
        distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
        from jaxav.train.trainer import train

        result = train(config, args.workdir)
        m = result["metrics"]
        print(
            f"done: step {result['step']}, loss {m.get('loss', float('nan')):.4f}, "
            f"non-finite steps skipped {result['nonfinite_total']}, workdir {args.workdir}"
        )
        return 0
    if overrides:
        raise JaxavError(f"--config.* overrides are only for `jaxav train` (got {overrides[0]})")
    if args.command == "probe":
        from jaxav.evaluate.run_probe import run_probe

        run_probe(
            args.workdir,
            args.dataset,
            source=args.source,
            data_dir=args.data_dir,
            step=args.step,
            out=args.out,
            baseline=args.baseline,
        )
        return 0
    if args.command == "export":
        from jaxav.export.to_torch import export

        export(args.workdir, args.out, fmt=args.format, step=args.step)
        return 0
    raise AssertionError(args.command)


def main(argv=None) -> int:
    """Entry point of the `jaxav` console script."""
    from jaxav.config import split_config_args

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    apply_cpu_flags()  # before JAX starts its backend (see jaxav/xla_flags.py)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax/TFDS info chatter off the console
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        rest, overrides = split_config_args(argv)
        args = _parser().parse_args(rest)
        return _run(args, overrides)
    except JaxavError as e:
        print(f"jaxav {argv[0] if argv else ''}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
