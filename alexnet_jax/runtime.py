"""Before JAX starts: `configure_jax`, called by every entry point first, and `initialize`, the
meeting of a multi-host run's processes (docs/several_hosts.md, docs/design.md "Start-up")."""
import logging
import os
import socket
import time

import jax

from alexnet_jax import errors

# YNNPACK for matmuls only: its convolution gradients are slow (benchmarks/README.md, "Choices
# in the code made for speed on a CPU"). Ignored on GPU/TPU; a flag named in XLA_FLAGS wins.
CPU_XLA_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "individual_dot"}


def configure_jax(num_cpu_devices: int = 0, xla_flags=None) -> None:
  """Call it before JAX's backends and TensorFlow load: they read these settings once."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  # Quiets oneDNN's start-up lines (docs/design.md, "Start-up"); tf.data does not use it.
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  flags = os.environ.get("XLA_FLAGS", "")
  extra = [f"--{name}={value}" for name, value in {**CPU_XLA_FLAGS, **(xla_flags or {})}.items()
           if name not in flags]
  if extra:
    os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()
  if num_cpu_devices:
    jax.config.update("jax_num_cpu_devices", num_cpu_devices)


MODES = ("off", "auto", "manual")
_NEEDED = ("coordinator_address", "num_processes", "process_id")  # By manual mode, rendezvous.


class CoordinatorUnreachableError(errors.UserError, ConnectionError):
  """The coordinator's address did not accept a connection within the timeout."""


class MissingProcessesError(errors.UserError, ConnectionError):
  """Not every process of the run reached the coordinator within the timeout."""


def initialize(cfg):
  """jax.distributed.initialize from config.distributed; returns True if it was called."""
  if cfg.mode not in MODES:
    raise errors.ConfigError(f"config.distributed.mode={cfg.mode!r}: choose one of {MODES}.")
  if cfg.mode == "off":
    if cfg.coordinator_address or cfg.num_processes or cfg.process_id >= 0:
      raise errors.ConfigError(
          "config.distributed.coordinator_address/num_processes/process_id are set but "
          "config.distributed.mode='off': set --config.distributed.mode=manual (or auto).")
    return False
  kwargs = _arguments(cfg)
  if jax.config.jax_cpu_collectives_implementation in (None, "gloo"):
    # CPU processes' collectives (tests, CPU clusters): gloo, named for older jax; mpi kept.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if all(k in kwargs for k in _NEEDED):
    rendezvous(*(kwargs[k] for k in _NEEDED), cfg.initialization_timeout_s)
  logging.info("jax.distributed.initialize(%s)", kwargs)
  jax.distributed.initialize(initialization_timeout=cfg.initialization_timeout_s, **kwargs)
  logging.info("Process %d of %d: %d local device(s) of %d.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def _arguments(cfg):
  kwargs = {"coordinator_address": (cfg.coordinator_address or
                                    os.environ.get("JAX_COORDINATOR_ADDRESS") or None),
            "num_processes": cfg.num_processes or None,
            "process_id": cfg.process_id if cfg.process_id >= 0 else None}
  kwargs = {k: v for k, v in kwargs.items() if v is not None}  # None: detected (auto mode).
  if cfg.local_device_ids:
    try:
      kwargs["local_device_ids"] = [int(i) for i in str(cfg.local_device_ids).split(",")]
    except ValueError as e:
      raise errors.ConfigError(f"config.distributed.local_device_ids={cfg.local_device_ids!r}: "
                               "a comma-separated list of integers, e.g. '0,1,2,3'.") from e
  missing = [k for k in _NEEDED if k not in kwargs] if cfg.mode == "manual" else []
  if missing:
    raise errors.ConfigError(
        f"config.distributed.mode='manual' needs config.distributed.{missing[0]} (missing: "
        f"{', '.join(missing)}); or use mode='auto' on Cloud TPU, SLURM or Open MPI.")
  if "num_processes" in kwargs and "process_id" in kwargs and not (
      0 <= kwargs["process_id"] < kwargs["num_processes"]):
    raise errors.ConfigError(f"config.distributed.process_id={kwargs['process_id']} is not in "
                             f"[0, num_processes={kwargs['num_processes']}).")
  return kwargs


_HELLO = "alexnet_jax rendezvous"
_GRACE_S = 10  # For a connected peer's reply, and for it to hang up after "go".


def rendezvous(address, num_processes, process_id, timeout_s):
  """Meets every process before JAX's client, which aborts (no Python error) if one is missing."""
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise errors.ConfigError(f"config.distributed.coordinator_address={address!r}: write "
                             "host:port, e.g. 10.0.0.2:1234.")
  deadline = time.monotonic() + timeout_s
  if num_processes == 1:
    return
  if process_id == 0:
    _gather(int(port), address, num_processes, timeout_s, deadline)
  else:
    _join(host.strip("[]"), int(port), address, num_processes, process_id, timeout_s, deadline)


def _gather(port, address, num_processes, timeout_s, deadline):
  """Process 0: waits for the ids of processes 1..n-1, then says go (or why not) to each."""
  dual = socket.has_dualstack_ipv6()  # On every address, as JAX's service binds ([::]:port).
  try:
    server = socket.create_server(("", port), family=socket.AF_INET6 if dual else socket.AF_INET,
                                  dualstack_ipv6=dual)
  except OSError as e:
    raise MissingProcessesError(
        f"Process 0 cannot listen on port {port} of config.distributed.coordinator_address="
        f"{address}: {e}. Another program (or a run still exiting) holds it: wait, or choose "
        "another port.") from e
  peers = []  # (process id, connection) of each process that said hello.
  try:
    with server:
      while len(peers) < num_processes - 1 and time.monotonic() < deadline:
        hello = _accept(server, deadline)
        if hello is None:
          continue
        n, i, conn = hello
        if n != num_processes:
          problem = (f"process {i} has config.distributed.num_processes={n}, process 0 "
                     f"{num_processes}")
        elif i in dict(peers):  # Each process has checked its own id against num_processes.
          problem = f"two processes have config.distributed.process_id={i}"
        else:
          problem = None
        peers.append((i, conn))
        if problem:
          _tell(peers, f"abort {problem}")
          raise MissingProcessesError(
              f"Process 0 stops: {problem}. Give every process the same "
              "config.distributed.num_processes and its own process_id.")
    missing = [i for i in range(1, num_processes) if i not in dict(peers)]
    if missing:
      reason = (f"process(es) {', '.join(map(str, missing))} of config.distributed."
                f"num_processes={num_processes} did not reach {address} within {timeout_s} s "
                "(config.distributed.initialization_timeout_s)")
      _tell(peers, f"abort {reason}")
      raise MissingProcessesError(
          f"Process 0 stops: {reason}. Start every process with the same command and its own "
          "config.distributed.process_id, check that they can reach this host's port "
          f"{port}, or raise the timeout.")
    _tell(peers, "go")
  finally:
    for _, conn in peers:
      conn.close()


def _accept(server, deadline):
  """(num_processes, process_id, connection) of the next process that says hello, or None."""
  server.settimeout(max(0.01, deadline - time.monotonic()))
  try:
    conn, _ = server.accept()
  except socket.timeout:
    return None
  conn.settimeout(min(_GRACE_S, max(0.01, deadline - time.monotonic())))
  try:
    *hello, n, i = _read_line(conn).split()
    if " ".join(hello) == _HELLO:
      return int(n), int(i), conn
  except (OSError, ValueError):
    pass
  conn.close()  # A port scanner or a stray client: not one of ours.
  return None


def _tell(peers, word):
  """Says `word` to every peer, then lets each hang up first: no TIME_WAIT for JAX to trip on."""
  for _, conn in peers:
    try:
      conn.sendall(word.encode() + b"\n")
    except OSError:
      pass
  for _, conn in peers:
    conn.settimeout(_GRACE_S)
    try:
      conn.recv(1)
    except OSError:
      pass


def _join(host, port, address, num_processes, process_id, timeout_s, deadline, poll_s=0.5):
  """Processes 1..n-1: connect to process 0, say who they are, wait for its word."""
  while True:
    try:
      conn = socket.create_connection((host, port), timeout=max(poll_s, 1.0))
      break
    except OSError as e:
      if time.monotonic() + poll_s > deadline:
        raise CoordinatorUnreachableError(
            f"Cannot reach the JAX coordinator at {address} within {timeout_s} s "
            f"(config.distributed.initialization_timeout_s): {e}. Start process 0 there (it "
            "hosts the coordinator), check config.distributed.coordinator_address and that the "
            "port is open between the hosts, or raise the timeout.") from e
      time.sleep(poll_s)
  with conn:
    conn.sendall(f"{_HELLO} {num_processes} {process_id}\n".encode())
    # A little longer than process 0 waits, to hear why it gave up.
    conn.settimeout(max(0.01, deadline + _GRACE_S / 2 - time.monotonic()))
    try:
      word = _read_line(conn)
    except socket.timeout:
      word = ""
  if word == "go":
    return
  if word.startswith("abort "):
    raise MissingProcessesError(f"Process {process_id} stops: process 0 at {address} says "
                                f"{word[len('abort '):]}.")
  raise MissingProcessesError(
      f"Process {process_id} stops: process 0 at {address} did not give the word to start "
      f"within {timeout_s} s (config.distributed.initialization_timeout_s); it may have "
      "stopped, or other processes are missing: see its output.")


def _read_line(conn):
  with conn.makefile("rb") as lines:
    return lines.readline(4096).decode(errors="replace").strip()
