"""tf.distribute: the strategy chosen from the environment, and results that match one device.

Two logical CPU devices stand in for two GPUs; two processes on loopback stand in for two
machines. Logical devices and multi-worker strategies must be set up before TensorFlow
initialises, so each of those checks runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest

from pneumonia.distribute import asks_for_distribution, choose_strategy, is_chief, parse_tf_config, shard_slices
from pneumonia.litert import has_litert

ROOT = Path(__file__).resolve().parent.parent
TWO_CPUS = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""

# Batch prediction on one device and under the chosen strategy, in one process.
PREDICT = TWO_CPUS + """
import json, sys
from pneumonia import Predictor
from pneumonia.distribute import choose_strategy, describe_strategy

strategy = choose_strategy({})
paths = sys.argv[1:]
single = list(Predictor.load().predict_files(paths, batch_size=5))
distributed = list(Predictor.load(strategy=strategy).predict_files(paths, batch_size=5))
print(json.dumps({"strategy": describe_strategy(strategy).split(",")[0], "replicas": strategy.num_replicas_in_sync,
                  "described": describe_strategy(strategy), "single": single, "distributed": distributed}))
"""

# A few training steps of the real model and optimiser on one device and under the strategy.
# Each global batch is one half-batch twice, so each replica sees the same films as the whole
# batch holds and batch normalisation (per replica) computes the same statistics on both sides.
TRAIN = TWO_CPUS + """
import json
import numpy as np
from pneumonia.distribute import choose_strategy
from pneumonia.train import TrainConfig, build_compiled_model

config = TrainConfig(input_size=32, head_width=4, epochs=1, batch_size=8, dropout=0.0, augment=False)
rng = np.random.default_rng(0)
halves = [rng.random((4, 32, 32, 1), dtype=np.float32) for _ in range(3)]
labels = [np.array([[0.0], [1.0], [1.0], [0.0]], np.float32)] * 3
x = np.concatenate([np.concatenate([h, h]) for h in halves])
y = np.concatenate([np.concatenate([l, l]) for l in labels])
y = {"logit": y, "evidence": np.zeros((len(y), 2, 2), np.float32)}  # no boxes: the box loss is 0
runs = {}
for name, strategy in (("single", tf.distribute.get_strategy()), ("distributed", choose_strategy({}))):
    model, _ = build_compiled_model(config, steps_per_epoch=3, strategy=strategy)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    loss = model.fit(data, epochs=1, shuffle=False, verbose=0).history["loss"][-1]
    runs[name] = {"loss": float(loss), "weights": [w.tolist() for w in model.get_weights()],
                  "replicas": strategy.num_replicas_in_sync}
print(json.dumps(runs))
"""

# One worker of a two-worker cluster: its strategy, chief or not, and its prediction rows.
WORKER = """
import json, sys
from pneumonia import Predictor
from pneumonia.distribute import choose_strategy, describe_strategy, is_chief

strategy = choose_strategy()
rows = list(Predictor.load(strategy=strategy).predict_files(sys.argv[1:], batch_size=5))
print(json.dumps({"strategy": describe_strategy(strategy).split(",")[0], "replicas": strategy.num_replicas_in_sync,
                  "chief": is_chief(strategy), "rows": rows}))
"""


def run_python(code: str, args=(), env=None, timeout=300) -> dict:
    """Run ``code`` in a fresh interpreter in the repository root; its last stdout line as JSON."""
    base = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "PNEUMONIA_STRATEGY")}
    env = {**base, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def batch_paths(film_paths, tmp_path_factory) -> list[str]:
    """The 8 test films, an unreadable file and a missing one: 10 rows, 2 batches of 5."""
    broken = tmp_path_factory.mktemp("distribute") / "broken.jpeg"
    broken.write_bytes(b"\xff\xd8 not really a JPEG")
    paths = [str(p) for p in film_paths]
    return paths[:3] + [str(broken)] + paths[3:] + [str(broken.with_name("missing.png"))]


def assert_rows_match(expected: list[dict], actual: list[dict]) -> None:
    assert [r["path"] for r in actual] == [r["path"] for r in expected]
    for want, got in zip(expected, actual):
        assert (got["label"], got["error"]) == (want["label"], want["error"])
        if not want["error"]:
            assert got["pneumonia_probability"] == pytest.approx(want["pneumonia_probability"], abs=1e-5)
            assert got["chest_xray_distance"] == pytest.approx(want["chest_xray_distance"], rel=1e-4, abs=0.02)


def test_one_cpu_gets_the_default_strategy():
    import tensorflow as tf

    assert choose_strategy({}) is tf.distribute.get_strategy()
    assert choose_strategy({"PNEUMONIA_STRATEGY": "default", "TF_CONFIG": ""}) is tf.distribute.get_strategy()


@pytest.mark.parametrize("env, message", [
    ({"PNEUMONIA_STRATEGY": "tpu"}, "must be one of"),
    ({"TF_CONFIG": "{not json"}, "not valid JSON"),
    ({"TF_CONFIG": '{"cluster": {"worker": ["127.0.0.1:1"]}}'}, '"task"'),
    ({"PNEUMONIA_STRATEGY": "multi_worker"}, "needs TF_CONFIG"),
])
def test_bad_settings_are_refused_with_a_message(env, message):
    with pytest.raises(ValueError, match=message):
        choose_strategy(env)
    if "needs TF_CONFIG" not in message:  # that one is choose_strategy's to refuse, once it is asked
        with pytest.raises(ValueError, match=message):
            asks_for_distribution(env)


CLUSTER = json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}})


@pytest.mark.parametrize("env, asks", [
    ({}, False),
    ({"PNEUMONIA_STRATEGY": "default"}, False),
    ({"PNEUMONIA_STRATEGY": " Mirrored "}, True),
    ({"PNEUMONIA_STRATEGY": "multi_worker"}, True),
    ({"TF_CONFIG": CLUSTER}, True),
    ({"TF_CONFIG": CLUSTER, "PNEUMONIA_STRATEGY": "default"}, False),
    ({"TF_CONFIG": '{"task": {"type": "worker", "index": 0}}'}, False),
])
def test_asks_for_distribution_follows_the_environment_like_choose_strategy(env, asks):
    assert asks_for_distribution(env) is asks


@pytest.mark.skipif(not has_litert(), reason="ai-edge-litert has no wheel for this platform: the CLI runs Keras")
@pytest.mark.parametrize("strategy", ["", "default"])
def test_batch_cli_runs_without_tensorflow_when_no_distribution_is_asked_for(tmp_path, strategy):
    out = tmp_path / "out.csv"
    code = ("import sys; from pneumonia.__main__ import main; "
            f"rc = main(['predict', 'examples', '--csv', {str(out)!r}, '--quiet']); "
            "print(rc, 'tensorflow' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "PNEUMONIA_STRATEGY")}
    env["PNEUMONIA_STRATEGY"] = strategy
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.stdout.split() == ["0", "False"], result.stderr[-2000:]
    assert len(out.read_text().splitlines()) == 1 + len([p for p in (ROOT / "examples").rglob("*") if p.is_file()])


def test_tf_config_without_a_cluster_is_ignored():
    assert parse_tf_config("") == {} and parse_tf_config('{"task": {"type": "worker", "index": 0}}') == {}


def test_the_chief_is_the_chief_task_else_worker_zero():
    import tensorflow as tf

    def strategy(cluster, task_type, task_id):
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
        return types.SimpleNamespace(cluster_resolver=resolver)

    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    assert is_chief(strategy(workers, "worker", 0)) and not is_chief(strategy(workers, "worker", 1))
    with_chief = {"chief": ["127.0.0.1:3"], **workers}
    assert is_chief(strategy(with_chief, "chief", 0)) and not is_chief(strategy(with_chief, "worker", 0))
    assert is_chief(types.SimpleNamespace())  # one process: always the chief


@pytest.mark.parametrize("count, replicas", [(10, 2), (5, 2), (1, 2), (7, 3), (64, 4)])
def test_shards_cover_the_batch_in_order_and_evenly(count, replicas):
    slices = shard_slices(count, replicas)
    assert len(slices) == replicas and slices[0].start == 0 and slices[-1].stop == count
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))
    sizes = [s.stop - s.start for s in slices]
    assert max(sizes) - min(sizes) <= 1


def test_batch_prediction_on_two_devices_matches_one_device(batch_paths):
    result = run_python(PREDICT, batch_paths)
    assert (result["strategy"], result["replicas"]) == ("MirroredStrategy", 2), result["described"]
    assert [bool(r["error"]) for r in result["single"]] == [False] * 3 + [True] + [False] * 5 + [True]
    assert_rows_match(result["single"], result["distributed"])


def test_training_steps_on_two_devices_match_one_device():
    runs = run_python(TRAIN)
    single, distributed = runs["single"], runs["distributed"]
    assert (single["replicas"], distributed["replicas"]) == (1, 2)
    assert distributed["loss"] == pytest.approx(single["loss"], rel=1e-4)
    import numpy as np

    # Adam scales every update to about the learning rate, so a float-rounding difference in a
    # near-zero gradient can move a single weight by up to one learning rate a step (3 steps here);
    # a real mismatch (gradients summed or not reduced across replicas) moves most weights.
    from pneumonia.train import TrainConfig

    differences = np.concatenate([np.abs(np.subtract(got, want)).ravel()
                                  for want, got in zip(single["weights"], distributed["weights"])])
    assert np.median(differences) < 1e-6, np.median(differences)
    assert differences.max() <= 3 * TrainConfig().learning_rate, differences.max()


def test_two_workers_on_loopback_give_every_row_of_one_device(batch_paths):
    """A two-machine MultiWorkerMirroredStrategy, as two processes configured by TF_CONFIG."""
    expected = run_python(WORKER, batch_paths, env={"PNEUMONIA_STRATEGY": "default"})
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen([sys.executable, "-c", WORKER, *batch_paths], cwd=ROOT, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [worker.communicate(timeout=240) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert [(r["strategy"], r["replicas"], r["chief"]) for r in results] == [
        ("MultiWorkerMirroredStrategy", 2, True), ("MultiWorkerMirroredStrategy", 2, False)]
    for result in results:
        assert_rows_match(expected["rows"], result["rows"])
