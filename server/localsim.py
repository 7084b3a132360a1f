"""The background local SuperLink of ``flwr run . local`` and its environment.

``flwr run`` starts the local SuperLink once and reuses it: every later simulation
runs with the environment it started with, not the caller's. :func:`stale_superlink`
finds a running one whose ``HYPERFLOWER_*`` variables differ from the environment a
new run would give it, so ``hyperflower run`` can refuse instead of silently running
with another shell's settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

#: Variables that only deployment scripts or the ``flwr run`` command line read
#: (the app folder, the CPU cap passed as federation config): they do not change
#: what a running local SuperLink does.
IGNORED = (
    "HYPERFLOWER_LINK_PORT",
    "HYPERFLOWER_CERTS",
    "HYPERFLOWER_APP_DIR",
    "HYPERFLOWER_SIM_CPUS",
)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def local_superlink_pids(port: str) -> list[int]:
    """PIDs of ``flower-superlink --simulation`` processes serving HTTP on ``port``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        args = _read(proc / "cmdline").split(b"\0")
        text = [a.decode(errors="replace") for a in args]
        if (
            not any(a.endswith("flower-superlink") for a in text[:3])
            or "--simulation" not in text
        ):
            continue
        if (
            "--port" in text
            and text.index("--port") + 1 < len(text)
            and text[text.index("--port") + 1] == port
        ):
            found.append(int(proc.name))
    return found


def process_env(pid: int) -> dict[str, str]:
    """The environment a process started with (empty when unreadable)."""
    raw = _read(Path(f"/proc/{pid}/environ"))
    return dict(
        kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv
    )


def relevant(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` that change what a simulation does."""
    return {
        k: v
        for k, v in env.items()
        if k.startswith("HYPERFLOWER_") and k not in IGNORED
    }


def stale_superlink(env: Mapping[str, str]) -> str:
    """Why the running local SuperLink cannot serve a run with ``env`` ("" if none
    runs, or it was started with the same ``HYPERFLOWER_*`` variables)."""
    port = env.get("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", "39091")
    want = relevant(env)
    for pid in local_superlink_pids(port):
        have = relevant(process_env(pid))
        if not have and not _read(Path(f"/proc/{pid}/environ")):
            continue  # another user's process: not ours to judge
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        if diff:
            shown = ", ".join(
                f"{k}={have.get(k, '<unset>')!r} there, {want.get(k, '<unset>')!r} here"
                for k in diff
            )
            return (
                f"the background local SuperLink (pid {pid}, port {port}) was "
                f"started with another environment ({shown}); its simulations "
                "would not see this shell's. Stop it (kill "
                f"{pid}) and run again"
            )
    return ""
