"""Before JAX starts: `configure_jax` (XLA flags, CPU devices, TensorFlow's logging), called by
every entry point first, and `initialize`, the meeting of a multi-host run's processes
(config.distributed; docs/several_hosts.md, docs/design.md "Start-up")."""
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
  """Adds CPU_XLA_FLAGS and `xla_flags` to XLA_FLAGS (unless named there), splits the CPU into
  `num_cpu_devices` and quiets TensorFlow. Call it before JAX's backends and TensorFlow load."""
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
          "config.distributed.coordinator_address/num_processes/process_id are set "
          "but config.distributed.mode='off': set --config.distributed.mode=manual "
          "(or auto).")
    return False
  kwargs = _arguments(cfg)
  if jax.config.jax_cpu_collectives_implementation in (None, "gloo"):
    # CPU processes' collectives (tests, CPU clusters): gloo, named for older jax; mpi kept.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  timeout = cfg.initialization_timeout_s
  if all(k in kwargs for k in ("coordinator_address", "num_processes", "process_id")):
    rendezvous(kwargs["coordinator_address"], kwargs["num_processes"], kwargs["process_id"],
               timeout)
  logging.info("jax.distributed.initialize(%s)", kwargs)
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
      raise errors.ConfigError(
          f"config.distributed.local_device_ids={cfg.local_device_ids!r}: a comma-"
          "separated list of integers, e.g. '0,1,2,3'.") from e
  if cfg.mode == "manual":
    missing = [k for k in ("coordinator_address", "num_processes", "process_id")
               if k not in kwargs]
    if missing:
      raise errors.ConfigError(
          f"config.distributed.mode='manual' needs config.distributed.{missing[0]}"
          f" (missing: {', '.join(missing)}); or use mode='auto' on Cloud TPU, "
          "SLURM or Open MPI.")
  if "num_processes" in kwargs and "process_id" in kwargs and not (
      0 <= kwargs["process_id"] < kwargs["num_processes"]):
    raise errors.ConfigError(f"config.distributed.process_id={kwargs['process_id']} is not in "
                             f"[0, num_processes={kwargs['num_processes']}).")
  return kwargs


_HELLO = "alexnet_jax rendezvous"
_GRACE_S = 10  # For a connected peer's reply, and for it to hang up after "go".


def rendezvous(address, num_processes, process_id, timeout_s):
  """Returns once all processes have met on `address`'s port (process 0 has closed it again);
  else MissingProcessesError or CoordinatorUnreachableError in every one within `timeout_s`."""
  host, port = _split(address)
  deadline = time.monotonic() + timeout_s
  if num_processes == 1:
    return
  if process_id == 0:
    _gather(port, address, num_processes, timeout_s, deadline)
  else:
    _join(host, port, address, num_processes, process_id, timeout_s, deadline)


def _gather(port, address, num_processes, timeout_s, deadline):
  """Process 0: waits for the ids of processes 1..n-1, then says go (or why not) to each."""
  try:  # On every address, as JAX's service binds ([::]:port).
    if socket.has_dualstack_ipv6():
      server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
    else:
      server = socket.create_server(("", port))
  except OSError as e:
    raise MissingProcessesError(
        f"Process 0 cannot listen on port {port} of config.distributed.coordinator_address="
        f"{address}: {e}. Another program (or a run still exiting) holds it: wait, or choose "
        "another port.") from e
  peers = {}
  try:
    with server:
      while len(peers) < num_processes - 1 and time.monotonic() < deadline:
        problem = _accept_one(server, peers, num_processes, deadline)
        if problem:
          _tell(peers, f"abort {problem}")
          raise MissingProcessesError(
              f"Process 0 stops: {problem}. Give every process the same "
              "config.distributed.num_processes and its own process_id.")
    missing = [i for i in range(1, num_processes) if i not in peers]
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
    for conn in peers.values():
      conn.close()


def _accept_one(server, peers, num_processes, deadline):
  """Adds the next process that connects to `peers`; returns what is wrong with it, if any."""
  server.settimeout(max(0.01, deadline - time.monotonic()))
  try:
    conn, _ = server.accept()
  except socket.timeout:
    return None
  conn.settimeout(min(_GRACE_S, max(0.01, deadline - time.monotonic())))
  try:
    words = _read_line(conn).split()
    n, i = int(words[-2]), int(words[-1])
  except (OSError, IndexError, ValueError):
    words = []
  if " ".join(words[:-2]) != _HELLO:
    conn.close()  # A port scanner or a stray client: not one of ours.
    return None
  problem = None
  if n != num_processes:
    problem = (f"process {i} has config.distributed.num_processes={n}, process 0 "
               f"{num_processes}")
  elif i in peers:
    problem = f"two processes have config.distributed.process_id={i}"
  elif not 0 < i < num_processes:
    problem = f"a process has config.distributed.process_id={i}, not in [1, {num_processes})"
  if problem:
    _tell({i: conn}, f"abort {problem}")
    conn.close()
  else:
    peers[i] = conn
  return problem


def _tell(peers, word):
  """Says `word` to every peer, then lets each hang up first: no TIME_WAIT for JAX to trip on."""
  for conn in peers.values():
    try:
      conn.sendall(word.encode() + b"\n")
    except OSError:
      pass
  for conn in peers.values():
    conn.settimeout(_GRACE_S)
    try:
      conn.recv(1)
    except OSError:
      pass


def _join(host, port, address, num_processes, process_id, timeout_s, deadline):
  """Processes 1..n-1: connect to process 0, say who they are, wait for its word."""
  conn = _connect(host, port, address, timeout_s, deadline)
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


def _connect(host, port, address, timeout_s, deadline, poll_s=0.5):
  while True:
    try:
      return socket.create_connection((host, port), timeout=max(poll_s, 1.0))
    except OSError as e:
      if time.monotonic() + poll_s > deadline:
        raise CoordinatorUnreachableError(
            f"Cannot reach the JAX coordinator at {address} within {timeout_s} s "
            f"(config.distributed.initialization_timeout_s): {e}. Start process 0 there (it "
            "hosts the coordinator), check config.distributed.coordinator_address and that the "
            "port is open between the hosts, or raise the timeout.") from e
      time.sleep(poll_s)


def _read_line(conn):
  data = b""
  while not data.endswith(b"\n") and len(data) < 4096:
    chunk = conn.recv(4096)
    if not chunk:
      break
    data += chunk
  return data.decode(errors="replace").strip()


def _split(address):
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise errors.ConfigError(
        f"config.distributed.coordinator_address={address!r}: write host:port, "
        "e.g. 10.0.0.2:1234.")
  return host.strip("[]"), int(port)
