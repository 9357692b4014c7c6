"""What every ``streamfeat`` sub-command's arguments share: the flags accepted before or
after the sub-command (``-v``, ``--log-format``), the TOPOLOGY argument (positional, with
the old ``--topology FILE`` kept as a hidden, deprecated alias), the progress flags, and the
help texts of the connection flags.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from streamfeat.logs import LOG_FORMATS

__all__ = [
    "KAFKA_CONFIG_HELP",
    "KAFKA_HELP",
    "REDIS_HELP",
    "add_common",
    "add_progress",
    "add_topology",
    "ignore_stop_signals",
    "settle_topology",
    "streamfeat_version",
]

KAFKA_HELP = "Kafka bootstrap servers, host:port[,host:port] (env STREAMFEAT_KAFKA; default " \
             "localhost:9092)"
KAFKA_CONFIG_HELP = ("Kafka client properties in librdkafka's names (security.protocol, "
                     "sasl.*, ssl.*...), ${ENV_VAR} allowed (env STREAMFEAT_KAFKA_CONFIG)")
REDIS_HELP = ("Redis URL: redis:// or rediss:// (TLS), user:password@, TLS files as "
              "?ssl_ca_certs=...&ssl_certfile=...&ssl_keyfile=... (env STREAMFEAT_REDIS; "
              "default redis://localhost:6379/0)")

_VERBOSE_HELP = "log at DEBUG level (also the Kafka clients' start-up chatter)"
_LOG_FORMAT_HELP = ("log lines as text (default) or json: one object per line with ts, level, "
                    "logger, message and exc")


def streamfeat_version() -> str:
    """streamfeat's version, from the installed package's metadata."""
    try:
        return version("streamfeat")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``-v/--verbose`` and ``--log-format``. On the top-level parser (``top``) with their
    defaults; on a sub-command's parser without (``SUPPRESS``), so that a flag given before
    the sub-command is not reset by the sub-command's defaults."""
    options = parser._option_string_actions
    if "-v" not in options and "--verbose" not in options:
        parser.add_argument("-v", "--verbose", action="store_true",
                            default=False if top else argparse.SUPPRESS, help=_VERBOSE_HELP)
    if "--log-format" not in options:
        parser.add_argument("--log-format", choices=LOG_FORMATS,
                            default="text" if top else argparse.SUPPRESS,
                            help=_LOG_FORMAT_HELP)


def add_topology(parser: argparse.ArgumentParser, help: str) -> None:
    """The TOPOLOGY positional, and ``--topology FILE``, its deprecated alias (hidden):
    :func:`settle_topology` picks one after parsing. The usage line shows it first, as
    required (argparse would show ``[TOPOLOGY]`` last: it is optional to argparse only
    because the alias may stand for it)."""
    parser.usage = f"{parser.prog} TOPOLOGY [options]"
    parser.add_argument("topology", nargs="?", metavar="TOPOLOGY", help=help)
    parser.add_argument("--topology", dest="topology_option", metavar="FILE",
                        help=argparse.SUPPRESS)
    parser.set_defaults(topology_parser=parser)


def settle_topology(args: argparse.Namespace,
                    warn: Callable[[str], None] | None = None) -> None:
    """``args.topology`` from the positional or the deprecated ``--topology`` (one warning,
    given to ``warn``; default: a line on stderr); exits with a usage error when neither or
    two different ones are given."""
    parser = getattr(args, "topology_parser", None)
    if not isinstance(parser, argparse.ArgumentParser):
        return
    old = args.topology_option
    if old is not None:
        message = f"--topology is deprecated; give the topology first: {parser.prog} TOPOLOGY ..."
        if warn is None:
            print(f"streamfeat: warning: {message}", file=sys.stderr)
        else:
            warn(message)
        if args.topology is not None and args.topology != old:
            parser.error(f"two topologies given, {args.topology} and --topology {old}; "
                         "give one")
        args.topology = old
        args.topology_option = None  # settled: a second call says nothing
    if args.topology is None:
        parser.error("the following arguments are required: TOPOLOGY")


def add_progress(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress`` into ``args.progress`` (``None``: bar on a
    terminal, else progress lines in the log)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--progress", dest="progress", action="store_true", default=None,
                       help="show a progress bar on stderr even when it is not a terminal")
    group.add_argument("--no-progress", dest="progress", action="store_false",
                       help="no progress at all (default: a bar when stderr is a terminal, "
                            "else a progress line in the log every 5 s)")


def ignore_stop_signals() -> None:
    """For a long-running command that has stopped and stored everything (worker, serve,
    monitor verify): from here a second SIGTERM or SIGINT (a supervisor repeating itself)
    changes nothing. Python puts back the default action of the signals it handled when it
    shuts down, so one arriving then killed the exiting process (status 143, not its own);
    ignored ones stay ignored."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
