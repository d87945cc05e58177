"""`agentpool validate` over generated bad configs: no traceback, no hang, bounded time and memory.

Generates N configs by mutating a valid one (tests/unit/config_mutations.py: hostile values,
YAML tags, alias bombs, deep nesting, control characters, …) plus files that are not regular
(a FIFO as config and as token_file, /dev/zero, a directory, a 2 MB file, non-UTF-8 bytes),
and runs `agentpool validate` on each in its own process: a worker (a fresh interpreter with
agentpool imported, as the command has) forks one child per config, so a run costs no
interpreter start. A child is killed after 10 s (a hang). Per run: exit code, wall time, peak
RSS (VmHWM of the child), whether the output holds a traceback, and whether every error line
is ``FILE:LINE: key.path: message`` with a line inside the file.

Run: python3 bench/config_fuzz.py [--count 1000] [--seed 11]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.unit.config_mutations import TOKEN, VALID, mutate  # noqa: E402

HANG_AFTER = 10.0
LINE = re.compile(r"(?P<line>\d+): (?P<key>.+?): (?P<message>.+)")


def worker(jobs: list[str]) -> None:
    """Validate each config path in a forked child; one JSON line per result on stdout."""
    from agentpool.cli import main

    for path in jobs:
        out_path, err_path = path + ".out", path + ".err"
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            with Path(out_path).open("w") as out, Path(err_path).open("w") as err:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout, sys.stderr = out, err
                try:
                    code = main(["validate", "--config", path])
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
                except BaseException:
                    import traceback

                    traceback.print_exc()
                    code = 99
                sys.stdout.flush()
                sys.stderr.flush()
                status_text = Path("/proc/self/status").read_text()
                peak = next(
                    int(line.split()[1]) for line in status_text.splitlines() if line.startswith("VmHWM:")
                )
                Path(path + ".peak").write_text(str(peak))
            os._exit(code)
        hung = False
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - start > HANG_AFTER:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                hung, status = True, -1
                break
            time.sleep(0.002)
        elapsed = time.monotonic() - start
        peak_file = Path(path + ".peak")
        result = {
            "path": path,
            "code": None if hung else os.waitstatus_to_exitcode(status),
            "hung": hung,
            "seconds": elapsed,
            "peak_kb": int(peak_file.read_text()) if peak_file.exists() else None,
        }
        print(json.dumps(result), flush=True)


def special_files(root: Path) -> list[Path]:
    """Configs that are not regular files, or whose token_file is not one."""
    made: list[Path] = []
    fifo = root / "fifo.yaml"
    os.mkfifo(fifo)
    made.append(fifo)
    token_fifo = root / "token.fifo"
    os.mkfifo(token_fifo)
    for name, token_file in (("fifo-token", token_fifo), ("zero-token", "/dev/zero"), ("dir-token", "/etc")):
        path = root / f"{name}.yaml"
        path.write_text(VALID.replace(f"token: {TOKEN}", f"token_file: {token_file}"))
        made.append(path)
    big = root / "big.yaml"
    big.write_text(VALID + "# " + "x" * (2 * 1024 * 1024) + "\n")
    made.append(big)
    latin = root / "latin1.yaml"
    latin.write_bytes(VALID.encode() + b"bad: \xff\xfe\n")
    made.append(latin)
    made.append(Path("/dev/zero"))
    made.append(root)
    return made


def located(path: str, text: str, err: str) -> bool:
    last = text.count("\n") + 1
    for line in err.splitlines():
        if line.startswith("ts="):
            continue
        if not line.startswith(f"{path}:"):
            return False
        match = LINE.fullmatch(line[len(path) + 1 :])
        if not match or not 1 <= int(match["line"]) <= last:
            return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--count", type=int, default=1000, help="generated configs (special files come on top)"
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker)
        return 0
    rnd = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        texts: dict[str, str] = {}
        for i in range(args.count):
            path = root / f"c{i:05d}.yaml"
            text = mutate(rnd)
            path.write_bytes(text.encode("utf-8", "surrogatepass"))
            texts[str(path)] = text
        (root / "special").mkdir()
        specials = special_files(root / "special")
        jobs = list(texts) + [_writable(str(p), root) for p in specials]
        results = []
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", *jobs],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        for line in proc.stdout.splitlines():
            results.append(json.loads(line))
        codes: dict[str, int] = {}
        tracebacks = unlocated = leaked = 0
        for r in results:
            codes[str(r["code"])] = codes.get(str(r["code"]), 0) + 1
            out = Path(r["path"] + ".out").read_text(errors="replace")
            err = Path(r["path"] + ".err").read_text(errors="replace")
            if "Traceback" in out + err:
                tracebacks += 1
            if TOKEN in out + err:
                leaked += 1
            if r["code"] == 2 and not located(r["path"], _text(r["path"], texts), err):
                unlocated += 1
        seconds = sorted(r["seconds"] for r in results)
        peaks = sorted((r["peak_kb"] or 0) / 1024 for r in results)
        print(
            f"configs: {len(results)} ({args.count} generated, seed {args.seed}, {len(specials)} special files)"
        )
        print(f"exit codes: {dict(sorted(codes.items()))}")
        print(
            f"tracebacks: {tracebacks}; hangs (killed after {HANG_AFTER:.0f} s): {sum(r['hung'] for r in results)}"
        )
        print(f"error output not FILE:LINE: key: message: {unlocated}; inline token printed: {leaked}")
        print(
            f"wall per run: median {seconds[len(seconds) // 2] * 1000:.0f} ms, max {seconds[-1] * 1000:.0f} ms; "
            f"over 2 s: {sum(s > 2 for s in seconds)}"
        )
        print(
            f"peak RSS per run: median {peaks[len(peaks) // 2]:.0f} MB, max {peaks[-1]:.0f} MB; "
            f"over 200 MB: {sum(p > 200 for p in peaks)}"
        )
    return 0


def _text(path: str, texts: dict[str, str]) -> str:
    if path in texts:
        return texts[path]
    p = Path(path)
    return p.read_text(errors="replace") if p.is_file() and not p.is_symlink() else ""


def _writable(path: str, root: Path) -> str:
    """A config path whose results (``.out``, ``.err``, ``.peak``) can be written beside it.

    Special files outside the temp directory (/dev/zero, a directory) and FIFOs are reached
    through a symlink in it: the config is opened through the link, as a user would.
    """
    p = Path(path)
    if p.is_file() and not p.is_symlink() and path.startswith(str(root)):
        return path
    link = root / f"link-{abs(hash(path))}.yaml"
    link.symlink_to(path)
    return str(link)


if __name__ == "__main__":
    raise SystemExit(main())
