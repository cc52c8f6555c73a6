"""Run a command as the terminal's foreground job of its own, and exit as it did.

GNU make shares the terminal's process group with the recipe it runs. On Ctrl-C make gets the SIGINT too,
waits for the recipe and then kills itself with it: ``make run`` exits 130 however cleanly the quickstart
stopped. Here the command gets its own process group and the terminal, so a Ctrl-C reaches it alone (it
stops its processes and exits 0) and make reports that exit. SIGTERM and SIGHUP sent to this process (or
to make's process group) are passed on to the command's group; Ctrl-Z stops both, ``fg`` resumes both.
Without a controlling terminal (CI, a service) the command simply replaces this process.

Usage: python3 scripts/foreground.py COMMAND [ARG...]
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def _foreground_of(fd: int) -> int | None:
    """The terminal's foreground process group when this process is in it, else None."""
    try:
        group = os.tcgetpgrp(fd)
    except OSError:  # no controlling terminal
        return None
    return group if group == os.getpgrp() else None


def _give_terminal(fd: int, group: int) -> None:
    # A process outside the foreground group gets SIGTTOU for tcsetpgrp unless it ignores it.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, group)
    finally:
        signal.signal(signal.SIGTTOU, previous)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    tty = sys.stdin.fileno()
    own = _foreground_of(tty)
    if own is None:
        os.execvp(argv[0], argv)  # noqa: S606  (the command this script is given)
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ready_w)
        os.setpgid(0, 0)
        os.read(ready_r, 1)  # the terminal is ours
        os.close(ready_r)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTSTP):
            signal.signal(sig, signal.SIG_DFL)
        os.execvp(argv[0], argv)  # noqa: S606
    os.close(ready_r)
    with contextlib.suppress(PermissionError):  # both set it: whichever runs first wins the race
        os.setpgid(child, child)
    _give_terminal(tty, child)
    os.write(ready_w, b"x")
    os.close(ready_w)

    def forward(sig: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGHUP, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only a signal sent to make's group: the child has its own
    while True:
        _, status = os.waitpid(child, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            break
        # Ctrl-Z stopped the command: hand the terminal back and stop this job too, so the shell sees it.
        _give_terminal(tty, own)
        os.killpg(own, signal.SIGSTOP)
        # Resumed (``fg``): the terminal and the run go back to the command.
        if _foreground_of(tty) is not None:
            _give_terminal(tty, child)
        os.killpg(child, signal.SIGCONT)
    _give_terminal(tty, own)
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
