r"""The paper's job on whatever accelerator is present: training-step speed and model FLOP
utilisation, the host's decoding speed, and a short real training run, in one command.

    python benchmarks/accelerator.py --out=accelerator.json          # a GPU or TPU host, < 8 min
    python benchmarks/accelerator.py --smoke --out=/tmp/smoke.json   # any CPU, a minute

Prints, and writes as JSON:
  * the device, its peak (vendor datasheet, dense) and a measured large-matmul rate;
  * FLOPs per training image counted from the network's layers (and XLA's own count);
  * the training step (host -> device uint8 batch, on-device crops, forward, backward, SGD) at
    batch 128, 256 and 512 in bfloat16 and float32, model=1 on one device (and model=2 when
    there are two devices): images/s and MFU = FLOPs/image x images/s / peak;
  * the input pipeline with all host cores: images/s and CPU ms per image, on a prepared
    256x256 copy of the ImageNet photos in ../shared/data/imagenet_samples (or
    --samples=DIR), and on the photos at full size;
  * end-to-end images/s of a short `train_and_evaluate` run on generated data, and the share of
    its time the loop waited for input.
Each part that fails is reported with its error and the others still run.
"""
import argparse
import json
import os
import pathlib
import platform
import resource
import sys
import tempfile
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import runtime

# Dense peak TFLOP/s per chip from the vendors' datasheets, by jax's device_kind. float32 on
# NVIDIA GPUs: XLA's default precision runs float32 convolutions and matmuls as TF32 on
# Ampere and later, so TF32's peak is the ceiling; TPUs run them as bfloat16 passes.
PEAK_TFLOPS = {
    "H200": {"bfloat16": 989.4, "float32": 494.7},
    "H100": {"bfloat16": 989.4, "float32": 494.7},
    "A100": {"bfloat16": 312.0, "float32": 156.0},
    "L4": {"bfloat16": 121.0, "float32": 60.0},
    "TPU v4": {"bfloat16": 275.0, "float32": 275.0},
    "TPU v5 lite": {"bfloat16": 197.0, "float32": 197.0},
    "TPU v5p": {"bfloat16": 459.0, "float32": 459.0},
    "TPU v6 lite": {"bfloat16": 918.0, "float32": 918.0},
}
SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet_samples"


def peak_tflops(device_kind, dtype):
  for name, peaks in PEAK_TFLOPS.items():
    if name.lower() in device_kind.lower():
      return peaks[dtype]
  return None


def flops_per_image(model_cfg):
  """Training FLOPs of one image, counted layer by layer: 2 per multiply-add of every
  convolution and fully connected layer (nominal: padded taps counted, as the hardware does),
  forward once and backward twice (input and weight gradients), less conv1's input gradient,
  which nothing needs. Element-wise layers (ReLU, LRN, pooling, dropout) are left out."""
  from alexnet_jax import model
  shapes = model.param_shapes(model_cfg)
  sizes = model.feature_map_sizes(model_cfg)
  forward, conv1 = 0, 0
  for layer, (kernel, _) in shapes.items():
    macs_per_output = int(np.prod(kernel[1:-1]))  # [towers, (kh, kw,) inputs, outputs]
    outputs = kernel[0] * kernel[-1] * (sizes[layer] ** 2 if layer.startswith("conv") else 1)
    forward += 2 * macs_per_output * outputs
    conv1 = 2 * macs_per_output * outputs if layer == "conv1" else conv1
  return {"forward": forward, "training": 3 * forward - conv1}


def matmul_tflops(dtype, n, repeats=10):
  """A large square matmul's rate: what this chip reaches on the easiest work there is."""
  x = jax.random.normal(jax.random.key(0), (n, n), dtype)
  f = jax.jit(lambda a: a @ a)
  f(x).block_until_ready()
  t = time.perf_counter()
  for _ in range(repeats):
    y = f(x)
  y.block_until_ready()
  return 2 * n ** 3 * repeats / (time.perf_counter() - t) / 1e12


def paper_config(dtype, batch, smoke):
  from alexnet_jax.configs import paper
  config = paper.get_config("smoke" if smoke else None)
  config.model.dtype = dtype
  config.train.batch_size = batch
  config.data.update(mean="none", pca_noise_std=0.0)  # Constants of the same shape, no stats.
  if smoke:
    config.model.update(width=0.125, image_size=67)
    config.data.resize_size = 72
  return config


def time_step(config, model_axis, seconds):
  """images/s of the jitted training step, the batch already on the devices as uint8; the
  step's compile time; XLA's FLOP count per image."""
  from alexnet_jax import parallel, preprocess, steps
  mesh = parallel.make_mesh(model_axis)
  state = steps.create_train_state(config, mesh)
  step = steps.make_train_step(config, mesh)
  b, r = config.train.batch_size, config.data.resize_size
  rng = np.random.default_rng(0)
  batch = jax.device_put({"image": rng.integers(0, 256, (b, r, r, 3), np.uint8),
                          "label": rng.integers(0, config.model.num_classes, b, np.int32)},
                         parallel.batch_sharding(mesh))
  consts = parallel.place_replicated(mesh, preprocess.constants(config))
  t = time.perf_counter()
  compiled = step.lower(state, batch, np.float32(0.01), consts).compile()
  compile_s = time.perf_counter() - t
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  for _ in range(3):
    state, m = step(state, batch, np.float32(0.01), consts)
  jax.block_until_ready(m)
  steps, t = 0, time.perf_counter()
  while time.perf_counter() - t < seconds or steps < 5:
    for _ in range(5):
      state, m = step(state, batch, np.float32(0.01), consts)
    steps += 5
    jax.block_until_ready(m)
  elapsed = time.perf_counter() - t
  return {"images_per_s": steps * b / elapsed, "step_ms": 1e3 * elapsed / steps,
          "compile_s": compile_s, "xla_flops_per_image": float(cost.get("flops", 0)) / b,
          "loss_finite": bool(np.isfinite(float(m["loss"])))}


def step_section(args, kind, flops):
  rows = []
  model_axes = [1] + ([2] if jax.device_count() >= 2 and not args.smoke else [])
  for dtype in args.dtypes:
    for batch in args.batches:
      for model_axis in model_axes:
        config = paper_config(dtype, batch, args.smoke)
        row = {"dtype": dtype, "batch": batch, "model": model_axis}
        try:
          row.update(time_step(config, model_axis, args.step_seconds))
          peak = peak_tflops(kind, dtype)
          achieved = flops["training"] * row["images_per_s"] / 1e12
          row.update(tflops=achieved, mfu=achieved / peak if peak else None)
        except Exception as e:  # An out-of-memory batch must not hide the others.
          row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        rows.append(row)
        print(_row_text(row), flush=True)
  return rows


def _row_text(row):
  if "error" in row:
    return f"  step {row['dtype']:8s} batch {row['batch']:4d} model={row['model']}: {row['error']}"
  mfu = "n/a" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%"
  return (f"  step {row['dtype']:8s} batch {row['batch']:4d} model={row['model']}: "
          f"{row['images_per_s']:9.0f} images/s, {row['step_ms']:7.2f} ms/step, "
          f"{row['tflops']:6.1f} TFLOP/s, MFU {mfu}, compile {row['compile_s']:.0f} s")


def cpu_seconds():
  own = resource.getrusage(resource.RUSAGE_SELF)
  return own.ru_utime + own.ru_stime


def make_photo_folder(root, photos, n):
  """root/train/<class>/<k>.JPEG: the photos linked over and over to n files."""
  for k in range(n):
    photo = photos[k % len(photos)]
    folder = root / "train" / photo.name.split("_")[0]
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / f"{k:05d}{photo.suffix}"
    if not link.exists():
      os.symlink(photo.resolve(), link)


def time_input(root, batch, batches, threads=0):
  """images/s and CPU ms per image of the training input pipeline on an image folder."""
  from alexnet_jax import input_pipeline
  from alexnet_jax.configs import paper
  config = paper.get_config()
  config.data.update(source="folder", root=str(root), threads=threads, eval_split="train",
                     mean="none", pca_noise_std=0.0)
  it = input_pipeline.train_iterator(config, batch_size=batch)
  for _ in range(3):
    next(it)
  t, c = time.perf_counter(), cpu_seconds()
  for _ in range(batches):
    next(it)
  wall, cpu = time.perf_counter() - t, cpu_seconds() - c
  return {"images_per_s": batches * batch / wall, "cpu_ms_per_image": 1e3 * cpu / (batches * batch),
          "threads": threads or os.cpu_count()}


def input_section(args, tmp):
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  from alexnet_jax.configs import paper
  from alexnet_jax.data import prepare
  samples = pathlib.Path(args.samples)
  photos = sorted(p for p in samples.glob("*") if p.suffix.lower() in (".jpeg", ".jpg"))
  if not photos:
    return {"error": f"no photos in {samples}: pass --samples=DIR"}
  n = 512 if args.smoke else 4096
  full = tmp / "photos"
  make_photo_folder(full, photos, n)
  config = paper.get_config()
  config.data.update(source="folder", root=str(full))
  t = time.perf_counter()
  prepare.write_split(config, "train", str(tmp / "prepared"))
  result = {"photos": len(photos), "files": n, "prepare_s": time.perf_counter() - t}
  batch, batches = (64, 4) if args.smoke else (256, 12)
  for name, root in (("prepared_256", tmp / "prepared"), ("full_size", full)):
    result[name] = time_input(root, batch, batches)
    r = result[name]
    print(f"  input {name:12s}: {r['images_per_s']:7.0f} images/s with {r['threads']} threads, "
          f"{r['cpu_ms_per_image']:.2f} CPU ms/image", flush=True)
  return result


def end_to_end_section(args, tmp):
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  from alexnet_jax import metrics, train
  config = paper_config("bfloat16" if not args.smoke else "float32", args.e2e_batch, args.smoke)
  config.mesh.model = 1
  config.model.num_classes = 10
  config.data.update(source="generated", cache_dir=str(tmp / "cache"))
  g = config.data.generated
  g.num_classes, g.train_per_class, g.val_per_class = 10, (40 if args.smoke else 300), 4
  if args.smoke:
    g.image_size = 80
  config.train.update(num_steps=args.e2e_steps, log_every_steps=max(1, args.e2e_steps // 4))
  config.eval.update(every_epochs=1e6, ten_crop=False, batch_size=40)
  config.checkpoint.every_steps = 10 ** 9
  workdir = tmp / "e2e"
  t = time.perf_counter()
  summary = train.train_and_evaluate(config, workdir)
  rows = [r for r in metrics.read_jsonl(workdir / "metrics.jsonl") if "images_per_s" in r]
  waits = [r["input_wait_fraction"] for r in rows[1:] if np.isfinite(r["input_wait_fraction"])]
  result = {"batch": args.e2e_batch, "steps": summary["steps"], "wall_s": time.perf_counter() - t,
            "images_per_s": summary["images_per_s"],
            "input_wait_fraction": float(np.mean(waits)) if waits else None,
            "train_loss": [(r["step"], r["train_loss"]) for r in rows]}
  print(f"  end to end: {result['images_per_s']:.0f} images/s over {result['steps']} steps of "
        f"{args.e2e_batch} (input-bound {result['input_wait_fraction']})", flush=True)
  return result


def run_part(results, name, fn, *args):
  print(f"{name}:", flush=True)
  t = time.perf_counter()
  try:
    results[name] = fn(*args)
  except Exception as e:  # Report and go on: one broken part must not cost the others.
    traceback.print_exc()
    results[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
  print(f"  ({time.perf_counter() - t:.0f} s)", flush=True)


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default="accelerator.json")
  p.add_argument("--smoke", action="store_true", help="Tiny settings, for a CPU.")
  p.add_argument("--batches", type=int, nargs="+", default=None)
  p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
  p.add_argument("--step_seconds", type=float, default=None)
  p.add_argument("--samples", default=str(SAMPLES))
  p.add_argument("--e2e_batch", type=int, default=None)
  p.add_argument("--e2e_steps", type=int, default=None)
  p.add_argument("--parts", nargs="+", default=["device", "step", "input", "end_to_end"])
  args = p.parse_args(argv)
  args.batches = args.batches or ([8] if args.smoke else [128, 256, 512])
  args.step_seconds = args.step_seconds or (0.5 if args.smoke else 3.0)
  args.e2e_batch = args.e2e_batch or (8 if args.smoke else 256)
  args.e2e_steps = args.e2e_steps or (8 if args.smoke else 300)
  return args


def main(argv=None):
  args = parse_args(argv)
  runtime.configure_jax(num_cpu_devices=2 if args.smoke else 0)
  devices = jax.devices()
  kind = devices[0].device_kind
  results = {"jax": jax.__version__, "platform": devices[0].platform, "device_kind": kind,
             "devices": len(devices), "host_cpus": os.cpu_count(),
             "python": platform.python_version(),
             "smoke": args.smoke}
  print(json.dumps(results), flush=True)
  flops = flops_per_image(paper_config("float32", 1, args.smoke).model)
  results["flops_per_image"] = flops
  print(f"FLOPs per training image (counted): {flops['training'] / 1e9:.3f} G "
        f"(forward {flops['forward'] / 1e9:.3f} G)", flush=True)
  if "device" in args.parts:
    n = 512 if args.smoke else 8192
    run_part(results, "matmul_tflops", lambda: {
        jnp.dtype(dtype).name: matmul_tflops(dtype, n) for dtype in (jnp.bfloat16, jnp.float32)})
    results["peak_tflops"] = {d: peak_tflops(kind, d) for d in ("bfloat16", "float32")}
    print(f"  {kind}: datasheet {results['peak_tflops']}, measured {results['matmul_tflops']}",
          flush=True)
  if "step" in args.parts:
    run_part(results, "step", step_section, args, kind, flops)
  with tempfile.TemporaryDirectory() as tmp:
    if "input" in args.parts:
      run_part(results, "input", input_section, args, pathlib.Path(tmp))
    if "end_to_end" in args.parts:
      run_part(results, "end_to_end", end_to_end_section, args, pathlib.Path(tmp))
  pathlib.Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
  print(f"Wrote {args.out}", flush=True)
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
