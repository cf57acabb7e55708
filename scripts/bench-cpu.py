#!/usr/bin/env python3
"""CPU time per process kind, read from /proc, for make bench (scripts/bench.sh).

    bench-cpu.py snap FILE KIND=PID[,PID...] ...   writes the CPU seconds each kind has used so far
    bench-cpu.py diff BEFORE AFTER DELIVERIES      prints "kind=µs_per_delivery ..." on one line

A kind's time is utime + stime of its processes. For a kind given with a trailing "+" (the
postmaster: "pg=123+") it also counts every live descendant and the children already reaped
(cutime + cstime), so PostgreSQL's backends, autovacuum workers and checkpointer are in it.
The kind "kernel" is added by itself: the kernel threads that write to disk (kworker, jbd2,
flush-*), machine-wide, so it also holds whatever else the machine wrote meanwhile.

diff also prints the machine's idle and steal shares over the same window, in % of all its
CPUs' time (the first line of /proc/stat): steal is time the hypervisor gave to other guests
while this one had work to run. On a shared host it is what makes runs of one build differ
(measured on 2026-12-03: 2.5, 4.5 and 9.5 % of steal over three whole bench runs of scenario
a, at 5,385, 4,984 and 4,022 deliveries/s), so a comparison of two runs should read it."""

import os
import sys

TICK = os.sysconf("SC_CLK_TCK")
KERNEL_PREFIXES = ("kworker", "jbd2", "flush-")


def stat(pid):
    """(comm, ppid, utime + stime, cutime + cstime) in ticks, or None when pid is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17
    return comm, int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def machine():
    """(idle + iowait, steal, all) ticks of every CPU since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: inside user and nice]
    fields += [0] * (8 - len(fields))
    return fields[3] + fields[4], fields[7], sum(fields[:8])


def all_stats():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            s = stat(int(name))
            if s:
                out[int(name)] = s
    return out


def descendants(root, stats):
    children = {}
    for pid, (_, ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        for c in children.get(pid, []):
            found.append(c)
            todo.append(c)
    return found


def snap(path, specs):
    stats = all_stats()
    totals = {}
    for spec in specs:
        kind, _, pids = spec.partition("=")
        ticks = 0
        for p in filter(None, pids.split(",")):
            tree = p.endswith("+")
            pid = int(p.rstrip("+"))
            if pid not in stats:
                continue
            ticks += stats[pid][2]
            if tree:
                ticks += stats[pid][3]
                ticks += sum(stats[d][2] for d in descendants(pid, stats) if d in stats)
        totals[kind] = totals.get(kind, 0) + ticks
    totals["kernel"] = sum(s[2] for s in stats.values() if s[0].startswith(KERNEL_PREFIXES))
    totals["machine_idle"], totals["machine_steal"], totals["machine_all"] = machine()
    with open(path, "w") as f:
        for kind, ticks in totals.items():
            f.write(f"{kind} {ticks}\n")


def read(path):
    with open(path) as f:
        return {k: int(v) for k, v in (line.split() for line in f if line.strip())}


def diff(before, after, deliveries):
    a, b = read(before), read(after)
    n = max(int(deliveries), 1)
    parts, total = [], 0.0
    for kind in b:
        if kind.startswith("machine_"):
            continue
        us = (b[kind] - a.get(kind, 0)) / TICK * 1e6 / n
        if kind != "receiver":
            total += us
        parts.append(f"{kind}={us:.0f}")
    parts.append(f"total={total:.0f}")
    ticks = b.get("machine_all", 0) - a.get("machine_all", 0)
    if ticks > 0:
        for kind in ("idle", "steal"):
            share = (b[f"machine_{kind}"] - a[f"machine_{kind}"]) * 100.0 / ticks
            parts.append(f"{kind}={share:.1f}")
    print(" ".join(parts))


def main(argv):
    if len(argv) >= 3 and argv[1] == "snap":
        snap(argv[2], argv[3:])
    elif len(argv) == 5 and argv[1] == "diff":
        diff(argv[2], argv[3], argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
