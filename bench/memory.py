#!/usr/bin/env python3
"""Memory vs workers, the method of Kubewarden's PR #596.

For workers = 1..8: start `portcullis serve` with the 13-policy set
(examples/policies.yml), warm up every policy on every worker, read the
process's VmRSS and VmHWM; 10 samples (fresh processes) per worker count.
Prints a Markdown table and draws docs/memory-vs-workers.png. Then measures
the RSS one more policy adds: another instance of a loaded component, and a new
unique component.

    python3 bench/memory.py [--samples 10] [--max-workers 8] [--server-arg=--keep-resident-bytes=1048576]
    python3 bench/memory.py --set kubewarden   # the same shape, of Kubewarden-protocol modules

`--set kubewarden` serves bench/kubewarden-policies.yml instead: 13 policies
over 5 unique Kubewarden modules (waPC and WASI mode); the chart is then
docs/memory-vs-workers-kubewarden.png and the extra-policy rows are skipped.
"""

import argparse
import os
import shutil
import sys

from common import (KUBEWARDEN_POLICIES, KUBEWARDEN_REQUEST_FOR, POLICIES, REQUEST_FOR, ROOT, Server, build,
                    machine, mean_std, scratch_dir, warm_up, write_policies)

# Kubewarden policy-server, PR #596 (same 13-policy shape): mean RSS in MB.
KUBEWARDEN_BEFORE = [621.00, 807.35, 983.33, 1172.28, 1358.67, 1535.16, 1694.57, 1897.01]
KUBEWARDEN_AFTER = [530.38, 586.15, 649.17, 752.59, 831.02, 914.64, 980.81, 1054.93]


# Extra `portcullis serve` arguments (--server-arg), e.g. --keep-resident-bytes.
SERVER_ARGS = []


def sample(workers, cache_dir, policies=None, requests=REQUEST_FOR):
    server = Server(workers, policies=policies, cache_dir=cache_dir, extra_args=SERVER_ARGS)
    try:
        warm_up(server, workers, requests)
        return server.memory_kib()
    finally:
        server.stop()


def chart(rows, path, title):
    try:
        import matplotlib
    except ImportError:
        import subprocess
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"], check=True)
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    ax.plot(workers, KUBEWARDEN_BEFORE[:len(workers)], "o--", color="#c44", label="Kubewarden before PR #596")
    ax.plot(workers, KUBEWARDEN_AFTER[:len(workers)], "s--", color="#e90", label="Kubewarden after PR #596")
    ax.errorbar(workers, [r[1] for r in rows], yerr=[r[2] for r in rows], fmt="o-", color="#27a",
                capsize=3, label="Portcullis (RSS, mean ± sd)")
    ax.plot(workers, [r[3] for r in rows], "^:", color="#27a", alpha=0.6, label="Portcullis (peak VmHWM)")
    ax.set_xlabel("workers")
    ax.set_ylabel("memory (MB)")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def extra_policy_cost(cache_dir, samples):
    """RSS added by one more policy: same component, then a new unique one."""
    base_text = POLICIES.read_text()
    variants = {
        "13 policies (baseline)": (base_text, REQUEST_FOR),
        "+1 policy, already-loaded component": (
            base_text + "\nprivileged-pods-extra:\n  module: pod_privileged.wasm\n",
            {**REQUEST_FOR, "privileged-pods-extra": "privileged-pod"}),
        "+1 policy, new unique component": (
            base_text + "\nannotations-extra:\n  module: required_annotations.wasm\n  allowedToMutate: true\n"
            "  settings: {requiredAnnotations: {team: platform}}\n",
            {**REQUEST_FOR, "annotations-extra": "privileged-pod"}),
    }
    results = {}
    for name, (text, requests) in variants.items():
        path = write_policies(text)
        rss = [sample(2, cache_dir, path, requests)[0] / 1024 for _ in range(samples)]
        results[name] = mean_std(rss)
        os.unlink(path)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--max-workers", type=int, default=8)
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra `portcullis serve` argument (repeatable); the chart is then not redrawn")
    parser.add_argument("--set", choices=["examples", "kubewarden"], default="examples",
                        help="the 13-policy set: the example components, or Kubewarden-protocol modules")
    args = parser.parse_args()
    SERVER_ARGS.extend(args.server_arg)
    if not args.no_build:
        build()
    kubewarden = args.set == "kubewarden"
    policies = write_policies(KUBEWARDEN_POLICIES.read_text()) if kubewarden else None
    requests = KUBEWARDEN_REQUEST_FOR if kubewarden else REQUEST_FOR
    what = "13 Kubewarden-protocol policies / 5 unique modules" if kubewarden else \
        "13 policies / 5 unique components"
    cache_dir = scratch_dir()
    sample(1, cache_dir, policies, requests)  # fill the compiled cache: samples measure serving, not compiling

    rows = []
    for workers in range(1, args.max_workers + 1):
        rss, hwm = zip(*(sample(workers, cache_dir, policies, requests) for _ in range(args.samples)))
        rss_mean, rss_sd = mean_std([r / 1024 for r in rss])
        hwm_mean, _ = mean_std([h / 1024 for h in hwm])
        rows.append((workers, rss_mean, rss_sd, hwm_mean))
        print(f"  workers={workers}: RSS {rss_mean:.1f} MB ± {rss_sd:.1f}", file=sys.stderr)

    flags = f"; serve {' '.join(SERVER_ARGS)}" if SERVER_ARGS else ""
    print(f"Machine: {machine()}; {args.samples} samples per row; {what}{flags}.\n")
    print("| workers | Portcullis RSS (MB) | StdDev | Portcullis peak VmHWM (MB) "
          "| Kubewarden before (MB) | Kubewarden after (MB) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for (workers, mean, sd, hwm) in rows:
        i = workers - 1
        before = f"{KUBEWARDEN_BEFORE[i]:.2f}" if i < len(KUBEWARDEN_BEFORE) else "-"
        after = f"{KUBEWARDEN_AFTER[i]:.2f}" if i < len(KUBEWARDEN_AFTER) else "-"
        print(f"| {workers} | {mean:.2f} | {sd:.2f} | {hwm:.2f} | {before} | {after} |")
    means = [r[1] for r in rows]
    print(f"\nmax/min of mean RSS over workers 1..{args.max_workers}: {max(means) / min(means):.3f}")

    if not SERVER_ARGS:
        name = "memory-vs-workers-kubewarden.png" if kubewarden else "memory-vs-workers.png"
        png = ROOT / "docs" / name
        chart(rows, png, f"{what}: memory vs workers")
        print(f"chart: {png.relative_to(ROOT)}")
    if kubewarden:
        shutil.rmtree(cache_dir, ignore_errors=True)
        os.unlink(policies)
        return

    print("\n| configuration (2 workers) | RSS (MB) | StdDev | added (MB) |")
    print("|---|---:|---:|---:|")
    costs = extra_policy_cost(cache_dir, max(3, args.samples // 2))
    base = costs["13 policies (baseline)"][0]
    for name, (mean, sd) in costs.items():
        print(f"| {name} | {mean:.2f} | {sd:.2f} | {mean - base:+.2f} |")
    shutil.rmtree(cache_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
