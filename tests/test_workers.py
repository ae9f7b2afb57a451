"""Data-parallel training (``nin train --workers N``, :mod:`nin.workers`): the same training as one process,
on each framework's own engine; a failing worker stops them all, and no process is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fakedata import make_set
from nin import cli, data, frameworks, runs, seeds, weights, workers

#: 4 SGD steps of a global batch of 64 (the third worker's parts are one image short), at the smallest size
STEPS = ["--limit-train", "256", "--limit-test", "96", "--epochs", "1", "--resize", "67", "--batch-size", "64"]
#: what makes N workers take one process's steps: no dropout (its masks differ per worker) and float32. The steps
#: stay equal to rounding (1e-8 here) until a pre-activation that rounding puts on the other side of its ReLU kink
#: changes a gradient: among millions of them a few steps in, that happens (with a clipped step, in MXNet, one run in
#: three: 1e-3 apart), so the clip is checked on one step
SAME = ["--dropout", "0", "--precision", "float32", "--init", "kaiming", "--lr", "0.05", "--seed", "0", "--quiet"]


def nin(*args, timeout=120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nin", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def left_behind(marker: str) -> list[str]:
    """Processes still running whose command line holds ``marker`` (a test's own directory)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]


def relative_difference(a: dict, b: dict) -> float:
    """``‖a - b‖ / ‖a‖`` over all the weights together (per tensor, a bias that has barely left its zero init holds
    sums whose terms cancel, where float32 rounding in another order is a large part of a tiny number)."""
    norm = lambda tensors: np.sqrt(sum(float((t.astype(np.float64) ** 2).sum()) for t in tensors))  # noqa: E731
    return norm(a[k] - b[k] for k in a) / norm(a.values())


@pytest.fixture
def images(tmp_path) -> str:
    make_set(tmp_path / "data", n_train=256, n_test=96)
    return str(tmp_path / "data")


# The split, the seeds and the launcher: no framework.

def test_each_example_is_seen_once_per_epoch_across_workers():
    for size in (2, 3):
        parts = [data.BatchSampler(130, 64, seed=1, world=workers.World(rank=r, size=size)) for r in range(size)]
        whole = list(data.BatchSampler(130, 64, seed=1))
        for sampler in parts:
            sampler.set_epoch(0)
        by_rank = [list(sampler) for sampler in parts]
        for i, batch in enumerate(whole):  # rank 0 first, consecutive parts, the uneven last batch of 2 too
            assert np.array_equal(np.concatenate([ranks[i] for ranks in by_rank if i < len(ranks)]), batch)
        assert [parts[0].total(i) for i in range(3)] == [64, 64, 2]


def test_a_batch_too_small_to_split_is_refused_with_its_numbers():
    workers.check_split(64, 130, 2)
    with pytest.raises(ValueError, match="the last batch of 2 images cannot be split across 3 workers"):
        workers.check_split(64, 130, 3)
    with pytest.raises(ValueError, match="a batch of 2 cannot be split across 3 workers"):
        workers.check_split(2, 130, 3)


def test_each_worker_draws_its_own_dropout_masks_and_rank_0_those_of_one_process():
    assert seeds.epoch_seed(5, 2, rank=0) == seeds.epoch_seed(5, 2)
    assert len({seeds.epoch_seed(5, 2, rank) for rank in range(4)}) == 4


def test_threads_and_ports_per_worker():
    cores = len(os.sched_getaffinity(0))
    members = workers.worlds(2)
    assert [w.rank for w in members] == [0, 1] and all(w.size == 2 and w.threads == max(1, cores // 2) for w in members)
    assert len({members[0].port, *members[0].ports}) == 3  # the coordinator's and one per worker, all free
    two_nodes = workers.worlds(2, nodes=2, node=1, host="127.0.0.1", port=members[0].port)
    assert [w.rank for w in two_nodes] == [2, 3] and two_nodes[0].size == 4 and two_nodes[0].ports == ()


def test_a_failing_process_stops_the_group_and_is_named(tmp_path):
    group = workers.Group()
    sleep = [sys.executable, "-c", f"import time; time.sleep(60)  # {tmp_path}"]
    fail = [sys.executable, "-c", f"import sys, time; time.sleep(0.5); sys.exit('error: out of luck')  # {tmp_path}"]
    group.start("worker 0 of 2", sleep, dict(os.environ), None)
    group.start("worker 1 of 2", fail, dict(os.environ), None)
    started = time.monotonic()
    with pytest.raises(workers.WorkerFailed) as caught:
        workers._watch(group, 2)
    assert str(caught.value).startswith(f"worker 1 of 2 (pid {group.procs[1][1].pid}) exited with status 1: error: "
                                        "out of luck;")
    assert time.monotonic() - started < 10 and not left_behind(str(tmp_path))


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "argument --workers: must be a whole number, 1 or more, got '0'"),
    (["--workers", "3", "--batch-size", "2"], "a batch of 2 cannot be split across 3 workers"),
    (["--nodes", "2", "--workers", "1"], "--nodes 2: give every node the same --seed and --out"),
])
def test_bad_worker_settings_get_one_line(args, message, fake, tmp_path):
    proc = nin("train", "--backend", "torch", "--data", fake, "--out", str(tmp_path / "run"), *args, timeout=60)
    assert proc.returncode != 0 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_busy_coordinator_port_is_named(fake, tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = nin("train", "--backend", "torch", "--data", fake, "--out", str(tmp_path / "run"), "--workers", "2",
                   "--coordinator", f"127.0.0.1:{port}", "--seed", "0", timeout=60)
    assert proc.returncode == 1 and f"port {port} on 127.0.0.1 is in use" in proc.stderr
    assert "--coordinator" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# Each framework's engine, through the command line.

@pytest.mark.per_backend
def test_three_workers_and_two_nodes_take_the_steps_of_one_process(backend_name, backend, images, tmp_path):
    """Same weights (relative difference <= 1e-5), same records, after 4 steps on 1 process, on 3 workers (the last
    one's parts one image short), and on two launchers ("nodes" on loopback) of one worker each meeting at node 0's
    coordinator (or, for an engine that runs on one machine only, ``nin.frameworks.ONE_NODE_ONLY``, one line from
    each node that says so); and a step on 2 workers whose gradient is clipped (at a norm below its own: the clip
    applies to the combined gradient). An engine that does not train on several processes here
    (``nin.frameworks.ONE_PROCESS_ONLY``) is refused in one line."""
    if backend_name in frameworks.ONE_PROCESS_ONLY:  # refused in one line, before any process starts
        proc = nin("train", "--backend", backend_name, "--data", images, "--out", str(tmp_path / "w3"), "--workers",
                   "3", *STEPS, *SAME)
        assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
            f"nin train: error: 3 workers: {frameworks.ONE_PROCESS_ONLY[backend_name]}; train in one process"]
        assert not (tmp_path / "w3").exists()
        return
    found = {}
    # one process in this one (its framework already imported), the workers through the command line
    assert cli.main(["train", "--backend", backend_name, "--data", images, "--out", str(tmp_path / "w1"), *STEPS,
                     *SAME]) == 0
    found[1] = weights.load(tmp_path / "w1" / runs.CHECKPOINT)
    proc = nin("train", "--backend", backend_name, "--data", images, "--out", str(tmp_path / "w3"), "--workers", "3",
               *STEPS, *SAME)
    assert proc.returncode == 0, proc.stderr
    found[3] = weights.load(tmp_path / "w3" / runs.CHECKPOINT)
    port = workers.free_ports("127.0.0.1", 1)[0]
    common = ["train", "--backend", backend_name, "--data", images, "--nodes", "2", "--workers", "1",
              "--coordinator", f"127.0.0.1:{port}", "--out", str(tmp_path / "nodes"), *STEPS, *SAME]
    node1 = subprocess.Popen([sys.executable, "-m", "nin", *common, "--node-rank", "1"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        node0 = nin(*common, "--node-rank", "0")
        _, err1 = node1.communicate(timeout=120)
    finally:
        node1.kill()
    if backend_name in frameworks.ONE_NODE_ONLY:
        for code, err in ((node0.returncode, node0.stderr), (node1.returncode, err1)):
            assert code == 1 and err.strip().splitlines() == [
                f"nin train: error: 2 nodes: {frameworks.ONE_NODE_ONLY[backend_name]}; train on one node"]
    else:
        assert node0.returncode == 0 and node1.returncode == 0, (node0.stderr, err1)
        found["nodes"] = weights.load(tmp_path / "nodes" / runs.CHECKPOINT)
    net = backend.NiN()
    backend.init_weights(net, "kaiming", 0)  # where the runs started: 4 steps move the weights far past the tolerance
    assert relative_difference(found[1][0], backend.get_weights(net)) > 5e-4
    one = found[1][1]["history"][0]
    for n in found.keys() - {1}:
        assert relative_difference(found[1][0], found[n][0]) <= 1e-5, n
        record = found[n][1]["history"][0]
        assert record["test_acc"] == one["test_acc"] and record["train_acc"] == one["train_acc"]
        assert record["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
        assert found[n][1]["config"]["workers"] == (2 if n == "nodes" else n)
    clip = ["train", "--backend", backend_name, "--data", images, *STEPS, *SAME, "--limit-train", "64", "--clip", "0.5"]
    assert cli.main([*clip, "--out", str(tmp_path / "clip1")]) == 0
    proc = nin(*clip, "--out", str(tmp_path / "clip2"), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    clipped = [weights.load(tmp_path / f"clip{n}" / runs.CHECKPOINT)[0] for n in (1, 2)]
    assert relative_difference(*clipped) <= 1e-5
    assert not left_behind(str(tmp_path))


@pytest.mark.per_backend
def test_a_killed_worker_stops_the_run_and_resume_finishes_it(backend_name, tmp_path):
    """Worker 1 killed after the first epoch: every process gone within 30 s, one line that names it, the last
    finished epoch's checkpoint intact; ``--resume`` on one process trains the next epoch."""
    make_set(tmp_path / "data", n_train=64, n_test=32)  # 4 steps an epoch
    out = tmp_path / "run"
    if backend_name in frameworks.ONE_PROCESS_ONLY:  # nothing to kill: refused in one line
        proc = nin("train", "--backend", backend_name, "--data", str(tmp_path / "data"), "--out", str(out),
                   "--workers", "2", "--seed", "0", "--quiet")
        assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
            f"nin train: error: 2 workers: {frameworks.ONE_PROCESS_ONLY[backend_name]}; train in one process"]
        return
    launcher = subprocess.Popen([sys.executable, "-m", "nin", "train", "--backend", backend_name, "--data",
                                 str(tmp_path / "data"), "--out", str(out), "--workers", "2", "--epochs", "100",
                                 "--resize", "67", "--batch-size", "16", "--seed", "0", "--quiet"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (out / runs.CHECKPOINT).is_file() and time.monotonic() < deadline and launcher.poll() is None:
            time.sleep(0.1)
        assert (out / runs.CHECKPOINT).is_file(), launcher.communicate()[1] if launcher.poll() is not None else ""
        ranks = {json.loads(_environ(pid)[workers.ENV])["world"]["rank"]: pid for pid in _children(launcher.pid)
                 if workers.ENV in _environ(pid) and json.loads(_environ(pid)[workers.ENV])["role"] == "worker"}
        os.kill(ranks[1], signal.SIGKILL)
        killed = time.monotonic()
        _, err = launcher.communicate(timeout=30)
        assert time.monotonic() - killed < 30
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 1
    assert err.strip().splitlines() == [f"nin train: error: worker 1 of 2 (pid {ranks[1]}) was killed by SIGKILL; "
                                        f"every worker was stopped; continue with --resume {out}"]
    assert not left_behind(str(tmp_path))
    done = len(weights.load(out / runs.CHECKPOINT)[1]["history"])  # intact: it loads, with its checksum
    assert cli.main(["train", "--resume", str(out), "--epochs", str(done + 1), "--quiet"]) == 0
    assert [r["epoch"] for r in json.loads((out / runs.METRICS).read_text())["history"]] == list(range(done + 1))


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True).stdout.split()[2:]
    return [int(p) for p, parent in zip(out[::2], out[1::2], strict=True) if int(parent) == pid]


def _environ(pid: int) -> dict:
    try:
        raw = open(f"/proc/{pid}/environ", "rb").read()
    except OSError:
        return {}
    return dict(entry.decode(errors="replace").split("=", 1) for entry in raw.split(b"\0") if b"=" in entry)
