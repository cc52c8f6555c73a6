"""The quickstart as a shell runs it: scripts/manage sees make run's environment, a wrong environment is one
line on stderr, and scripts/run.sh (what `make run` runs) stops its web server and worker on SIGTERM or
Ctrl-C within 10 s with exit status 0; on a terminal `make run` itself exits 0 on Ctrl-C."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.dnsservers import free_port

ROOT = Path(__file__).resolve().parents[2]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No DATABASE_URL, DEBUG or keys from the test run: only what a new shell has."""
    home = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CERTMGR_VAR_DIR": str(tmp_path / "var")}
    return {**home, **extra}


def sh(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_scripts_manage_uses_the_quickstart_environment(tmp_path):
    env = clean_env(tmp_path)
    result = sh(["scripts/manage", "migrate", "-v0"], env)
    assert result.returncode == 0, result.stderr
    result = sh(["scripts/manage", "create_organization", "Acme"], env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "certmgr.sqlite3").is_file()  # make run's database, not another one


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_wrong_environment_is_one_line(tmp_path):
    manage = [sys.executable, "manage.py", "create_organization", "Acme"]
    line = one_line_error(sh(manage, clean_env(tmp_path)))  # neither DEBUG nor SECRET_KEY
    assert line.startswith("manage.py: certmgr is not configured: SECRET_KEY is not set")
    assert "scripts/manage" in line

    line = one_line_error(sh(manage, clean_env(tmp_path, DEBUG="1")))  # a new, empty SQLite database
    assert line.startswith("manage.py: the database (SQLite ") and "is not migrated: no such table" in line
    assert "manage.py migrate" in line

    missing = "postgres://postgres@127.0.0.1:5432/certmgr_no_such_database"
    line = one_line_error(sh(manage, clean_env(tmp_path, DEBUG="1", DATABASE_URL=missing)))
    assert "cannot use the database (certmgr_no_such_database on 127.0.0.1:5432)" in line
    assert "Check DATABASE_URL" in line


def quickstart_env(tmp_path: Path) -> tuple[dict[str, str], int, int]:
    """The environment of a quickstart on free ports: the web server's and the DNS server's."""
    port, dns_port = free_port(), free_port()
    env = clean_env(
        tmp_path,
        CERTMGR_PORT=str(port),
        CERTMGR_ADMIN_PASSWORD="quickstart-test-password",
        CERTMGR_DNS_LISTEN=f"127.0.0.1:{dns_port}",
    )
    return env, port, dns_port


def wait_until_served(url: str, running: Callable[[], bool], log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        assert running(), log.read_text()
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the quickstart did not serve {url}")


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("sigterm", id="SIGTERM to the script (a supervisor)"),
        pytest.param("ctrl-c", id="SIGINT to the process group (Ctrl-C in a terminal)"),
    ],
)
def test_run_sh_stops_cleanly(tmp_path, how):
    env, port, dns_port = quickstart_env(tmp_path)
    log = tmp_path / "run.log"
    process = subprocess.Popen(
        ["bash", "scripts/run.sh"],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal gives it
        # A terminal's shell starts it with SIGINT at its default (a test runner may have it ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        url = f"http://127.0.0.1:{port}/admin/login/"
        wait_until_served(url, lambda: process.poll() is None, log, time.monotonic() + 120)
        time.sleep(1)  # the worker is up too
        assert_dns_answers(dns_port, log)
        started = time.monotonic()
        if how == "sigterm":
            process.send_signal(signal.SIGTERM)
        else:
            os.killpg(process.pid, signal.SIGINT)
        status = process.wait(timeout=30)
        while _group_alive(process.pid) and time.monotonic() - started < 15:
            time.sleep(0.1)  # the worker's own processes, each finishing its task
        took = time.monotonic() - started
        output = log.read_text()
        assert status == 0, output
        assert not _group_alive(process.pid), "a web server or worker process is left"
        assert took < 10, f"stopping took {took:.1f} s"
        assert "Traceback" not in output, output
    finally:
        if process.poll() is None or _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)


def assert_dns_answers(port: int, log: Path) -> None:
    """certmgr's DNS server runs too: a name it is not authoritative for is REFUSED (UDP and TCP)."""
    query = dns.message.make_query("example.com.", "SOA")
    deadline = time.monotonic() + 30
    while True:
        try:
            udp = dns.query.udp(query, "127.0.0.1", port=port, timeout=1)
            tcp = dns.query.tcp(query, "127.0.0.1", port=port, timeout=1)
            break
        except (OSError, dns.exception.Timeout):
            if time.monotonic() > deadline:
                pytest.fail(f"the quickstart's DNS server does not answer on port {port}:\n{log.read_text()}")
            time.sleep(0.5)
    assert udp.rcode() == tcp.rcode() == dns.rcode.REFUSED
    assert f"127.0.0.1:{port} (UDP and TCP)" in log.read_text()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_make_run_on_a_terminal_exits_0_on_ctrl_c_and_follows_ctrl_z(tmp_path):
    """GNU make dies of a SIGINT it gets (exit 130) whatever its recipe exits with; on a terminal the
    quickstart is a foreground job of its own (scripts/foreground.py), so Ctrl-C reaches it alone. The test
    is the shell: it starts `make run` as a job on a pseudo-terminal, presses Ctrl-Z, resumes it (fg) and
    presses Ctrl-C."""
    env, port, _ = quickstart_env(tmp_path)
    events_r, events_w = os.pipe()
    shell, terminal = pty.fork()  # the child: a session leader with the terminal, like a login shell
    if shell == 0:
        try:
            _job_control_shell(env, events_w)
        finally:
            os._exit(0)
    os.close(events_w)
    events = os.fdopen(events_r)
    log = tmp_path / "terminal.log"
    reader = threading.Thread(target=_copy_terminal, args=(terminal, log), daemon=True)
    reader.start()
    try:
        events.readline()  # the job started
        url = f"http://127.0.0.1:{port}/admin/login/"
        wait_until_served(url, lambda: bool(_session_processes(shell)), log, time.monotonic() + 120)
        time.sleep(1)  # the worker is up too
        os.write(terminal, b"\x1a")  # Ctrl-Z
        assert events.readline().strip() == "stopped", log.read_text()  # make's job stopped, as a shell sees
        assert events.readline().strip() == "resumed"
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200
        started = time.monotonic()
        os.write(terminal, b"\x03")  # Ctrl-C
        ready, _, _ = select.select([events], [], [], 30)
        assert ready, f"make run did not stop:\n{log.read_text()}"
        status = events.readline().strip()
        while _session_processes(shell) and time.monotonic() - started < 15:
            time.sleep(0.1)
        output = log.read_text()
        assert status == "exit 0", output
        assert not _session_processes(shell), output
        assert "Traceback" not in output and "Interrupt" not in output, output
    finally:
        for pid in _session_processes(shell):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(shell, 0)
        os.close(terminal)


def _job_control_shell(env: dict[str, str], events: int) -> None:
    """What an interactive shell does with a foreground job: its own process group holding the terminal;
    when it stops, the terminal back to the shell; ``fg`` gives it back and continues the job."""
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    job = os.fork()
    if job == 0:
        os.setpgid(0, 0)
        os.tcsetpgrp(0, os.getpid())
        for sig in (signal.SIGTTOU, signal.SIGINT, signal.SIGTSTP):
            signal.signal(sig, signal.SIG_DFL)
        os.chdir(ROOT)
        os.execvpe("make", ["make", "run"], env)
    os.write(events, b"started\n")
    while True:
        _, status = os.waitpid(job, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            break
        os.tcsetpgrp(0, os.getpgrp())
        os.write(events, b"stopped\n")
        time.sleep(1)
        os.tcsetpgrp(0, job)
        os.killpg(job, signal.SIGCONT)
        os.write(events, b"resumed\n")
    code = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
    os.write(events, f"{code}\n".encode())


def _copy_terminal(terminal: int, log: Path) -> None:
    with log.open("wb") as out:
        while True:
            try:
                data = os.read(terminal, 65536)
            except OSError:  # the session ended
                return
            if not data:
                return
            out.write(data)
            out.flush()


def _session_processes(session: int) -> list[int]:
    """The live processes of the terminal's session but its shell."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == session:
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":  # (state, ppid, pgrp, session, ...)
            found.append(int(entry.name))
    return found
