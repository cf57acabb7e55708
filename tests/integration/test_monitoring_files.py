"""The monitoring files (docs/monitoring/, decision 41) against the real promtool and the metrics
contract (docs/metrics.md): the alert rules load and pass their unit tests, every PromQL
expression of the Grafana dashboard parses, and every metric, label and fixed label value the
dashboard and the alerts use is one the table lists. No server is started: a few seconds."""

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from harness import REPO

MON = REPO / "docs" / "monitoring"
DASHBOARD = MON / "grafana-dashboard.json"
ALERTS = MON / "alerts.yml"
ALERT_TESTS = MON / "alerts.test.yml"
PROM_CONFIG = MON / "prometheus.yml"
METRICS_DOC = REPO / "docs" / "metrics.md"
README = REPO / "README.md"
RUN_SH = REPO / "scripts" / "run.sh"

# Labels Prometheus adds to every series (docs/metrics.md, "The cardinality rule").
TARGET_LABELS = {"job", "instance"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Grafana's own variables, replaced by a duration before promtool parses an expression.
GRAFANA_VARS = ("$__rate_interval", "$__interval", "$__range")
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def promtool():
    path = shutil.which("promtool")
    if not path:
        msg = "promtool (Debian package prometheus) is not installed: bash scripts/deps.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def run_promtool(*args):
    proc = subprocess.run([promtool(), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{out[-6000:]}"
    return out


# --- docs/metrics.md ------------------------------------------------------------------------


def metrics_table():
    """{name: (type, {label: set of values, or None for a free label})} from the table."""
    metrics = {}
    for line in METRICS_DOC.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        name = re.fullmatch(r"`([a-z_:][a-z0-9_:]*)`", cols[0])
        if not name or cols[1] not in ("counter", "gauge", "histogram"):
            continue
        labels = {}
        for label, values in re.findall(r"`([a-z_]+)`(?:\s*\(([^)]*)\))?", cols[2]):
            if not values:
                labels[label] = None
                continue
            # "a, b, c", or "none for accepted; for rejected: x, y": the first word of each item.
            allowed = set()
            for part in values.split(";"):
                part = part.split(":")[-1]
                allowed |= {item.split()[0] for item in part.split(",") if item.strip()}
            labels[label] = allowed
        metrics[name.group(1)] = (cols[1], labels)
    return metrics


def test_metrics_table_is_parsed():
    table = metrics_table()
    assert len(table) >= 20, sorted(table)
    assert table["wh_attempt_duration_seconds"][0] == "histogram"
    assert table["wh_attempts_total"][1]["outcome"] == {"success", "failure"}
    assert table["wh_attempts_total"][1]["status_class"] == {"2xx", "3xx", "4xx", "5xx", "none"}
    assert table["wh_triggers_total"][1]["reason"] == {
        "none", "bad_request", "unauthorized", "too_large", "conflict", "unavailable"}
    assert table["wh_queue_lag_seconds"][1] == {"partition": None}
    assert table["wh_build_info"][1]["version"] is None


# --- PromQL: the selectors and grouping labels of an expression ------------------------------

TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<dur>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*(?![A-Za-z0-9_]))
  | (?P<num>(?:0x[0-9a-fA-F]+|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+))
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>==|!=|=~|!~|>=|<=|[-+*/%^<>=(),{}@])
""", re.X)


def tokens(expr):
    out, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        assert m, f"cannot read {expr[pos:pos + 30]!r} in {expr!r}"
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


def unquote(s):
    body = s[1:-1]
    return body if s[0] == "`" else re.sub(r"\\(.)", r"\1", body)


def selectors(expr):
    """([(metric, [(label, op, value)])], {grouping labels}) of a PromQL expression. The syntax
    itself is promtool's to check; this reads only what the contract check needs."""
    toks = tokens(expr)
    sels, grouping, i = [], set(), 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "ident" and text in GROUPING:
            i += 1
            if nxt == "(":
                i += 1
                while toks[i][1] != ")":
                    if toks[i][0] == "ident":
                        grouping.add(toks[i][1])
                    i += 1
                i += 1
            continue
        if kind == "ident" and (text.lower() in KEYWORDS or nxt in ("(", "by", "without")):
            i += 1  # an operator keyword, or a function / aggregation (its name is promtool's)
            continue
        if text == "{":
            pytest.fail(f"a selector without a metric name in {expr!r}")
        if kind == "ident":
            matchers = []
            i += 1
            if nxt == "{":
                i += 1
                while toks[i][1] != "}":
                    if toks[i][1] == ",":
                        i += 1
                        continue
                    label, op, value = toks[i], toks[i + 1], toks[i + 2]
                    assert label[0] == "ident" and op[0] == "op" and value[0] == "str", \
                        f"cannot read the matchers of {text} in {expr!r}"
                    matchers.append((label[1], op[1], unquote(value[1])))
                    i += 3
                i += 1
            sels.append((text, matchers))
            continue
        i += 1
    return sels, grouping


def test_selectors_reader():
    sels, grouping = selectors(
        'histogram_quantile(0.99, sum by (job, le) (rate(wh_x_bucket{a="1", b=~"x|y"}[5m])))'
        ' / on (job) group_left sum(up offset 10m) unless wh_y{c!="z\\"q"} > bool 2')
    assert sels == [("wh_x_bucket", [("a", "=", "1"), ("b", "=~", "x|y")]), ("up", []),
                    ("wh_y", [("c", "!=", 'z"q')])]
    assert grouping == {"job", "le"}


def contract_problems(expr, table):
    """What in EXPR the metrics table does not list: metric names, labels, fixed values."""
    problems = []
    sels, grouping = selectors(expr)
    assert sels, f"no metric in {expr!r}"
    known = set(TARGET_LABELS)
    for name, matchers in sels:
        labels = {}
        base = next((name[:-len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if name == "up":
            labels = {}
        elif name in table and table[name][0] != "histogram":
            labels = dict(table[name][1])
        elif base in table and table[base][0] == "histogram":
            labels = dict(table[base][1])
            if name.endswith("_bucket"):
                labels["le"] = None
        else:
            problems.append(f"{name}: not a series of docs/metrics.md's table")
            continue
        known |= set(labels)
        for label, op, value in matchers:
            if label in TARGET_LABELS:
                continue
            if label not in labels:
                problems.append(f"{name}{{{label}{op}...}}: {name} has no label {label}")
                continue
            allowed = labels[label]
            if allowed is None:
                continue
            values = value.split("|") if op in ("=~", "!~") else [value]
            bad = [v for v in values if v not in allowed]
            if bad:
                problems.append(f"{name}{{{label}{op}{value!r}}}: {bad} not among {sorted(allowed)}")
    for label in sorted(grouping - known):
        problems.append(f"grouping by {label}: no metric of the expression has it")
    return problems


def test_contract_check_refuses_what_the_table_lacks():
    table = metrics_table()
    assert contract_problems('sum by (outcome) (rate(wh_attempts_total{outcome="success"}[5m]))',
                             table) == []
    assert contract_problems('wh_delivery_lag_seconds_bucket{le="1"} + up{job="x"}', table) == []
    for bad in ('rate(wh_attempts_total{outcome="succeeded"}[5m])',  # not a listed value
                'rate(wh_attempts_total{subscription="x"}[5m])',     # not a listed label
                'wh_attempt_duration_seconds',                       # a histogram, no suffix
                'wh_queue_depth',                                    # not in the table
                'sum by (url) (wh_queue_retry)',                     # grouping by an unknown label
                'wh_subscriptions{state=~"active|gone"}'):
        assert contract_problems(bad, table), bad


# --- the dashboard --------------------------------------------------------------------------


def dashboard():
    return json.loads(DASHBOARD.read_text())


def all_panels(dash):
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def dashboard_exprs(dash):
    """[(panel title, refId, expr)] of every target of every panel."""
    out = []
    for panel in all_panels(dash):
        for target in panel.get("targets", []):
            out.append((panel["title"], target.get("refId"), target.get("expr", "")))
    return out


def datasource_refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            else:
                yield from datasource_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from datasource_refs(value)


def test_dashboard_shape():
    dash = dashboard()
    assert dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables.get("DS_PROMETHEUS")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", variables
    # No datasource uid written in: every reference is the variable (or Grafana's built-in
    # annotations).
    refs = list(datasource_refs(dash))
    assert refs
    for ref in refs:
        assert isinstance(ref, dict), f"a datasource by name: {ref!r}"
        assert ref == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"} or \
            ref == {"type": "grafana", "uid": "-- Grafana --"}, ref
    ids = [p["id"] for p in all_panels(dash)]
    assert len(ids) == len(set(ids)), ids
    for panel in all_panels(dash):
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        if panel["type"] in ("row", "text"):
            continue
        targets = panel.get("targets", [])
        assert targets, f"panel {panel['title']!r} has no query"
        refids = [t["refId"] for t in targets]
        assert len(refids) == len(set(refids)), panel["title"]
        for t in targets:
            assert t["expr"].strip() and t["datasource"]["uid"] == "${DS_PROMETHEUS}", t


def test_dashboard_has_the_panels_of_issue_12():
    titles = {p["title"] for p in all_panels(dashboard())}
    for want in ("Deliveries/s", "Success rate", "Attempt latency p50 / p95 / p99",
                 "End-to-end lag p50 / p99", "Queue depth per partition", "Retries, holds and circuits",
                 "Dead letters", "Queue lag per partition", "Triggers by result",
                 "PostgreSQL commit latency", "PostgreSQL commit batch size", "Dependencies up",
                 "Subscriptions by state", "Reconciler: last success",
                 "Reconciler passes and requeues"):
        assert want in titles, (want, sorted(titles))


def test_dashboard_promql_parses(tmp_path):
    """Every target's expression becomes a recording rule; promtool check rules parses and
    type-checks each (a typo, a rate() of a gauge expression without a range, an unknown
    function: all fail)."""
    rules = []
    for n, (title, ref, expr) in enumerate(dashboard_exprs(dashboard())):
        for var in GRAFANA_VARS:
            expr = expr.replace(var, "5m")
        assert "$" not in expr, f"{title}/{ref}: a template variable promtool cannot parse: {expr}"
        rules.append({"record": f"dashboard:panel_{n}", "expr": expr})
    assert len(rules) >= 30
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run_promtool("check", "rules", str(path))
    assert f"SUCCESS: {len(rules)} rules found" in out, out
    # And the check does fail on a bad expression.
    path.write_text(json.dumps({"groups": [{"name": "bad", "rules": [
        {"record": "bad:rule", "expr": "sum(rate(wh_attempts_total[5m])"}]}]}))
    proc = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0, proc.stdout


def test_dashboard_uses_only_listed_metrics_and_labels():
    table = metrics_table()
    problems, used = [], set()
    for title, ref, expr in dashboard_exprs(dashboard()):
        problems += [f"{title}/{ref}: {p}" for p in contract_problems(expr, table)]
        for name, _ in selectors(expr)[0]:
            used.add(re.sub(r"_(bucket|sum|count)$", "", name) if name not in table else name)
    assert problems == []
    # Both ways: a metric added to the table gets a panel.
    assert set(table) - used == set(), "metrics of docs/metrics.md on no panel"


# --- the alerts -----------------------------------------------------------------------------


def alert_rules():
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_alert_rules_check():
    out = run_promtool("check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(alert_rules())} rules found" in out, out


def test_alert_rules_unit_tests():
    out = run_promtool("test", "rules", str(ALERT_TESTS))
    assert "SUCCESS" in out and "FAILED" not in out, out


def test_alerts_have_severity_and_advice():
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)) >= 5, names
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        assert r["annotations"]["summary"].strip(), r["alert"]
        desc = r["annotations"]["description"]
        # What to do: an API call, a setting or a README section to read.
        assert re.search(r"(GET|POST) /|README|webhook-reconciler|[A-Z_]{6,}", desc), r["alert"]
    # Each alert has a unit test that expects it to fire, and one that expects silence.
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fires, quiet = set(), set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert set(names) - fires == set(), "alerts no unit test fires"
    assert set(names) - quiet == set(), "alerts no unit test keeps quiet"


def test_alerts_use_only_listed_metrics_and_labels():
    table = metrics_table()
    problems = []
    for r in alert_rules():
        problems += [f"{r['alert']}: {p}" for p in contract_problems(r["expr"], table)]
    assert problems == []


# --- the Prometheus example, README and make run agree ----------------------------------------


def test_prometheus_example_config():
    out = run_promtool("check", "config", str(PROM_CONFIG))
    assert "alerts.yml" in out, out
    config = yaml.safe_load(PROM_CONFIG.read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    # make run's ports: the broker's BROKER_LISTEN, then RUN_METRICS_PORT for worker-1,
    # worker-2 and the reconciler, one after the other.
    run = RUN_SH.read_text()
    broker = re.search(r'BROKER_LISTEN:=([0-9.:]+)', run).group(1)
    base = int(re.search(r'RUN_METRICS_PORT:=(\d+)', run).group(1))
    assert jobs == {"webhook-broker": [broker],
                    "webhook-worker": [f"127.0.0.1:{base}", f"127.0.0.1:{base + 1}"],
                    "webhook-reconciler": [f"127.0.0.1:{base + 2}"]}, jobs
    # The README shows the same scrape jobs.
    readme = README.read_text()
    section = readme[readme.index("\n## Monitoring"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    shown = [yaml.safe_load(b) for b in blocks]
    assert any(isinstance(s, dict) and s.get("scrape_configs") == config["scrape_configs"]
               for s in shown), "README Monitoring: no yaml block with prometheus.yml's scrape jobs"
    for r in alert_rules():
        assert r["alert"] in section, f"README Monitoring does not explain {r['alert']}"
