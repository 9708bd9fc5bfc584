"""``dropline replay --config FILE [--manifest M] [-o OUT]``: the core on recorded inputs, merged
by event time.

Prints the records the agent would commit, in the export form (``dropline export``), numbered
from 1 in commit order; no outbox, no uplink. Byte-identical on every run. The rules that put the
sources on one time line are in ``agent/replay.py``; a summary of rejected input goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dropline_cli.output import add_output_argument, input_file, output_stream, write_json_lines
from protocols.errors import InputError, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="agent TOML file with file drivers")
    parser.add_argument(
        "--effects", type=Path, help="recorded effect results (export JSON lines) to feed back"
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        help="delivery manifest (JSON); default: the configuration's [route] manifest",
    )
    add_output_argument(parser)


def run(args: argparse.Namespace) -> int:
    from agent.replay import Replay, export_rows, load_config

    config_path = input_file(args.config)
    effects = input_file(args.effects) if args.effects else None
    try:
        config = load_config(config_path)
        replay = Replay(config, effects, manifest=input_file(args.manifest) if args.manifest else None)
        with output_stream(args.output) as out:
            count = write_json_lines(export_rows(replay.records()), out)
    except (InputError, OSError) as exc:
        raise UsageError(f"replay: {exc}") from exc
    rejected = {name: r.as_dict() for name, r in replay.rejects.items() if r.as_dict()}
    print(
        f"replay: {config_path}: {count} records; rejected input {rejected or 'none'}; "
        f"effects requested (not run in a replay) {replay.effects_requested}",
        file=sys.stderr,
    )
    return 0
