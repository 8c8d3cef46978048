r"""Bytes each device sends per training step, summed from the collectives of the compiled step.

    .venv/bin/python benchmarks/wire_bytes.py                       # the table, ~20 min on 2 cores
    .venv/bin/python benchmarks/wire_bytes.py --devices 2 4 --width 0.125 --batch 16
    .venv/bin/python benchmarks/wire_bytes.py --child --devices 8 --layout towers --model 2

Nothing runs: the step of configs/paper.py is lowered and compiled for N simulated CPU devices
(one subprocess per N: the device count is fixed before JAX starts) and the collectives of its
HLO are read off. Per device, on a ring of the op's group of n devices:

  all-reduce       2 (n - 1) / n x its size     (reduce-scatter, then all-gather)
  all-gather       (n - 1) / n x its output
  reduce-scatter   (n - 1) x its output
  all-to-all       (n - 1) / n x its size
  collective-permute  its size (a device that only receives is counted too: an upper bound)

A group of one sends nothing. Each op is put to a layer: by its metadata's op_name where a
layer's name is in it, else by matching its shape against the layer's parameters (the
gradients' all-reduces, which shard_map's transpose names after nothing). A model of the step
time from these bytes is `step_model`: a model, not a measurement.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s8": 1, "u8": 1, "pred": 1,
               "f64": 8, "s64": 8, "u64": 8}
# `%name = shape kind(` with shape a tensor or a tuple of tensors; -start ops are the async form.
_OP = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\(.*?\)|\w+\[[\d,]*\](?:\{[^}]*\})?)\s+"
                 r"(" + "|".join(KINDS) + r")(-start)?\(")
_TENSOR = re.compile(r"(\w+)\[([\d,]*)\]")
_GTE = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\w+\[[\d,]*\])\S*\s+get-tuple-element\("
                  r"%?([\w.\-]+)\),\s*index=(\d+)")


def tensor_bytes(shape_text):
  """Bytes of a shape `f32[2,3]{1,0}` or a tuple of them; tokens and u32[] contexts of async
  starts are counted only where they are tensors of the op's own dtype."""
  total = 0
  for dtype, dims in _TENSOR.findall(shape_text):
    if dtype in DTYPE_BYTES:
      total += DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
  return total


def group_size(line, num_devices):
  """n of the op's replica groups: `{{0,1},{2,3}}`, the iota form `[4,2]<=[8]`, or none (all)."""
  m = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", line)
  if m:
    return int(m.group(2))
  m = re.search(r"replica_groups=\{(\{[\d,]*\})", line)
  if m:
    first = m.group(1).strip("{}")
    return len(first.split(",")) if first else num_devices
  if "source_target_pairs" in line:
    return 2
  return num_devices


def sent_bytes(kind, size, n):
  """Bytes one device sends for an op of `size` bytes (its output; for all-reduce and all-to-all
  the two are equal) over a ring of n devices."""
  if n <= 1:
    return 0.0
  return {"all-reduce": 2 * (n - 1) / n * size, "all-gather": (n - 1) / n * size,
          "reduce-scatter": (n - 1) * size, "all-to-all": (n - 1) / n * size,
          "collective-permute": float(size)}[kind]


def collectives(hlo_text, num_devices):
  """[{name, kind, shape, bytes, group, sent, parts, position}] of every collective in
  `hlo_text`, in the order of the entry computation's schedule. `parts` is [(bytes, op_name)]:
  one per tensor of a combined (tuple) op, each named by the get-tuple-element that reads it
  (XLA's combiner merges the gradients of every layer into one all-reduce)."""
  ops, elements = [], {}
  for line in hlo_text.splitlines():
    m = _GTE.match(line)
    if m:
      meta = re.search(r'op_name="([^"]*)"', line)
      elements.setdefault(m.group(3), {})[int(m.group(4))] = (
          tensor_bytes(m.group(2)), meta.group(1) if meta else "")
  for position, line in enumerate(hlo_text.splitlines()):
    m = _OP.match(line)
    if not m:
      continue
    name, shape, kind, start = m.groups()
    size = tensor_bytes(shape)
    if start and shape.startswith("("):  # An async start returns (operands, outputs[, ctx]).
      size = _async_output_bytes(shape, kind)
    n = group_size(line, num_devices)
    meta = re.search(r'op_name="([^"]*)"', line)
    parts = [(size, meta.group(1) if meta else "")]
    if shape.startswith("(") and name in elements and not start:
      parts = [elements[name][i] for i in sorted(elements[name])]
    ops.append({"name": name, "kind": kind, "shape": shape, "bytes": size, "group": n,
                "sent": sent_bytes(kind, size, n), "parts": parts, "position": position})
  return ops


def _async_output_bytes(shape, kind):
  parts = _TENSOR.findall(shape)
  tensors = [(d, dims) for d, dims in parts if d in DTYPE_BYTES and dims]
  half = tensors[len(tensors) // 2:] if kind != "all-reduce" else tensors[:len(tensors) // 2]
  return sum(DTYPE_BYTES[d] * math.prod(int(x) for x in dims.split(",")) for d, dims in half)


def layer_of(op_name):
  """The layer whose name is in an op's op_name ("other": the loss's sums, the exchanges that
  a layer's module does not name)."""
  for layer in LAYERS:
    if re.search(rf"\b{layer}\b", op_name):
      return layer
  return "other"


def by_layer(ops):
  """Bytes sent per layer: a combined op's bytes shared out by its tensors' sizes."""
  out = {}
  for op in ops:
    total = sum(size for size, _ in op["parts"]) or 1
    for size, op_name in op["parts"]:
      layer = layer_of(op_name)
      out[layer] = out.get(layer, 0.0) + op["sent"] * size / total
  return out


def measure(layout, model, batch, width, num_devices):
  """Compiles config's training step on this process's devices; returns the table row."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from alexnet_jax import parallel, steps
  from alexnet_jax.configs import paper

  config = paper.get_config()
  config.model.width = width
  config.train.batch_size = batch
  config.mesh.model = model
  config.mesh.layout = layout
  mesh = parallel.make_mesh(config)
  state = steps.abstract_state(config, mesh)
  size = config.data.resize_size
  batch_spec = parallel.batch_sharding(mesh)
  images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8, sharding=batch_spec)
  labels = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=batch_spec)
  rep = parallel.replicated(mesh)
  lr = jax.ShapeDtypeStruct((), jnp.float32, sharding=rep)
  consts = {"mean": jax.ShapeDtypeStruct((size, size, 3), jnp.float32, sharding=rep),
            "pca": jax.ShapeDtypeStruct((3, 3), jnp.float32, sharding=rep)}
  step = steps.make_train_step(config, mesh)
  compiled = step.lower(state, {"image": images, "label": labels}, lr, consts).compile()
  text = compiled.as_text()
  ops = collectives(text, num_devices)
  by_kind = {}
  for op in ops:
    by_kind[op["kind"]] = by_kind.get(op["kind"], 0.0) + op["sent"]
  return {"layout": layout, "devices": num_devices, "mesh": dict(mesh.shape), "batch": batch,
          "width": width, "sent_mb": sum(op["sent"] for op in ops) / 1e6,
          "by_layer_mb": {k: v / 1e6 for k, v in by_layer(ops).items()},
          "by_kind_mb": {k: v / 1e6 for k, v in by_kind.items()},
          "overlap": schedule_overlap(text, ops),
          "ops": [{k: op[k] for k in ("kind", "shape", "group", "sent")} for op in ops],
          "params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)))}


def schedule_overlap(hlo_text, ops):
  """Where, in the entry computation's order, the all-reduces carrying conv gradients sit
  against the fully connected layers' backward work (ops named transpose(...)/fc6-8): before
  its last op, XLA's schedule leaves room to overlap them; after it, they wait for it. Reads
  the order only."""
  lines = hlo_text.splitlines()
  entry = next((i for i, line in enumerate(lines) if line.startswith("ENTRY")), 0)
  conv = [op["position"] for op in ops if op["kind"] == "all-reduce" and op["position"] > entry
          and any(layer_of(name).startswith("conv") for _, name in op["parts"])]
  fc_backward = [i for i, line in enumerate(lines) if i > entry and "transpose(" in line
                 and re.search(r"\s(fusion|dot|convolution|custom-call)\(", line)
                 and re.search(r'op_name="[^"]*\b(fc6|fc7|fc8)\b', line)]
  if not conv:
    return "no conv gradient all-reduce"
  last = max(fc_backward, default=-1)
  early = sum(p < last for p in conv)
  return f"{early} of {len(conv)} conv-gradient all-reduces before the fc layers' last backward op"


# The H200's measured training step (benchmarks/README.md, accelerator.py): images/s at the
# paper's batch of 128, bfloat16 and float32.
H200_IMAGES_PER_S = {"bfloat16": 20593, "float32": 15786}
LINKS_GBS = {"NVLink, one host": 450.0, "between hosts": 50.0}


def modelled_mb(layout, n, batch, model_cfg=None):
  """Bytes per device per step from the layers' sizes, by the ring rules above, float32: what
  the compiled HLO gave at 2-8 devices (the table), carried to device counts not compiled.
  towers: the gradient all-reduce of one tower's parameters over n/2 data rows, plus the tower
  exchanges (measured at 62.6 MB for 128 rows a device, proportional to the rows); hybrid: the
  conv gradients' all-reduce, and fc6's, fc7's and fc8's exchanges over the whole batch."""
  from alexnet_jax.configs import paper
  from alexnet_jax.nets import alexnet
  cfg = paper.get_config().model if model_cfg is None else model_cfg
  shapes = alexnet.param_shapes(cfg)
  size = {layer: 4 * sum(math.prod(s) for s in shapes[layer]) for layer in shapes}
  ring = lambda k: 2 * (k - 1) / k if k > 1 else 0.0
  if layout == "towers":
    data = n // 2
    return (ring(data) * sum(size.values()) / 2 + 62.6e6 * batch / n / 128) / 1e6
  conv = sum(v for k, v in size.items() if k.startswith("conv"))
  widths, pool5 = alexnet.tower_widths(cfg), alexnet.feature_map_sizes(cfg)["pool5"]
  features = 2 * (widths["conv5"] * pool5**2 + widths["fc6"]) + cfg.num_classes
  return (ring(n) * conv + ring(n) * 4 * batch * features) / 1e6


def step_model(n, batch, dtype="bfloat16"):
  """Seconds per step, modelled, for each layout and link: the H200's measured compute for
  batch / n images, plus the bytes over the link, nothing overlapped. A model, not a
  measurement: the link is the ring's slowest (between hosts beyond 8 devices)."""
  compute = batch / n / H200_IMAGES_PER_S[dtype]
  link = LINKS_GBS["NVLink, one host"] if n <= 8 else LINKS_GBS["between hosts"]
  return {layout: compute + modelled_mb(layout, n, batch) * 1e6 / (link * 1e9)
          for layout in ("towers", "hybrid")} | {"compute": compute, "link_gbs": link}


def print_model():
  print("Modelled step time (not measured): H200 compute at its measured images/s (bfloat16),")
  print("plus the float32 bytes per device over the slowest link, without overlap.")
  print("| devices | global batch | link GB/s | compute ms | towers MB | towers ms | hybrid MB "
        "| hybrid ms |")
  print("|---|---|---|---|---|---|---|---|")
  for n in (8, 64, 256):
    for batch in sorted({128, 128 * n, 8192}):
      m = step_model(n, batch)
      print(f"| {n} | {batch} | {m['link_gbs']:.0f} | {1e3 * m['compute']:.2f} | "
            f"{modelled_mb('towers', n, batch):.0f} | {1e3 * m['towers']:.2f} | "
            f"{modelled_mb('hybrid', n, batch):.0f} | {1e3 * m['hybrid']:.2f} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--devices", type=int, nargs="+", default=[2, 4, 8])
  parser.add_argument("--layout", nargs="+", default=["towers", "data", "hybrid"],
                      help="towers (data x model 2), data (towers layout, model 1), hybrid")
  parser.add_argument("--batch", type=int, nargs="+", default=[128],
                      help="global batches; 0 means 128 per device")
  parser.add_argument("--model", type=int, default=0, help="--child: the mesh's model axis")
  parser.add_argument("--width", type=float, default=1.0)
  parser.add_argument("--child", action="store_true", help="measure one case in this process")
  parser.add_argument("--out", default="", help="also write the rows to this JSON file")
  parser.add_argument("--model-table", action="store_true",
                      help="print the modelled step times for 8, 64 and 256 devices only")
  args = parser.parse_args()
  if args.model_table:
    return print_model()
  if args.child:
    return child(args)
  rows = []
  for n in args.devices:
    for layout in args.layout:
      for batch in args.batch:
        row = run_child(n, layout, batch or 128 * n, args.width)
        rows.append(row)
        print(summary_line(row), flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(rows, f, indent=1)


def child(args):
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import jax

  from alexnet_jax import runtime
  runtime.configure_jax(num_cpu_devices=args.devices[0])
  jax.config.update("jax_platforms", "cpu")
  row = measure(args.layout[0], args.model, args.batch[0], args.width, args.devices[0])
  print("ROW " + json.dumps(row))


def run_child(n, layout, batch, width):
  """One subprocess per case: the simulated device count is fixed at JAX's start."""
  model, name = {"towers": (2, "towers"), "data": (1, "towers"), "hybrid": (2, "hybrid")}[layout]
  cmd = [sys.executable, __file__, "--child", "--devices", str(n), "--layout", name,
         "--model", str(model), "--batch", str(batch), "--width", str(width)]
  out = subprocess.run(cmd, capture_output=True, text=True, check=False)
  rows = [line[4:] for line in out.stdout.splitlines() if line.startswith("ROW ")]
  if out.returncode or not rows:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
  row = json.loads(rows[0])
  row["name"] = layout
  return row


def summary_line(row):
  layers = " ".join(f"{k}={v:.1f}" for k, v in sorted(row["by_layer_mb"].items()) if v)
  mesh = "x".join(f"{k}{v}" for k, v in row["mesh"].items())
  return (f"{row['name']:7s} N={row['devices']:<3d} {mesh:15s} batch={row['batch']:<5d} "
          f"sent/device={row['sent_mb']:8.1f} MB  [{layers}]  {row['overlap']}")


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main()
