"""Watch rules as plain objects, no Ray: the rules and their codecs, the workers' digests, the
hub's WatchBook (NaN, threshold, step lag, MAD outlier, silent, crashed), alerts.jsonl read
back, and the webhook notifier against a local HTTP server. The same with real Ray and real
processes is tests/test_watch_e2e.py."""

from __future__ import annotations

import http.server
import json
import math
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from rayplex import watch
from rayplex.actors.hub import Hub
from rayplex.actors.notify import Notifier
from rayplex.actors.watchbook import WatchBook
from rayplex.encoder import Encoder
from rayplex.groups import GroupRegistry, GroupSpec
from rayplex.items import Scalar
from rayplex.records import Batch, Chunk, NodeCall
from tests.conftest import tb_scalars, wait_for


def entry(tag, steps, values):
    """One digest entry, computed as the worker computes it."""
    return watch.digest([tag], np.zeros(len(steps), np.int64), np.asarray(steps, np.int64),
                        np.asarray(values, np.float64))[0]


def batch(client, entries, sender="s1", seq=1):
    return Batch(sender, seq, ("e", 1), [Chunk(client, client, b"", 1, tuple(entries))])


# ----------------------------------------------------------------------- rules
def test_rules_validate_at_the_call_site_and_round_trip_as_json():
    rules = [watch.nan("loss"), watch.threshold("reward", below=-1, above=5.5, for_steps=3),
             watch.silent(30, group="agent"), watch.step_lag("agent", 50),
             watch.outlier("loss", group="agent", z=3), watch.crashed()]
    for rule in rules:
        data = json.loads(json.dumps(watch.rule_to_json(rule)))
        assert watch.rule_from_json(data) == rule
    assert [r.name for r in rules] == [
        "nan(loss)", "threshold(reward, below=-1, above=5.5, for_steps=3)",
        "silent(30, group=agent)", "step_lag(agent, 50)", "outlier(loss, group=agent, z=3)",
        "crashed()"]
    hooked = watch.with_actions(watch.nan("x"), "http://127.0.0.1:9/hook", "stop")
    assert watch.rule_from_json(watch.rule_to_json(hooked)) == hooked
    with pytest.raises(ValueError):
        watch.threshold("loss")
    with pytest.raises(ValueError):
        watch.silent(0)
    with pytest.raises(ValueError):
        watch.step_lag("bad group!", 3)
    with pytest.raises(ValueError):
        watch.webhook("ftp://x")
    with pytest.raises(ValueError):
        watch.with_actions(watch.nan("x"), None, "restart")
    with pytest.raises(TypeError):
        watch.with_actions("nan(loss)", None, None)
    with pytest.raises(ValueError):
        watch.rule_from_json({"kind": "exec", "tag": "x"})


@pytest.mark.parametrize("data", [["kind"], None, {}, {"kind": "nan"},
                                  {"kind": "nan", "tag": "x", "notify": [{"u": 1}]},
                                  {"kind": "nan", "tag": "x", "notify": 5},
                                  {"kind": "nan", "tag": 3}, {"kind": "silent", "seconds": "10"}])
def test_a_malformed_rule_is_a_value_error(data):
    with pytest.raises(ValueError, match="rule|tag|seconds"):
        watch.rule_from_json(data)


@pytest.mark.parametrize("change", [lambda d: [d], lambda d: None,
                                    lambda d: {k: v for k, v in d.items() if k != "client"},
                                    lambda d: {**d, "pid": [1]}, lambda d: {**d, "value": "x"}])
def test_a_malformed_alert_is_a_value_error_and_a_good_one_round_trips(change):
    alert = watch.Alert("nan(loss)", "agent", "agent/3", "n1", 42, 7, math.inf, None, 1.5, "m")
    data = json.loads(json.dumps(watch.alert_to_json(alert)))
    assert watch.alert_from_json(data) == alert
    with pytest.raises(ValueError):
        watch.alert_from_json(change(data))


def test_the_encoder_attaches_a_digest_per_tag_of_each_chunk():
    enc = Encoder(GroupRegistry())
    items = [Scalar("learner/a", "loss", s, 0.0, v) for s, v in
             [(1, 0.5), (2, math.inf), (3, 0.25)]] + [Scalar("learner/a", "lr", 1, 0.0, 1e-3)]
    (chunk,) = enc.encode(items, "s", 1, "e").chunks
    by_tag = {e[0]: e for e in chunk.digest}
    assert by_tag["loss"] == ("loss", 3, 3, 0.25, 0.25, 0.5, 1, 2, math.inf)
    assert by_tag["lr"] == ("lr", 1, 1, 1e-3, 1e-3, 1e-3, 0, -1, 0.0)


# ------------------------------------------------------------------ write path
def test_nan_alerts_once_per_episode_and_names_step_and_value():
    book = WatchBook([watch.nan("train/*")])
    book.senders("node-1", {"s1": 4242}, [], {}, now=1.0)
    found = book.observe([batch("agent/3", [entry("train/loss", [1, 2, 3], [1.0, np.nan, 2.0])])],
                         "node-1", now=10.0)
    (key, alert), = found
    assert (alert.rule, alert.client, alert.group, alert.node, alert.pid, alert.step) == (
        "nan(train/*)", "agent/3", "agent", "node-1", 4242, 2)
    assert math.isnan(alert.value)
    # still NaN in the next flush: the same episode; finite, then NaN again: a new alert
    assert book.observe([batch("agent/3", [entry("train/loss", [4], [np.nan])], seq=2)],
                        "node-1", 11.0) == []
    assert book.observe([batch("agent/3", [entry("train/loss", [5], [1.0])], seq=3)],
                        "node-1", 12.0) == []
    again = book.observe([batch("agent/3", [entry("train/loss", [6], [-np.inf])], seq=4)],
                         "node-1", 13.0)
    assert [a.step for _, a in again] == [6] and again[0][0] != key
    # other tags and other groups' scoped rules stay quiet
    book.set_rule(watch.nan("loss", group="learner"))
    assert book.observe([batch("agent/3", [entry("loss", [7], [np.nan])], seq=5)],
                        "node-1", 14.0) == []


def test_threshold_needs_for_steps_consecutive_points_across_flushes():
    book = WatchBook([watch.threshold("reward", below=0.0, for_steps=4)])
    assert book.observe([batch("agent/1", [entry("reward", [1, 2], [1.0, -1.0])])], "n", 1) == []
    assert book.observe([batch("agent/1", [entry("reward", [3, 4], [-2.0, -3.0])], seq=2)],
                        "n", 2) == []  # 1 + 2 = 3 points below
    found = book.observe([batch("agent/1", [entry("reward", [5], [-4.0])], seq=3)], "n", 3)
    assert [(a.step, a.value) for _, a in found] == [(5, -4.0)]
    assert "below 0" in found[0][1].message
    assert book.observe([batch("agent/1", [entry("reward", [6], [-5.0])], seq=4)], "n", 4) == []


class EveryEntryBook(WatchBook):
    """A WatchBook that skips no digest entry: every one goes through every rule of its tag."""

    def _rules_for(self, tag):
        _, _, rules = super()._rules_for(tag)
        self._by_tag[tag] = (math.inf, -math.inf, rules)
        return self._by_tag[tag]


def test_skipping_quiet_entries_changes_no_alert():
    """The write path's shortcut (an entry with no NaN, within the bounds of all its tag's
    rules, for a client with nothing holding, is not evaluated) raises exactly the alerts of
    evaluating every entry: random flushes of NaNs, excursions and quiet stretches."""
    rng = np.random.default_rng(7)
    rules = [watch.nan("*"), watch.nan("loss", group="agent"),
             watch.threshold("loss", above=5.0, for_steps=3),
             watch.threshold("r*", below=-1.0, above=1.0, for_steps=2),
             watch.threshold("reward", below=0.0, group="learner")]
    fast, every = WatchBook(rules), EveryEntryBook(rules)
    raised = 0
    for seq in range(1, 300):
        chunks = []
        for client in ("agent/0", "agent/1", "learner/0"):
            entries = []
            for tag in ("loss", "reward", "lr"):
                n = int(rng.integers(1, 4))
                values = rng.choice([0.5, -0.5, 6.0, -2.0, 2.0, np.nan, np.inf], size=n,
                                    p=[.5, .2, .1, .05, .05, .05, .05])
                entries.append(entry(tag, list(range(seq * 4, seq * 4 + n)), values))
            chunks.append(Chunk(client, client, b"", 1, tuple(entries)))
        got = fast.observe([Batch("s1", seq, ("e", 1), chunks)], "n", float(seq))
        want = every.observe([Batch("s1", seq, ("e", 1), chunks)], "n", float(seq))
        assert [(k, a.message) for k, a in got] == [(k, a.message) for k, a in want]
        raised += len(got)
    assert raised > 20


def test_digests_that_cannot_be_read_are_counted_not_fatal():
    book = WatchBook([watch.nan("loss")])
    assert book.observe([batch("agent/1", [("loss",)])], "n", 1.0) == []
    assert book.errors == 1


# ---------------------------------------------------------- group statistics
def test_step_lag_names_the_member_behind_the_median_and_no_other():
    assert watch.lagging({f"agent/{i}": 300 for i in range(15)} | {"agent/15": 100}, 50) == {
        "agent/15": 300.0}
    assert watch.lagging({"agent/0": 10}, 0) == {}
    book = WatchBook([watch.step_lag("agent", 50)])
    for i in range(16):
        last = 100 if i == 5 else 300
        book.observe([batch(f"agent/{i}", [entry("loss", [last - 1, last], [1.0, 1.0])],
                            sender=f"s{i}")], "n", 1.0)
    found = book.tick(2.0, {})
    assert [(a.client, a.step, a.median) for _, a in found] == [("agent/5", 100, 300.0)]
    assert book.tick(3.0, {}) == []  # still behind: the same episode


def test_outlier_uses_the_median_absolute_deviation():
    values = {f"a/{i}": 1.0 + 0.01 * (i % 5) for i in range(15)}
    assert watch.outliers(values, 4.0) == {}
    far = watch.outliers(values | {"a/15": 2.0}, 4.0)
    assert list(far) == ["a/15"] and far["a/15"][0] == pytest.approx(1.02)
    # one wild value does not hide another: the MAD barely moves (a standard deviation would)
    assert set(watch.outliers(values | {"a/15": 2.0, "a/16": 1e6}, 4.0)) == {"a/15", "a/16"}
    assert watch.outliers({"a/0": 1.0, "a/1": math.nan}, 4.0) == {}
    book = WatchBook([watch.outlier("loss", group="a")])
    for name, value in (values | {"a/15": 2.0}).items():
        book.observe([batch(name, [entry("loss", [7], [value])])], "n", 1.0)
    assert [a.client for _, a in book.tick(2.0, {})] == ["a/15"]


# ------------------------------------------------------------ silent, crashed
def test_silent_counts_records_and_heartbeats_and_skips_closed_processes():
    book = WatchBook([watch.silent(5)])
    book.senders("n", {"s1": 11, "s2": 22}, [], {}, now=0.0)
    book.observe([batch("agent/1", [entry("x", [1], [1.0])], sender="s1")], "n", 100.0)
    book.observe([batch("agent/2", [entry("x", [1], [1.0])], sender="s2")], "n", 100.0)
    assert book.tick(104.0, {}) == []
    beats = {"agent/2": {"time": 103.0, "status": "running"}}
    found = book.tick(106.0, beats)
    assert [(a.client, a.pid) for _, a in found] == [("agent/1", 11)]
    assert book.states()["agent/1"] == "silent"
    book.senders("n", {}, ["s2"], {}, now=107.0)  # closed: never silent
    assert book.tick(120.0, beats) == []
    book.observe([batch("agent/3", [entry("x", [1], [1.0])], sender="s3")], "n", 120.0)
    assert book.tick(130.0, {"agent/3": {"time": 121.0, "status": "finished"}}) == []
    book.observe([batch("agent/1", [entry("x", [2], [1.0])], sender="s1", seq=2)], "n", 121.0)
    assert book.states()["agent/1"] == "running"


def test_a_node_buffers_telemetry_is_no_sign_of_life_of_its_clients():
    from rayplex.rules import TELEMETRY_SENDER
    from rayplex.telemetry import telemetry_batch

    book = WatchBook([watch.silent(5)])
    book.senders("n", {"s1": 11}, [], {}, now=0.0)
    book.observe([batch("agent/1", [entry("x", [1], [1.0])], sender="s1")], "n", 100.0)
    sample = telemetry_batch(GroupRegistry(), {"agent/1": {"cpu_percent": 3.0}}, "system/n",
                             {"cpu_percent": 9.0}, 5, 104.0, f"{TELEMETRY_SENDER}nb", 1, "e")
    book.observe([sample], "n", 104.0)
    found = book.tick(106.0, {})
    assert [(a.client, a.pid) for _, a in found] == [("agent/1", 11)]
    assert "system/n" not in book.states()


def test_crashed_names_every_client_of_the_vanished_process_once():
    book = WatchBook([watch.crashed(group="agent")])
    book.senders("n", {"s1": 11}, [], {}, now=0.0)
    for name in ("agent/1", "agent/2", "learner/x"):
        book.observe([batch(name, [entry("x", [1], [1.0])], sender="s1")], "n", 1.0)
    found = book.senders("n", {}, [], {"s1": 11}, now=2.0)
    assert sorted((a.client, a.pid, a.node) for _, a in found) == [
        ("agent/1", 11, "n"), ("agent/2", 11, "n")]
    assert book.senders("n", {}, [], {"s1": 11}, now=3.0) == []  # a replayed report
    assert book.states()["learner/x"] == "crashed"


# ------------------------------------------------------------------- alerts file
def test_alerts_reads_back_strict_json_and_skips_a_torn_last_line(tmp_path):
    alert = watch.Alert("nan(loss)", "agent", "agent/3", "n1", 42, 7, math.nan, None, 1.5,
                        "msg")
    line = json.dumps(watch.alert_to_json(alert), allow_nan=False)
    (tmp_path / "alerts.jsonl").write_text(line + "\n" + line[:20])
    (back,) = watch.alerts(tmp_path)
    assert back.rule == "nan(loss)" and back.pid == 42 and math.isnan(back.value)
    assert watch.alerts(tmp_path / "nothing") == []


# -------------------------------------------------------------------- webhooks
class _Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        server.seen.append(body)
        status = 503 if len(server.seen) <= server.fail_first else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


def serve(fail_first=0):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.seen, server.fail_first = [], fail_first
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/hook"


def an_alert(client="agent/3", step=1):
    return watch.Alert("nan(loss)", "agent", client, "n", 1, step, math.nan, None, time.time(),
                       f"{client}: loss = nan")


def test_webhook_gets_one_post_per_alert_then_the_suppressed_count():
    server, url = serve(fail_first=1)  # the first try fails: retried, delivered once
    notifier = Notifier(attempts=3, backoff_s=0.05, timeout_s=2)
    hook = watch.webhook(url, repeat_s=0.5)
    try:
        notifier.submit((hook,), an_alert(step=1))
        wait_for(lambda: notifier.counters["posted"] == 1, 10, "the first POST")
        notifier.submit((hook,), an_alert(step=2))
        notifier.submit((hook,), an_alert(step=3))
        notifier.submit((hook,), an_alert(client="agent/4"))  # another client: its own window
        wait_for(lambda: notifier.counters["posted"] == 2, 10, "agent/4's POST")
        assert notifier.counters["suppressed"] == 2
        started = time.monotonic()
        wait_for(lambda: time.monotonic() - started > 0.5, 2, "the repeat window to pass")
        notifier.submit((hook,), an_alert(step=4))
        wait_for(lambda: notifier.counters["posted"] == 3, 10, "the POST after the window")
        delivered = [b for b in server.seen[1:]]  # the first try was answered 503
        assert [(b["client"], b["step"], b["suppressed"]) for b in delivered] == [
            ("agent/3", 1, 0), ("agent/4", 1, 0), ("agent/3", 4, 2)]
        assert delivered[2]["text"].startswith("rayplex alert: agent/3: loss = nan")
        assert "2 repeats suppressed" in delivered[2]["text"] and delivered[0]["value"] == "nan"
    finally:
        notifier.close()
        server.shutdown()


def test_a_hanging_or_refusing_webhook_never_blocks_submit():
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(100)  # accepts connections into the backlog, never answers
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    hooks = (watch.webhook(f"http://127.0.0.1:{hang.getsockname()[1]}/", repeat_s=0),
             watch.webhook(f"http://127.0.0.1:{refused.getsockname()[1]}/", repeat_s=0))
    said = []
    notifier = Notifier(lambda level, text: said.append(text), attempts=2, backoff_s=0.01,
                        timeout_s=1)
    try:
        started = time.perf_counter()
        for step in range(2000):
            notifier.submit(hooks, an_alert(step=step))
        assert time.perf_counter() - started < 0.5  # queued, never sent inline
        assert notifier.counters["dropped"] > 0  # beyond the queue's bound: dropped, counted
        wait_for(lambda: any("refused" in s.lower() or "timed out" in s for s in said), 20,
                 "the failed POSTs reported")
    finally:
        notifier.close()
        hang.close()
        refused.close()


def test_rayplex_alerts_prints_one_line_per_alert(tmp_path, capsys):
    from rayplex.cli import main

    (tmp_path / "tensorboard").mkdir()
    assert main(["alerts", str(tmp_path)]) == 0 and capsys.readouterr().out == ""
    alert = watch.Alert("step_lag(agent, 50)", "agent", "agent/11", "a693ad6fbfa1cafe", 42, 100,
                        None, 300.0, 1.5, "step_lag(agent, 50): agent/11: at step 100")
    (tmp_path / "alerts.jsonl").write_text(json.dumps(watch.alert_to_json(alert)) + "\n")
    assert main(["alerts", str(tmp_path)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.split("  ")[1:] == ["step_lag(agent, 50)", "agent/11", "a693ad6fbfa1", "42",
                                    "100", "-", "300", "step_lag(agent, 50): agent/11: at step 100"]


def test_the_python_and_numpy_digests_agree():
    rng = np.random.default_rng(7)
    for n in (1, 5, watch.SMALL_DIGEST + 1, 500):
        ids = rng.integers(0, 3, n)
        steps = np.arange(n, dtype=np.int64)
        values = rng.normal(size=n)
        values[rng.random(n) < 0.1] = np.nan
        values[rng.random(n) < 0.05] = -np.inf
        small = watch._small_digest(["a", "b", "c"], ids.tolist(), steps.tolist(), values.tolist())
        big = watch._numpy_digest(["a", "b", "c"], ids, steps, values)
        assert [e[0] for e in small] == [e[0] for e in big]
        assert np.array_equal(np.array([e[1:] for e in small], float),
                              np.array([e[1:] for e in big], float), equal_nan=True)


# ------------------------------------------------- an alert across a hub kill
# Where the hub's process is SIGKILLed while it writes a call whose batch holds a NaN: the
# alert line appended but not journalled; journalled but its batch not begun; the batch
# appended but not committed. Each time the batch is unacknowledged, its sender resends it.
KILL_POINTS = {  # the journal call the hub is killed at, and when
    "alert_appended": ("commit", "any(r.startswith('alert:') for r in requests)"),
    "alert_journalled": ("begin", "bool(batches)"),
    "batch_appended": ("commit", "bool(senders)"),
}


def _nan_call(hub):
    """A node buffer's call with one worker batch: 5 scalars of ``loss``, one of them NaN."""
    items = [Scalar("learner/0", "loss", step, 1.0, np.nan if step == 3 else float(step))
             for step in range(1, 6)]
    batch = Encoder(hub.registry).encode(items, "w1", 1, hub.experiment)
    return NodeCall("n1", 1, [batch], ray_node="node-1", pids={"w1": 4242})


def _killed_in_write(logdir, call, point, tmp_path):
    """Another process runs a plain hub over ``logdir``, writes ``call`` and is SIGKILLed at
    ``point`` (no ``finally``, no ``except`` of the hub runs)."""
    method, condition = KILL_POINTS[point]
    script = tmp_path / "die.py"
    script.write_text(textwrap.dedent(f"""
        import os, pickle, signal, sys
        from rayplex.actors.hub import Hub

        def kill_at(offsets=None, batches=(), senders=(), requests=()):
            return {condition}

        hub = Hub("dies", {logdir!r})
        hub._stop.set()
        real = getattr(hub.writer.journal, {method!r})

        def dying(*args):
            names = {{"begin": ("offsets", "batches"),
                      "commit": ("senders", "partials", "requests")}}[{method!r}]
            kwargs = {{k: v for k, v in zip(names, args) if k != "partials"}}
            if kill_at(**kwargs):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args)

        setattr(hub.writer.journal, {method!r}, dying)
        hub.write_node(pickle.loads(sys.stdin.buffer.read()))
        sys.exit(3)  # not killed: the test is wrong
    """))
    done = subprocess.run([sys.executable, str(script)], input=pickle.dumps(call),
                          capture_output=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == -9, done.stderr.decode()[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_hub_killed_between_an_alert_and_its_batch_commit_keeps_both_exactly_once(
        tmp_path, point):
    """The alert is keyed by the batch that raised it: after the kill, the restarted hub gets
    the batch again (resent, unacknowledged) and writes its scalars once, its alert once."""
    logdir = str(tmp_path / "exp")
    first = Hub("first", logdir)
    first._stop.set()
    first.register_group(GroupSpec.indexed("learner", 1))
    first.watch(watch.rule_to_json(watch.nan("loss")))
    call = _nan_call(first)
    first.writer.claim.release("the test ends its process")
    _killed_in_write(logdir, call, point, tmp_path)
    alerts_file = tmp_path / "exp" / "alerts.jsonl"
    appended = alerts_file.read_bytes() if alerts_file.exists() else b""
    assert appended.count(b"\n") == 1  # the alert line was appended before the kill
    restarted = Hub("restarted", logdir)
    restarted._stop.set()
    try:
        (ack,) = restarted.write_node(call)  # the sender resends its unacknowledged batch
        assert not (ack.error or ack.retry or ack.rejected or ack.stale), ack
        assert restarted.write_node(call)[0].duplicate  # and once more: a duplicate
        restarted.flush()
        found = watch.alerts(logdir)
        assert [(a.rule, a.client, a.step, a.pid) for a in found] == [
            ("nan(loss)", "learner/0", 3, 4242)]
        run = call.batches[0].chunks[0].run
        (points,) = tb_scalars(logdir)[run].values()  # the one tag, as the group routes it
        assert [s for s, _ in points] == [1, 2, 3, 4, 5]
    finally:
        restarted.close()
