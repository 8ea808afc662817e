"""Issue 20, finding (3): a fast policy beside slow ones, without any flood.

For K = 1..8 slow policies, each kept running by a client of its own (one
request in flight per policy, the next sent as soon as the last is
answered), a separate process sends one review after another on a
keep-alive connection to another policy (pod-privileged) and records each
latency. Two kinds of slow policy: *sleeping* (examples/sleeping, one
`sleep` past the deadline) and *spinning* (tests/policies/hostile `loop`),
each with a 1 s deadline, so it runs until its deadline, again and again.
A third line runs six hostile policies at once (loop, sleep, grow, recurse,
huge output, stderr spam), as the issue's red team did. Used by
bench/abuse.py's row 20.3; the table it returns is printed under the record.
"""

import multiprocessing
import statistics
import threading
import time

from attackers import REVIEW_FILE, _sequential_client, exchange, percentile, post

K_MAX = 8
DEADLINE_S = 1
# Seconds of measurement per K, after the slow clients have started.
MEASURE_S = 3.0
SETTLE_S = 0.3
HOSTILE = ["loop", "sleep", "grow", "recurse", "huge-response", "spam-stderr"]


def policies():
    """policies.yml lines for the slow policies (appended to the row's set)."""
    lines = []
    for k in range(1, K_MAX + 1):
        lines.append(f"sleeping-{k}: {{ module: sleeping.wasm, timeoutEvalSeconds: {DEADLINE_S}, "
                     f"settings: {{ sleepMilliseconds: 600000 }} }}")
        lines.append(f"spinning-{k}: {{ module: hostile_policy.wasm, timeoutEvalSeconds: {DEADLINE_S}, "
                     f"settings: {{ attack: loop }} }}")
    for attack in HOSTILE:
        lines.append(f"hostile-{attack}: {{ module: hostile_policy.wasm, timeoutEvalSeconds: {DEADLINE_S}, "
                     f"settings: {{ attack: {attack} }} }}")
    return "\n".join(lines) + "\n"


def _measure(pipe, api, seconds):
    """In a process of its own: sequential reviews for `seconds`."""
    samples, stop = [], threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    _sequential_client(api, None, REVIEW_FILE.read_bytes(), stop, samples)
    pipe.send(samples)


def fast_client(api, seconds):
    """[(status, verdict ok, seconds)] of a sequential keep-alive client,
    measured from a separate process."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_measure, args=(child, api, seconds), daemon=True)
    process.start()
    if not parent.poll(seconds + 60):
        process.kill()
        raise RuntimeError("the measuring client did not finish")
    samples = parent.recv()
    process.join(10)
    return samples


class SlowClients:
    """One thread per slow policy, each keeping one request in flight."""

    def __init__(self, api, names):
        self.stop = threading.Event()
        self.answers = []  # (status, seconds)
        review = REVIEW_FILE.read_bytes()
        self.threads = [threading.Thread(target=self._run, args=(api, post(f"/validate/{name}", review)))
                        for name in names]
        for thread in self.threads:
            thread.start()

    def _run(self, api, request):
        for _ in range(10_000):
            if self.stop.is_set():
                return
            status, _, _, took = exchange(api, request, timeout=60)
            self.answers.append((status, took))

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(120)
        return self.answers


def describe(samples):
    """"p50 / p99 / max ms (n)" of the fast client's samples, failures named."""
    if not samples:
        return "no answer"
    times = sorted(took * 1000 for _, _, took in samples)
    failed = sum(1 for _, ok, _ in samples if not ok)
    text = (f"{statistics.median(times):.1f} / {percentile(times, 0.99):.1f} / {times[-1]:,.0f} "
            f"({len(times):,})")
    return text + (f", **{failed} not 200 + deny**" if failed else "")


def run(server):
    """Measures the sweep against `server`; returns (summary, table)."""
    rows, worst, slow_answers = {}, {}, []
    for kind in ("sleeping", "spinning"):
        for k in range(0 if kind == "sleeping" else 1, K_MAX + 1):
            clients = SlowClients(server.api, [f"{kind}-{i}" for i in range(1, k + 1)])
            time.sleep(SETTLE_S if k else 0)
            samples = fast_client(server.api, MEASURE_S)
            slow_answers += clients.finish()
            rows.setdefault(k, {})[kind] = samples
            if k:
                times = [took for _, _, took in samples]
                worst[kind] = max(worst.get(kind, (0, 0, 0)),
                                  (percentile(times, 0.99) * 1000 if times else float("inf"), k,
                                   statistics.median(times) * 1000 if times else float("inf")))
    clients = SlowClients(server.api, [f"hostile-{attack}" for attack in HOSTILE])
    time.sleep(SETTLE_S)
    hostile = fast_client(server.api, MEASURE_S)
    hostile_answers = clients.finish()

    late = [took for status, took in slow_answers if took > DEADLINE_S + 1]
    table = [f"Issue 20 (3): pod-privileged from a sequential keep-alive client, {MEASURE_S:.0f} s per line, "
             f"while K slow policies each have one request in flight (its client sends the next as soon as "
             f"one is answered; deadline {DEADLINE_S} s). Latency in ms: p50 / p99 / max (requests).\n",
             "| K | sleeping until the deadline | spinning until the deadline |",
             "|---:|---|---|"]
    for k in sorted(rows):
        cells = [describe(rows[k][kind]) if kind in rows[k] else "—" for kind in ("sleeping", "spinning")]
        table.append(f"| {k} | {cells[0]} | {cells[1]} |")
    table.append(f"\nThe six hostile policies of the issue ({', '.join(HOSTILE)}) at once, each with one "
                 f"request in flight: {describe(hostile)}; the slow policies answered {len(slow_answers):,} "
                 f"requests, {len(late)} later than their deadline + 1 s; the hostile ones "
                 f"{len(hostile_answers):,}.")
    summary = ("worst over K = 1..8: " + "; ".join(
        f"{kind} p50 {p50:.1f} ms, p99 {p99:.1f} ms (K = {k})" for kind, (p99, k, p50) in worst.items())
        + f"; six hostile policies: p50 / p99 / max {describe(hostile)} (table below)")
    return summary, "\n".join(table)
