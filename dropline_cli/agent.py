"""``dropline agent --config FILE``: run the van agent until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from agent.config import describe, load
from dropline_cli import cext
from protocols.errors import ConfigError, DbcError, MappingError, UsageError

log = logging.getLogger("dropline.agent")


_M_ARENA_MAX = -8  # glibc's mallopt parameter


def _glibc() -> ctypes.CDLL | None:
    """glibc, to keep the agent's heap small on a Pi: by default each thread that allocates
    (drivers, uplink, gRPC's) gets its own malloc arena, and memory freed in one is not reused by
    another; the agent's load needs no parallel malloc (measured with ``bench/memory.py``). None
    off glibc (musl has no arenas to limit)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=False, help="agent TOML file")
    parser.add_argument("--describe-config", action="store_true", help="print every setting with its default")


def run(args: argparse.Namespace) -> int:
    if args.describe_config:
        print("\n".join(describe()))
        return 0
    if args.config is None:
        raise UsageError("agent: --config FILE is required (see --describe-config)")
    try:
        config = load(args.config)
        cext.check()
        libc = _glibc()
        if libc is not None:
            libc.mallopt(_M_ARENA_MAX, 2)
        from agent.runtime import Agent

        agent = Agent(config)
        gc.collect()
        gc.freeze()  # what startup built lives for the whole run: the collector stops walking it
        if libc is not None:
            libc.malloc_trim(0)  # give back what loading (DBC, GS1 tables) used only briefly
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    except DbcError as exc:  # the DBC is parsed only when the decoder loads it
        raise UsageError(f"{args.config}.can.dbc: {exc}") from exc
    except MappingError as exc:  # a mapping naming what this DBC lacks
        raise UsageError(f"{args.config}.can.mapping: {exc}") from exc

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        agent.stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run()
    print(json.dumps(agent.status(), default=str), file=sys.stderr)
    return 0
