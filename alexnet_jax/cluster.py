"""Joins the processes of a multi-host run through `jax.distributed` (config.distributed).

Called by main.py before anything touches a JAX device. With mode "off" (the default) nothing
happens: one process. "auto" lets JAX read the cluster (Cloud TPU VM metadata, SLURM's
SLURM_* variables, Open MPI's OMPI_* variables, Kubernetes pods with the `kubernetes` package)
and whatever fields are set here override it; "manual" needs coordinator_address,
num_processes and process_id. JAX also reads JAX_COORDINATOR_ADDRESS and JAX_LOCAL_DEVICE_IDS.

Why the TCP probe: when the coordinator cannot be reached, XLA's client aborts the process
(a C++ CHECK, not a Python exception) with "DEADLINE_EXCEEDED ... RegisterTask". A process
other than 0 therefore first waits for the coordinator's port itself, and stops with an error
naming the address and the timeout.
"""
import logging
import os
import socket
import time

import jax

MODES = ("off", "auto", "manual")


class CoordinatorUnreachableError(ConnectionError):
  """The coordinator's address did not accept a connection within the timeout."""


def initialize(cfg):
  """jax.distributed.initialize from config.distributed; returns True if it was called."""
  if cfg.mode not in MODES:
    raise ValueError(f"config.distributed.mode={cfg.mode!r}: choose one of {MODES}.")
  if cfg.mode == "off":
    if cfg.coordinator_address or cfg.num_processes or cfg.process_id >= 0:
      raise ValueError("config.distributed.coordinator_address/num_processes/process_id are set "
                       "but config.distributed.mode='off': set --config.distributed.mode=manual "
                       "(or auto).")
    return False
  kwargs = _arguments(cfg)
  if jax.config.jax_cpu_collectives_implementation in (None, "gloo"):
    # Collectives between the CPU backends of the processes (the tests; CPU-only clusters).
    # gloo is jax 0.10's default; said explicitly since older versions had none, and an
    # `mpi` chosen by the user is left alone. Accelerators use their own (ICI, NCCL).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  address, process = kwargs.get("coordinator_address"), kwargs.get("process_id")
  timeout = cfg.initialization_timeout_s
  if address and process not in (None, 0):
    wait_for_coordinator(address, timeout)
  logging.info("jax.distributed.initialize(%s); if this process then aborts with "
               "DEADLINE_EXCEEDED, not every process reached the coordinator within %d s.",
               kwargs, timeout)
  jax.distributed.initialize(initialization_timeout=timeout, **kwargs)
  logging.info("Process %d of %d: %d local device(s) of %d.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def _arguments(cfg):
  kwargs = {}
  address = cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
  if address:
    kwargs["coordinator_address"] = address
  if cfg.num_processes:
    kwargs["num_processes"] = cfg.num_processes
  if cfg.process_id >= 0:
    kwargs["process_id"] = cfg.process_id
  if cfg.local_device_ids:
    try:
      kwargs["local_device_ids"] = [int(i) for i in str(cfg.local_device_ids).split(",")]
    except ValueError as e:
      raise ValueError(f"config.distributed.local_device_ids={cfg.local_device_ids!r}: a comma-"
                       "separated list of integers, e.g. '0,1,2,3'.") from e
  if cfg.mode == "manual":
    missing = [k for k in ("coordinator_address", "num_processes", "process_id")
               if k not in kwargs]
    if missing:
      raise ValueError(f"config.distributed.mode='manual' needs config.distributed.{missing[0]}"
                       f" (missing: {', '.join(missing)}); or use mode='auto' on Cloud TPU, "
                       "SLURM or Open MPI.")
  if "num_processes" in kwargs and "process_id" in kwargs and not (
      0 <= kwargs["process_id"] < kwargs["num_processes"]):
    raise ValueError(f"config.distributed.process_id={kwargs['process_id']} is not in "
                     f"[0, num_processes={kwargs['num_processes']}).")
  return kwargs


def wait_for_coordinator(address, timeout_s, poll_s=0.5):
  """Waits until `address` ("host:port") accepts a TCP connection; raises after timeout_s."""
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise ValueError(f"config.distributed.coordinator_address={address!r}: write host:port, "
                     "e.g. 10.0.0.2:1234.")
  host = host.strip("[]")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=max(poll_s, 1.0)):
        return
    except OSError as e:
      if time.monotonic() + poll_s > deadline:
        raise CoordinatorUnreachableError(
            f"Cannot reach the JAX coordinator at {address} within {timeout_s} s "
            f"(config.distributed.initialization_timeout_s): {e}. Start process 0 there (it "
            "hosts the coordinator), check config.distributed.coordinator_address and that the "
            "port is open between the hosts, or raise the timeout.") from e
      time.sleep(poll_s)
