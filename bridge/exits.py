"""Exit statuses of the `dbevent-bridge` commands: the one place that defines and picks them.

- 0: success; `run`: stopped by a signal after draining.
- 1: a runtime failure the log explains (a bug, a broken spool, a client
  library that keeps refusing calls without saying why, ...); `doctor`: a
  check failed.
- 2: invalid settings (one line per problem on stderr).
- 3: Ingres refused what the settings say: rejected credentials, an unknown
  database (`run`); `check-config`: the Ingres check failed.
- 4: RabbitMQ refused what the settings say: rejected credentials or
  certificate, a missing exchange (`run`); `check-config`: the RabbitMQ check
  failed.
- 5: `check-config`: both checks failed.
- 128 + N: `run`: a second signal N during the drain forced an immediate exit;
  what was not confirmed stays in the spool for the next start.

Everything else `run` meets (an unreachable server, a missing DBEvent or
privilege) is retried, never an exit: under an orchestrator an exit is a
restart, and every restart is a window in which no event is caught.
"""

from __future__ import annotations

import signal
from enum import IntEnum

__all__ = ["ExitStatus", "checks_status", "forced_by", "status_of"]


class ExitStatus(IntEnum):
    """The fixed exit statuses (see the module docstring)."""

    OK = 0
    FAILURE = 1
    BAD_SETTINGS = 2
    INGRES_REFUSED = 3
    AMQP_REFUSED = 4
    BOTH_REFUSED = 5


def status_of(error: BaseException) -> ExitStatus:
    """The status `run` exits with after `error` stopped it."""
    # Imported here: the command line reads this module before it knows
    # whether a command needs the Ingres and AMQP machinery at all.
    from bridge.catcher import CatcherStartupError
    from bridge.publisher import PublisherStartupError

    if isinstance(error, CatcherStartupError):
        return ExitStatus.INGRES_REFUSED
    if isinstance(error, PublisherStartupError):
        return ExitStatus.AMQP_REFUSED
    return ExitStatus.FAILURE


def forced_by(signum: int) -> int:
    """The status of an exit forced by a second signal: 128 + its number, as shells report it."""
    return 128 + signal.Signals(signum).value


def checks_status(ingres_failed: bool, amqp_failed: bool) -> ExitStatus:
    """The status of `check-config` from the outcome of each side."""
    if ingres_failed and amqp_failed:
        return ExitStatus.BOTH_REFUSED
    if ingres_failed:
        return ExitStatus.INGRES_REFUSED
    return ExitStatus.AMQP_REFUSED if amqp_failed else ExitStatus.OK
