"""Run training and batch prediction under a ``tf.distribute`` strategy chosen from the environment.

=================================================  =======================================
environment                                        strategy
=================================================  =======================================
``TF_CONFIG`` names a cluster                      ``MultiWorkerMirroredStrategy``
more than one local GPU                            ``MirroredStrategy`` over the GPUs
more than one logical CPU device (set up by the    ``MirroredStrategy`` over those devices
caller, as the tests do)
otherwise (one CPU, or one GPU)                    the default strategy: no overhead at all
=================================================  =======================================

``PNEUMONIA_STRATEGY=default|mirrored|multi_worker`` forces a choice. TensorFlow requires a
multi-worker strategy to be created before any other TensorFlow work, so
:func:`choose_strategy` is the first thing ``train`` and ``predict`` call. The batch CLI
(``predict``) asks for a strategy only when the environment names one (:func:`asks_for_distribution`)
or when the exported network cannot run: otherwise it runs the exported network on the CPU without
importing TensorFlow (about 6 s of start-up), so several GPUs go unused unless
``PNEUMONIA_STRATEGY=mirrored`` says so.

Batch prediction under more than one replica: each batch of decoded films is split across the
replicas (:func:`run_sharded`), and the logits and gate features are gathered back in input order
(``strategy.gather``). Under a multi-worker strategy every worker runs the same command on the
same files and gets every row; only the chief writes the CSV.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Optional

import numpy as np

STRATEGY_ENV = "PNEUMONIA_STRATEGY"
CHOICES = ("default", "mirrored", "multi_worker")


def choose_strategy(env: Optional[Mapping[str, str]] = None):
    """The ``tf.distribute.Strategy`` this environment calls for (see the module docstring).

    Args:
        env: environment variables to read (default ``os.environ``): ``PNEUMONIA_STRATEGY`` and
            ``TF_CONFIG``.

    Returns:
        A ``tf.distribute.Strategy``; the default strategy when there is nothing to distribute.

    Raises:
        ValueError: ``PNEUMONIA_STRATEGY`` is not one of :data:`CHOICES`, or ``TF_CONFIG`` is not
            valid JSON with a ``cluster`` and a ``task`` (or is missing when required).
    """
    import tensorflow as tf

    forced, tf_config = read_settings(env)
    if forced == "multi_worker" or (not forced and tf_config):
        if not tf_config:
            raise ValueError(f"{STRATEGY_ENV}=multi_worker needs TF_CONFIG to describe the cluster.")
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(tf_config["cluster"]), task_type=tf_config["task"]["type"],
            task_id=int(tf_config["task"]["index"]), rpc_layer="grpc")
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    if forced == "default":
        return tf.distribute.get_strategy()
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    if forced == "mirrored":
        return tf.distribute.MirroredStrategy(gpus or cpus)
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(gpus)
    if not gpus and len(cpus) > 1:
        return tf.distribute.MirroredStrategy(cpus)
    return tf.distribute.get_strategy()


def read_settings(env: Optional[Mapping[str, str]] = None) -> tuple[str, dict]:
    """``(PNEUMONIA_STRATEGY lower-cased or "", TF_CONFIG parsed or {})`` from ``env`` (default ``os.environ``).

    Raises:
        ValueError: ``PNEUMONIA_STRATEGY`` is not one of :data:`CHOICES`, or ``TF_CONFIG`` is invalid.
    """
    env = os.environ if env is None else env
    forced = env.get(STRATEGY_ENV, "").strip().lower()
    if forced and forced not in CHOICES:
        raise ValueError(f"{STRATEGY_ENV} must be one of {', '.join(CHOICES)}, not {forced!r}.")
    return forced, parse_tf_config(env.get("TF_CONFIG", ""))


def asks_for_distribution(env: Optional[Mapping[str, str]] = None) -> bool:
    """Whether the environment names a strategy or a cluster; reads no TensorFlow.

    Args:
        env: environment variables to read (default ``os.environ``).

    Returns:
        True when ``PNEUMONIA_STRATEGY`` is ``mirrored`` or ``multi_worker``, or ``TF_CONFIG``
        names a cluster (and ``PNEUMONIA_STRATEGY`` is not ``default``).

    Raises:
        ValueError: as :func:`choose_strategy`, for a bad ``PNEUMONIA_STRATEGY`` or ``TF_CONFIG``.
    """
    forced, tf_config = read_settings(env)
    return forced in ("mirrored", "multi_worker") or (not forced and bool(tf_config))


def parse_tf_config(text: str) -> dict:
    """``TF_CONFIG`` as a dict, or ``{}`` when unset or naming no cluster.

    Raises:
        ValueError: not JSON, or a cluster without a ``task`` (type and index).
    """
    if not text.strip():
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON ({exc}).") from None
    if not isinstance(config, dict) or not config.get("cluster"):
        return {}
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError('TF_CONFIG names a cluster but no "task": {"type": "worker", "index": i}.')
    return config


def is_multi_worker(strategy) -> bool:
    """True for a strategy spanning several processes (usually machines)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver is not None and sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values()) > 1


def is_chief(strategy) -> bool:
    """True on the worker that writes results: the ``chief`` task, else worker 0, else the only one."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def describe_strategy(strategy) -> str:
    """One line for logs, e.g. ``MirroredStrategy, 2 replicas (/device:CPU:0, /device:CPU:1)``."""
    import tensorflow as tf

    if strategy is tf.distribute.get_strategy():
        return "default strategy (one device)"
    # tf.distribute.MultiWorkerMirroredStrategy is implemented by CollectiveAllReduceStrategy.
    public = ("MultiWorkerMirroredStrategy", "MirroredStrategy")
    name = next((n for n in public if isinstance(strategy, getattr(tf.distribute, n))), type(strategy).__name__)
    devices = ", ".join(getattr(strategy.extended, "worker_devices", ()))
    text = f"{name}, {strategy.num_replicas_in_sync} replicas"
    if is_multi_worker(strategy):
        resolver = strategy.cluster_resolver
        text += f", this process is {resolver.task_type} {resolver.task_id}"
    return text + (f" ({devices})" if devices else "")


def needs_distribution(strategy) -> bool:
    """True when ``strategy`` has more than one replica (else the plain single-device path is used)."""
    return strategy is not None and strategy.num_replicas_in_sync > 1


def shard_slices(count: int, replicas: int) -> list[slice]:
    """Split ``count`` rows into ``replicas`` contiguous slices whose sizes differ by at most one."""
    bounds = np.linspace(0, count, replicas + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds, bounds[1:])]


def run_sharded(strategy, fn, batch: np.ndarray) -> list[np.ndarray]:
    """Run ``fn`` on ``batch`` split across the replicas of ``strategy``; outputs in input order.

    Replica ``r`` gets the ``r``-th of :func:`shard_slices`, zero-padded to the longest slice so
    every replica runs the same shape; each output is gathered from all replicas onto this
    process (``strategy.gather``), and the padding is dropped.

    Args:
        strategy: a ``tf.distribute.Strategy`` (any number of replicas).
        fn: a function of one ``(n, ...)`` tensor returning a tensor or a tuple of tensors whose
            first axis is ``n`` (e.g. a traced forward pass).
        batch: the whole batch; under a multi-worker strategy every worker passes the same one.

    Returns:
        ``fn``'s outputs for the whole batch, as numpy arrays, in a list.
    """
    import tensorflow as tf

    slices = shard_slices(len(batch), strategy.num_replicas_in_sync)
    rows = max(1, max(s.stop - s.start for s in slices))

    def replica_input(context):
        part = batch[slices[context.replica_id_in_sync_group]]
        padded = np.zeros((rows, *batch.shape[1:]), batch.dtype)
        padded[:len(part)] = part
        return tf.constant(padded)

    # A plain Python wrapper: strategy.run would otherwise feed the per-replica values to a traced
    # ``fn`` as a whole, which its input signature refuses.
    inputs = strategy.experimental_distribute_values_from_function(replica_input)
    outputs = strategy.run(lambda x: fn(x), args=(inputs,))
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    results = []
    for output in outputs:
        gathered = strategy.gather(output, axis=0).numpy()
        results.append(np.concatenate([gathered[r * rows: r * rows + s.stop - s.start] for r, s in enumerate(slices)]))
    return results
