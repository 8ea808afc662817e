"""The report of bench/compare_kubewarden.py: one table of ratios
(Portcullis / Kubewarden), the issue's goals judged from it, and the section
of BENCHMARKS.md that holds them.
"""

import datetime
import statistics
import subprocess
import sys

import load
from common import BINARY, ROOT, machine
from side_by_side import kubewarden_version

PARTS = ("http1", "h2", "rss", "startup")
# (key, column, server, policy): what the throughput rows compare.
TARGETS = [
    ("kw", "Kubewarden", "kubewarden", "privileged-pods"),
    ("same", "Portcullis, same module", "portcullis", "privileged-pods"),
    ("own", "Portcullis, own component", "portcullis", "own-privileged-pods"),
]
# The TLS rows are HTTP/2 where the server offers it by ALPN (see load.tls_shape).
PROTOCOLS = {"http1": ("HTTP/1.1 clear text (wrk)", "connections"), "h2": ("TLS 1.3 (h2load)", "in flight")}
BEGIN, END = "<!-- bench/compare_kubewarden.py: begin -->", "<!-- bench/compare_kubewarden.py: end -->"


def median(values):
    values = [v for v in values if v == v]  # NaN: a run without latencies
    return statistics.median(values) if values else float("nan")


def ratio(ours, theirs):
    return f"{ours / theirs:.2f}" if theirs and ours == ours and theirs == theirs else "—"


def table(bench, results, rss, starts):
    """The rows of the ratio table: (measurement, Kubewarden, same module, ratio, own component, ratio)."""
    rows = []
    kw = bool(bench.kw_bin)
    for protocol, (label, unit) in PROTOCOLS.items():
        for connections in bench.args.connections:
            if (protocol, "same", connections) not in results:
                continue
            for metric, attr, form in [("req/s", "rps", "{:,.0f}"), ("p99 (ms)", "p99_ms", "{:.2f}"),
                                       ("server CPU (µs/request)", "cpu_us_per_request", "{:.0f}")]:
                cell = {key: median(getattr(r, attr) for r in results[(protocol, key, connections)])
                        for key, *_ in TARGETS if (protocol, key, connections) in results}
                theirs = cell.get("kw")
                unit_here = unit[:-1] if connections == 1 and unit.endswith("s") else unit
                rows.append((f"{label}, {connections} {unit_here}: {metric}",
                             form.format(theirs) if kw else "not run", form.format(cell["same"]),
                             ratio(cell["same"], theirs), form.format(cell["own"]), ratio(cell["own"], theirs)))
    if rss:
        last = bench.args.max_workers
        for workers in range(1, last + 1):
            ours, theirs = median(rss[("portcullis", workers)]), median(rss.get(("kubewarden", workers), []))
            rows.append((f"RSS, 13 Kubewarden modules, {workers} worker{'s' * (workers > 1)} (MB)",
                         f"{theirs:.1f}" if kw else "not run", f"{ours:.1f}", ratio(ours, theirs), "—", "—"))
        for workers in sorted({1, last}):
            ours, theirs = (median(rss.get((side, workers, "anon"), [])) for side in ("portcullis", "kubewarden"))
            rows.append((f"of which anonymous (heap, stacks, wasm memory), {workers} worker{'s' * (workers > 1)} "
                         f"(MB)", f"{theirs:.1f}" if kw else "not run", f"{ours:.1f}", ratio(ours, theirs), "—", "—"))
        growth = {}
        for side in ("kubewarden", "portcullis"):
            means = [median(rss.get((side, w), [])) for w in range(1, last + 1)]
            growth[side] = max(means) / min(means) if all(m == m for m in means) else float("nan")
        rows.append((f"RSS max/min over 1..{last} workers", f"{growth['kubewarden']:.3f}" if kw else "not run",
                     f"{growth['portcullis']:.3f}", "—", "—", "—"))
    if starts:
        for state in ("cold", "warm"):
            ours, theirs = (median(starts.get((side, state), [])) * 1000 for side in ("portcullis", "kubewarden"))
            rows.append((f"time to /readiness, 13 Kubewarden modules, {state} (ms)",
                         f"{theirs:,.0f}" if kw else "not run", f"{ours:,.0f}", ratio(ours, theirs), "—", "—"))
    return rows


def verdict(value, goal, at_least):
    if value != value:
        return "not measured"
    if at_least:
        return "**met**" if value >= goal else f"**missed** by {(1 - value / goal) * 100:.0f} %"
    return "**met**" if value <= goal else f"**missed** by {(value / goal - 1) * 100:.0f} %"


def goals(bench, results, rss, starts):
    """The issue's goals, each met or missed and by how much."""
    lines = []
    if not bench.kw_bin:
        return ["Kubewarden was not measured (no `--kubewarden-bin`): no goal can be judged."]
    for protocol, (label, unit) in PROTOCOLS.items():
        kw_runs = results.get((protocol, "kw", 32))
        if not kw_runs:
            continue
        per_round = {key: [r.rps / k.rps for r, k in zip(results[(protocol, key, 32)], kw_runs)]
                     for key in ("same", "own")}
        rps = {key: median(r.rps for r in results[(protocol, key, 32)]) for key in ("kw", "same", "own")}
        p99 = {key: median(r.p99_ms for r in results[(protocol, key, 32)]) for key in ("kw", "same")}
        cpu = {key: median(r.cpu_us_per_request for r in results[(protocol, key, 32)])
               for key in ("kw", "same", "own")}
        cores = {key: rps[key] * cpu[key] / 1e6 for key in rps}
        same = rps["same"] / rps["kw"]
        # Where both servers keep the same share of the cores busy, the
        # req/s ratio is the inverse ratio of CPU per request.
        lines.append(f"- {label}, 32 {unit}, same module: **{same:.2f}×** Kubewarden's req/s (goal ≥ 3×: "
                     f"{verdict(same, 3, True)}; per round {' · '.join(f'{x:.2f}' for x in per_round['same'])}); "
                     f"p99 {p99['same']:.2f} ms vs {p99['kw']:.2f} ms (goal ≤ Kubewarden's: "
                     f"{verdict(p99['same'], p99['kw'], False)}). Server CPU {cpu['same']:.0f} vs "
                     f"{cpu['kw']:.0f} µs/request, {cores['same']:.2f} vs {cores['kw']:.2f} cores busy: 3× on as "
                     f"many cores needs ≤ {cpu['kw'] / 3:.0f} µs/request.")
        own = rps["own"] / rps["kw"]
        lines.append(f"- {label}, 32 {unit}, own component: **{own:.2f}×** Kubewarden's req/s (goal ≥ 5×: "
                     f"{verdict(own, 5, True)}; per round {' · '.join(f'{x:.2f}' for x in per_round['own'])}). "
                     f"Server CPU {cpu['own']:.0f} µs/request, {cores['own']:.2f} cores busy: 5× needs ≤ "
                     f"{cpu['kw'] / 5:.0f} µs/request.")
    if rss:
        worst = max(median(rss[("portcullis", w)]) / median(rss[("kubewarden", w)])
                    for w in range(1, bench.args.max_workers + 1))
        ends = sorted({1, bench.args.max_workers})
        anon = max(median(rss[("portcullis", w, "anon")]) / median(rss[("kubewarden", w, "anon")]) for w in ends)
        lines.append(f"- RSS, 13 Kubewarden modules: at most **{worst:.3f}** of Kubewarden's over 1–"
                     f"{bench.args.max_workers} workers (goal ≤ 0.20: {verdict(worst, 0.20, False)}); "
                     f"the anonymous part alone (without the executables' own pages): at most {anon:.3f}.")
    if starts:
        warm = median(starts[("portcullis", "warm")]) / median(starts[("kubewarden", "warm")])
        lines.append(f"- Warm start: **{warm:.3f}** of Kubewarden's time to readiness (goal ≤ 0.05: "
                     f"{verdict(warm, 0.05, False)}).")
    return lines


def notes(results):
    """What each server negotiated over TLS, in what shape, and any errors."""
    out, described = [], {}
    for key, column, *_ in TARGETS:
        shapes = {c: runs[0] for (protocol, k, c), runs in results.items() if protocol == "h2" and k == key}
        if shapes:
            text = (f"{shapes[min(shapes)].protocol}; "
                    + ", ".join(f"{c} in flight = {run.shape}" for c, run in sorted(shapes.items())))
            described.setdefault(text, []).append(column)
    for text, columns in described.items():
        out.append(f"TLS rows, {' and '.join(columns)}: {text}.")
    bad = {k: sum(r.errors for r in runs) for k, runs in results.items() if any(r.errors for r in runs)}
    if bad:
        out.append("Errors (non-2xx or socket errors, all rounds): "
                   + ", ".join(f"{p} {key} {c}: {n}" for (p, key, c), n in sorted(bad.items())) + ".")
    elif results:
        out.append("No errors in any run.")
    return out


def _where(dso):
    if dso == "[kernel.kallsyms]":
        return "kernel"
    if dso in ("[JIT]", "[unknown]"):
        return "JIT-compiled wasm"
    if dso.startswith("libc.so") or dso.startswith("libm.so"):
        return "libc, libm"
    if dso in ("portcullis", "policy-server"):
        return "the server's own code (host)"
    return "other"


def profile_table(profiles):
    """Where each server's CPU goes under wrk at 32 connections, in µs per
    request: perf's shares times the CPU per request of the profiled run."""
    columns = list(profiles)
    places = ["the server's own code (host)", "JIT-compiled wasm", "kernel", "libc, libm", "other"]
    cells = {}
    for column, (run, by_dso, _) in profiles.items():
        for share, dso in by_dso:
            key = (column, _where(dso))
            cells[key] = cells.get(key, 0.0) + share / 100 * run.cpu_us_per_request
    out = ["Where the CPU goes (`--perf`: `perf record -e cpu-clock` of each server under wrk at 32 "
           "connections, after the measured rounds; µs of server CPU per request):", "",
           f"| | {' | '.join(columns)} |", "|---|" + "---:|" * len(columns)]
    for place in places:
        out.append(f"| {place} | " + " | ".join(f"{cells.get((c, place), 0.0):.0f}" for c in columns) + " |")
    out.append("| **total** (req/s of the profiled run) | " + " | ".join(
        f"**{run.cpu_us_per_request:.0f}** ({run.rps:,.0f})" for run, *_ in profiles.values()) + " |")
    out += ["", "Largest symbols (µs per request):", ""]
    for column, (run, _, by_symbol) in profiles.items():
        top = [f"{row[-1]} ({_where(row[1])}) {row[0] / 100 * run.cpu_us_per_request:.1f}" for row in by_symbol[:8]]
        out.append(f"- {column}: " + "; ".join(top))
    return out


def git_revision():
    """The commit, whether host/ had uncommitted changes, and when the measured binary was built."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "host", "Cargo.lock"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    built = datetime.datetime.fromtimestamp(BINARY.stat().st_mtime, datetime.timezone.utc)
    return (head.stdout.strip() + (" (host/ modified in the working tree)" if dirty else "")
            + f", release binary built {built:%Y-%m-%d %H:%M} UTC")


def render(bench, rows, goal_lines, note_lines, loads, profiles):
    args = bench.args
    command = "python3 bench/compare_kubewarden.py " + " ".join(sys.argv[1:])
    kw = kubewarden_version(bench.kw_bin) if bench.kw_bin else "not measured (no --kubewarden-bin): Portcullis alone"
    out = [
        f"Recorded {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with `{command.strip()}`.",
        f"Machine: {machine()}, shared: load average {loads[0]:.1f} before, {loads[-1]:.1f} after, "
        f"{min(loads):.1f}–{max(loads):.1f} during. Kubewarden: {kw}. Portcullis: {git_revision()}"
        f"{', serve ' + ' '.join(args.server_arg) if args.server_arg else ', serve defaults'}. "
        f"Both `--workers {args.workers}` for throughput; {args.rounds} rounds, {args.seconds} s a run, medians. "
        f"Load generators: {load.tool_versions()}, on the same machine.",
        "",
        "| measurement | Kubewarden | Portcullis, same module | ratio | Portcullis, own component | ratio |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {' | '.join(row)} |" for row in rows),
        "",
        "Ratios are Portcullis / Kubewarden (req/s: higher is better; p99, CPU, RSS, time: lower is better).",
        *note_lines,
        "",
        "Goals (issue 15, part 3):",
        "",
        *goal_lines,
    ]
    if profiles:
        out += ["", *profile_table(profiles)]
    return "\n".join(out)


SECTION_INTRO = """## 5. Side by side with Kubewarden

```sh
python3 bench/compare_kubewarden.py --kubewarden-bin PATH   # a policy-server v1.31.0 binary
```

Kubewarden's policy-server and `portcullis serve` on this machine in the same
minutes, in one network namespace with only loopback up, taking turns cell by
cell in every round (see the script's doc comment for the method). The same
Kubewarden-protocol pod-privileged module in both servers, and Portcullis's own
pod-privileged component; memory and start-up with the same 13-policy file of
Kubewarden-protocol modules on both sides.
"""


def write_benchmarks(text):
    path = ROOT / "BENCHMARKS.md"
    current = path.read_text()
    block = f"{BEGIN}\n{SECTION_INTRO}\n{text}\n{END}"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        current = head + block + rest.split(END, 1)[1]
    elif "\n## Hostile policies and soak" in current:
        head, rest = current.split("\n## Hostile policies and soak", 1)
        current = f"{head}\n{block}\n\n## Hostile policies and soak{rest}"
    else:
        current = current.rstrip("\n") + f"\n\n{block}\n"
    path.write_text(current)
    return path
