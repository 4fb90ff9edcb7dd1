"""`make quickstart`: start a loopback Ray head if none is running, submit a spec with
`ray job submit`, wait for it, then print where the results are and a short summary.

    python -m launch.quickstart [SPEC] [--set KEY=VALUE ...]

The head is left running (stop it with `.venv/bin/ray stop`) so `ray job logs` and the
dashboard at http://127.0.0.1:8265 stay available.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from distrib.rendezvous import LOOPBACK_INTERFACES
from launch.runs.directory import read_run_spec
from launch.runs.files import EVENTS, REPORT, SUMMARY, read_json, read_jsonl, run_dir_in
from launch.runs.members import best_member
from launch.spec.arguments import add_spec_args
from launch.spec.problems import SpecError, report_spec_error
from launch.spec.schema import load_spec
from pbt.ray.private_api import CLUSTERS_ENV, PREEMPTION_WATCHER_ENV

DASHBOARD = ("127.0.0.1", 8265)


def dashboard_is_up() -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(DASHBOARD) == 0


def ensure_auth_token(env: dict) -> None:
    """Ray 2.60 clusters authenticate with a token in ~/.ray/auth_token; make one if this
    machine has none yet (a client that asks for token mode fails without it)."""
    subprocess.run([str(Path(sys.executable).with_name("ray")), "get-auth-token", "--generate"],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def loopback_head_env(env: dict) -> dict:
    """The environment of a `ray start --head --node-ip-address=127.0.0.1` whose processes all
    listen on 127.0.0.1 only (docs/scaling.md): Ray's single-machine mode (without it Ray
    swaps 127.0.0.1 for the machine's address and binds its servers to all interfaces), and
    gloo/NCCL on `lo` for the jobs' workers, which inherit the head's environment."""
    return {**env, CLUSTERS_ENV: "0", **{name: env.get(name, lo) for name, lo in LOOPBACK_INTERFACES.items()}}


def start_head(env: dict) -> None:
    print("starting a local Ray head on 127.0.0.1 (dashboard http://127.0.0.1:8265)", flush=True)
    subprocess.run([str(Path(sys.executable).with_name("ray")), "start", "--head",
                    "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", "--disable-usage-stats"],
                   env=loopback_head_env(env), check=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not dashboard_is_up():
        if time.monotonic() > deadline:
            raise SystemExit("error: the Ray dashboard did not come up on 127.0.0.1:8265 within 120 s")
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.quickstart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_spec_args(parser, default_spec="configs/quickstart.yaml")
    args = parser.parse_args(argv)
    try:  # a bad spec should fail in a second, not after a cluster start and a submit
        load_spec(args.spec, args.overrides)
    except SpecError as err:
        return report_spec_error(err, args.spec)
    env = dict(os.environ)
    # The job's `python` and Ray's workers must be this virtualenv's interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray 2.60 clusters require a token (~/.ray/auth_token, made by `ray start`); the
    # job client must be told to send it.
    env.setdefault("RAY_AUTH_MODE", "token")
    ensure_auth_token(env)
    if not dashboard_is_up():
        start_head(env)
    overrides = [arg for item in args.overrides for arg in ("--set", item)]
    # A head on loopback is one node with nothing to preempt: no preemption watcher (and no
    # error-looking line from it, see pbt/ray/private_api.py).
    runtime_env = {"env_vars": {PREEMPTION_WATCHER_ENV: "0"}}
    command = [str(Path(sys.executable).with_name("ray")), "job", "submit",
               "--address", f"http://{DASHBOARD[0]}:{DASHBOARD[1]}", "--working-dir", ".",
               "--runtime-env-json", json.dumps(runtime_env),
               "--", "python", "-m", "launch", "run", args.spec, *overrides]
    print("$ ray " + " ".join(command[1:]), flush=True)
    run_dir = None
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as job:
        for line in job.stdout:
            sys.stdout.write(line)
            run_dir = run_dir_in(line) or run_dir
    return report(run_dir, job.returncode)


def report(run_dir: Path | None, returncode: int) -> int:
    summary = read_json(run_dir / SUMMARY) if run_dir else {}
    if not summary:
        print(f"\nthe job ended (exit status {returncode}) without writing a summary", file=sys.stderr)
        return returncode or 1
    print("\n" + "=" * 72)
    print("\n".join(closing_lines(run_dir, summary)))
    print("Ray head still running: `.venv/bin/ray job list --address http://127.0.0.1:8265`; "
          "stop it with `.venv/bin/ray stop`")
    return 0 if summary["status"] == "completed" else 1


def closing_lines(run_dir: Path, summary: dict) -> list[str]:
    """What the user just watched: the run, its best member and what it sent, where to look."""
    members = summary.get("members") or {}
    exploits = len(read_jsonl(run_dir / EVENTS))
    lines = [f"quickstart {summary['status']}: {len(members)} member(s), {summary['steps']} steps, "
             f"{summary['wall_time_s']:.0f} s wall, {summary['tokens_per_s'] or 0:,.0f} tokens/s in training, "
             f"{exploits} PBT exploit(s)"]
    try:
        best = best_member(run_dir)
    except ValueError as err:  # no validation loss yet (the job failed early)
        return [*lines, str(err), f"results: {run_dir}"]
    info = members[str(best)]
    mutated = (read_run_spec(run_dir)["population"].get("pbt") or {}).get("hyperparam_mutations") or {}
    hyperparams = ", ".join(f"{name} {value:.3g}" for name, value in sorted((info.get("hyperparams") or {}).items())
                            if name in mutated)
    lines.append(f"best member: {best}, validation loss {info['final_val_loss']:.3f} nats/token (unigram baseline "
                 f"{summary['unigram_baseline']:.3f})" + (f"; PBT left it at {hyperparams}" if hyperparams else ""))
    sent, dense = info.get("bytes_sent_total"), info.get("dense_bytes_total")
    if sent and dense:
        lines.append(f"it sent {sent / 2**20:,.1f} MiB of gradients per worker where dense exchange sends "
                     f"{dense / 2**20:,.1f} MiB ({sent / dense:.1%})")
    lines.append(f"report: {run_dir / REPORT} (the population's losses, hyperparameters and exploits, plotted)")
    lines.append(f"results: {run_dir}  (metrics.jsonl, summary.json, pbt_events.jsonl, checkpoints/, tensorboard/)")
    return lines

if __name__ == "__main__":
    sys.exit(main())
