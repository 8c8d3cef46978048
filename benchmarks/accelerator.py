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
    its time the loop waited for input;
  * with --parts variants: the step done otherwise, each variant a config switch whose default
    is the step above (VARIANTS), and under XLA flags set in a child process (XLA_FLAGS), with
    each one's speed against the default and whether its losses are the default's: the table
    that picks an accelerator's defaults;
  * with --parts profile: the default step's XLA ops that take longest (alexnet_jax/profiling.py);
  * with --torch: the same network and torchvision's alexnet in PyTorch (benchmarks/torch_nets,
    eager and torch.compile, bfloat16 autocast, channels_last, SGD with momentum) on the same
    device and batches, beside JAX's bfloat16 step, and JAX's images/s over PyTorch's best.

    python benchmarks/accelerator.py --parts variants profile --out=variants.json  # ~8 min
    python benchmarks/accelerator.py --parts step --torch --dtypes bfloat16 --batches 128 256 \
        --out=torch.json                                                           # ~6 min
    python benchmarks/accelerator.py --smoke --parts variants profile --torch  # a CPU, ~10 min
Each part that fails is reported with its error and the others still run.
"""
import argparse
import importlib.util
import json
import os
import pathlib
import platform
import resource
import subprocess
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
TORCH_NETS = pathlib.Path(__file__).resolve().with_name("torch_nets.py")

# The step done otherwise: config overrides, each off by default, and what its numbers are
# beside the default's ("same": equal up to float rounding; "rounded": bfloat16 LRN; "draws":
# other random numbers, the same laws).
VARIANTS = {
    "default": ({}, "same"),
    "pool_grad=reduce_window": ({"impl.pool_grad": "reduce_window"}, "same"),
    "lrn_dtype=compute": ({"impl.lrn_dtype": "compute"}, "rounded"),
    "tower_conv=grouped": ({"impl.tower_conv": "grouped"}, "same"),
    "conv1_channels=4": ({"impl.conv1_channels": 4}, "same"),
    "conv1_channels=8": ({"impl.conv1_channels": 8}, "same"),
    "model1_gathers=False": ({"impl.model1_gathers": False}, "same"),
    "product_output=float32": ({"impl.product_output": "float32"}, "rounded"),
    "crop_op=gather": ({"data.crop_op": "gather"}, "same"),
    "rng_impl=rbg": ({"rng_impl": "rbg"}, "draws"),
    "rng_impl=unsafe_rbg": ({"rng_impl": "unsafe_rbg"}, "draws"),
}
# XLA flags (without their leading --) timed on the default step, each in a child process.
XLA_FLAG_VARIANTS = ("xla_gpu_autotune_level=0", "xla_gpu_autotune_level=1",
                     "xla_gpu_enable_command_buffer=", "xla_gpu_enable_triton_gemm=false")


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
  from alexnet_jax.nets import alexnet
  shapes = alexnet.param_shapes(model_cfg)
  sizes = alexnet.feature_map_sizes(model_cfg)
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


def prepared_step(config, model_axis):
  """(step, state, batch, consts): the jitted training step on a fresh state, and a uint8
  batch and the data constants already on the devices."""
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
  return step, state, batch, consts


def config_for(args, dtype, batch, overrides=None):
  """paper_config with --width and a variant's overrides ({"impl.pool_grad": "reduce_window"})."""
  config = paper_config(dtype, batch, args.smoke)
  if args.width:
    config.model.width = args.width
  config.update_from_flattened_dict(overrides or {})
  return config


def time_step(config, model_axis, seconds):
  """images/s of the jitted training step, the batch already on the devices as uint8; the
  step's compile time; XLA's FLOP count per image; the losses of the first three steps."""
  case = compiled_step(config, model_axis)
  steps, elapsed = run_steps(case, seconds)
  return {**case["row"], **_speed(case, [(steps, elapsed)])}


def compiled_step(config, model_axis):
  """{"row": compile time, XLA's FLOPs, first losses; "run": [step, state, batch, consts]},
  three steps taken (the first ones, which allocate)."""
  step, state, batch, consts = prepared_step(config, model_axis)
  b = config.train.batch_size
  t = time.perf_counter()
  compiled = step.lower(state, batch, np.float32(0.01), consts).compile()
  compile_s = time.perf_counter() - t
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  losses = []
  for _ in range(3):
    state, m = step(state, batch, np.float32(0.01), consts)
    losses.append(m["loss"])
  jax.block_until_ready(m)
  return {"row": {"compile_s": compile_s, "xla_flops_per_image": float(cost.get("flops", 0)) / b,
                  "first_losses": [float(x) for x in losses]},
          "run": [step, state, batch, consts], "batch": b}


def run_steps(case, seconds):
  """(steps, seconds) of at least 5 steps in groups of 5 for `seconds`; the state moves on."""
  step, state, batch, consts = case["run"]
  steps, t = 0, time.perf_counter()
  while time.perf_counter() - t < seconds or steps < 5:
    for _ in range(5):
      state, m = step(state, batch, np.float32(0.01), consts)
    steps += 5
    jax.block_until_ready(m)
  case["run"][1], case["last_loss"] = state, m["loss"]
  return steps, time.perf_counter() - t


def _speed(case, timings):
  """images/s and ms/step: the median over rounds of (steps, seconds); spread: the rounds'
  (slowest - fastest) / median, how far apart two rows must be to differ."""
  per_step = [elapsed / steps for steps, elapsed in timings]
  step_s = float(np.median(per_step))
  return {"images_per_s": case["batch"] / step_s, "step_ms": 1e3 * step_s,
          "rounds": len(timings), "spread": (max(per_step) - min(per_step)) / step_s,
          "loss_finite": bool(np.isfinite(float(case["last_loss"])))}


def step_section(args, kind, flops):
  rows = []
  model_axes = [1] + ([2] if jax.device_count() >= 2 and not args.smoke else [])
  for dtype in args.dtypes:
    for batch in args.batches:
      for model_axis in model_axes:
        config = config_for(args, dtype, batch)
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


def variants_section(args):
  """The step under each of args.variants (VARIANTS), all compiled first, then timed in
  args.variant_rounds interleaved rounds (the median kept, so drift favours none); then under
  each of args.xla_flags in a child process beside a child with none. Each row against its
  own default."""
  cases, rows = {}, []
  for name in args.variants:
    overrides, numbers = VARIANTS[name]
    row = {"variant": name, "overrides": overrides, "numbers": numbers}
    try:
      config = config_for(args, args.variant_dtype, args.variant_batch, overrides)
      cases[name] = compiled_step(config, args.variant_model)
      row.update(cases[name]["row"])
    except Exception as e:  # A variant that does not compile here must not hide the others.
      row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    print(f"  {name}: " + (row.get("error") or f"compiled in {row['compile_s']:.1f} s, losses "
                           f"{row['first_losses']}"), flush=True)
    rows.append(row)
  timings = {name: [] for name in cases}
  for i in range(args.variant_rounds):
    for name in (list(cases) if i % 2 == 0 else list(cases)[::-1]):
      timings[name].append(run_steps(cases[name], args.step_seconds / args.variant_rounds))
  for row in rows:
    if row["variant"] in cases:
      row.update(_speed(cases[row["variant"]], timings[row["variant"]]))
  cases.clear()  # Frees the states before the children start.
  if args.xla_flags:
    rows += [flags_row(args, flags) for flags in ("", *args.xla_flags)]
  print(variants_table(args, rows), flush=True)
  return {"dtype": args.variant_dtype, "batch": args.variant_batch, "model": args.variant_model,
          "rows": rows}


def flags_row(args, flags):
  """The default step in a child process with XLA_FLAGS += --<flag> for each of `flags`: XLA
  reads its flags once, when the backend starts. Unknown flags make XLA abort the child, which
  the row reports."""
  extra = " ".join(f"--{f}" for f in flags.split())
  row = {"variant": f"XLA_FLAGS {extra or '(child, none added)'}", "xla_flags": extra,
         "numbers": "same", "child": True}
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / "child.json"
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--parts", "variants",
           "--variants", "default", "--xla_flags", f"--out={out}",
           f"--variant_batch={args.variant_batch}", f"--variant_dtype={args.variant_dtype}",
           f"--variant_model={args.variant_model}", f"--step_seconds={args.step_seconds}",
           f"--variant_rounds={args.variant_rounds}",
           *(["--smoke"] if args.smoke else []), *([f"--width={args.width}"] if args.width else [])]
    # This process's JAX already holds most of a GPU's memory: the child allocates as it goes.
    env = dict(os.environ, XLA_FLAGS=" ".join([os.environ.get("XLA_FLAGS", ""), extra]).strip())
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.child_timeout)
    if done.returncode or not out.exists():
      tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
      row["error"] = f"child exited {done.returncode}: {tail[0][:200]}"
    else:
      child = json.loads(out.read_text())["variants"]["rows"][0]
      row.update({k: v for k, v in child.items() if k not in ("variant", "overrides", "numbers")})
  print(f"  {row['variant']}: " + (row.get("error") or f"{row['images_per_s']:.0f} images/s"),
        flush=True)
  return row


def variants_table(args, rows):
  """images/s, ms/step, speed and loss against the default (the in-process default for the
  config variants, the child without flags for the XLA flags), and the fastest variant that
  computes the default's numbers: what a GPU run decides the defaults from."""
  base = {False: _first_ok(r for r in rows if r["variant"] == "default"),
          True: _first_ok(r for r in rows if r.get("child") and not r["xla_flags"])}
  lines = [f"Variants of the training step: {args.variant_dtype}, batch {args.variant_batch}, "
           f"model={args.variant_model}",
           f"  {'variant':56s} {'images/s':>9s} {'ms/step':>8s} {'spread':>6s} {'speed':>6s} "
           f"{'compile s':>9s}  {'loss rel. diff':>14s}  numbers"]
  for r in rows:
    ref = base[bool(r.get("child"))]
    if "error" in r:
      lines.append(f"  {r['variant']:56s} {r['error']}")
      continue
    speed = r["images_per_s"] / ref["images_per_s"] if ref else float("nan")
    diff = (max(abs(a - b) / abs(b) for a, b in zip(r["first_losses"], ref["first_losses"]))
            if ref else float("nan"))
    r.update(speed_vs_default=speed, loss_rel_diff=diff)
    lines.append(f"  {r['variant']:56s} {r['images_per_s']:9.0f} {r['step_ms']:8.2f} "
                 f"{100 * r['spread']:5.1f}% {speed:6.3f} {r['compile_s']:9.1f}  {diff:14.2e}  "
                 f"{r['numbers']}")
  return "\n".join(lines + [_verdict(rows, base)])


def _verdict(rows, base):
  """The fastest variant computing the default's numbers, and whether its lead over its
  default exceeds the two rows' spreads over the rounds (else it is no clear win)."""
  same = [r for r in rows if "error" not in r and r["numbers"] == "same"
          and np.isfinite(r.get("speed_vs_default", np.nan))]
  if not same:
    return "  No variant timed."
  best = max(same, key=lambda r: r["speed_vs_default"])
  lead, noise = best["speed_vs_default"] - 1, best["spread"] + base[bool(best.get("child"))][
      "spread"]
  clear = "a clear win" if lead > noise else "within the rounds' spread: no clear win"
  return (f"  Fastest with the default's numbers: {best['variant']} ({100 * lead:+.1f}% against "
          f"its default; spreads {100 * noise:.1f}%): {clear}.")


def _first_ok(rows):
  return next((r for r in rows if "error" not in r), None)


def profile_section(args):
  """The default step's top XLA ops over args.profile_steps steps (config.profile_steps's
  table, alexnet_jax/profiling.py), after three untraced steps."""
  from alexnet_jax import profiling
  config = config_for(args, args.variant_dtype, args.variant_batch)
  step, state, batch, consts = prepared_step(config, args.variant_model)
  n, lr = args.profile_steps, np.float32(0.01)
  for _ in range(3):
    state, m = step(state, batch, lr, consts)
  jax.block_until_ready(m)
  with tempfile.TemporaryDirectory() as logdir:
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0
    jax.profiler.start_trace(logdir, profiler_options=options)
    for _ in range(n):
      state, m = step(state, batch, lr, consts)
    jax.block_until_ready(m)
    jax.profiler.stop_trace()
    ops, total = profiling.top_ops(profiling.latest_trace(logdir), n=15)
  print(f"  {args.variant_dtype}, batch {args.variant_batch}, model={args.variant_model}, {n} "
        f"steps, all ops {1e3 * total / n:.2f} ms/step:\n" + profiling.format_top_ops(
            (ops, total), n), flush=True)
  return {"steps": n, "all_ops_ms_per_step": 1e3 * total / n,
          "top_ops": [{"op": op, "ms_per_step": 1e3 * sec / n, "share": sec / total,
                       "calls_per_step": calls / n} for op, sec, calls in ops]}


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
  from alexnet_jax.data import input_pipeline
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


def torch_net_spec(config):
  """The network of `config` as benchmarks/torch_nets.two_tower builds it (alpha as the paper
  writes it, whatever config.model.lrn_convention)."""
  from alexnet_jax.nets import alexnet
  cfg = config.model
  alpha = cfg.lrn_alpha if cfg.lrn_convention == "paper" else cfg.lrn_alpha / cfg.lrn_n
  return {"widths": alexnet.tower_widths(cfg), "image_size": cfg.image_size,
          "overhang": alexnet.conv1_overhang(cfg.image_size),
          "resize_size": config.data.resize_size,
          "pool5": alexnet.feature_map_sizes(cfg)["pool5"], "num_classes": cfg.num_classes,
          "lrn": {"size": cfg.lrn_n, "alpha": alpha, "beta": cfg.lrn_beta, "k": cfg.lrn_k},
          "pool": [cfg.pool_window, cfg.pool_stride], "dropout": cfg.dropout_rate}


def torch_spec(args):
  """What benchmarks/torch_nets.py builds and times: this config's network at args.batches."""
  return {**torch_net_spec(config_for(args, "bfloat16", 1)), "batches": args.batches,
          "nets": args.torch_nets, "modes": args.torch_modes, "dtype": "bfloat16",
          "seconds": args.step_seconds, "min_steps": 2 if args.smoke else 5,
          "warmup": 1 if args.smoke else 3}


def run_torch(args):
  """torch_nets.py in a child process, before this one starts JAX on the device: JAX would
  hold most of a GPU's memory from its start on. Its rows print as they come."""
  print("torch (a child process, before JAX starts):", flush=True)
  if importlib.util.find_spec("torch") is None:
    print("  torch is not installed: pip install torch torchvision", flush=True)
    return {"error": "torch is not installed (pip install torch torchvision)"}
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / "torch.json"
    done = subprocess.run([sys.executable, str(TORCH_NETS), "--spec", json.dumps(torch_spec(args)),
                           f"--out={out}"], timeout=args.child_timeout)
    if done.returncode or not out.exists():
      return {"error": f"benchmarks/torch_nets.py exited {done.returncode}"}
    return json.loads(out.read_text())


def torch_section(args, torch_results, results):
  """JAX's bfloat16 model=1 step (the step part's rows where it ran) beside torch's rows, and
  JAX's images/s over the best of each torch net at each batch."""
  if "error" in torch_results:
    return torch_results
  from alexnet_jax import nets
  steps_done = results.get("step") if isinstance(results.get("step"), list) else []
  table = []
  for batch in args.batches:
    jax_row = next((r for r in steps_done if "error" not in r and (r["dtype"], r["batch"],
                    r["model"]) == ("bfloat16", batch, 1)), None)
    jax_row = jax_row or time_step(config_for(args, "bfloat16", batch), 1, args.step_seconds)
    entry = {"batch": batch, "jax": jax_row["images_per_s"]}
    for r in torch_results["rows"]:
      if r["batch"] == batch:
        entry[f"{r['net']} {r['mode']}"] = r.get("images_per_s", float("nan"))
    for net in args.torch_nets:
      best = max((r["images_per_s"] for r in torch_results["rows"]
                  if r["batch"] == batch and r["net"] == net and "error" not in r), default=None)
      entry[f"jax / {net} best"] = entry["jax"] / best if best else None
    table.append(entry)
  params = nets.count_params(nets.abstract_params(config_for(args, "bfloat16", 1).model))
  torch_params = {r["net"]: r["params"] for r in torch_results["rows"] if "params" in r}
  print(torch_table(table, torch_results, params, torch_params), flush=True)
  return {**torch_results, "jax_params": params, "table": table}


def torch_table(table, torch_results, params, torch_params):
  lines = [f"Training step, bfloat16, images/s on {torch_results['device_name']} (torch "
           f"{torch_results['torch']}; JAX model=1): parameters JAX {params:,}, torch "
           + ", ".join(f"{net} {n:,}" for net, n in torch_params.items())]
  keys = [k for k in table[0] if k != "batch"] if table else []
  lines.append("  batch " + " ".join(f"{k:>22s}" for k in keys))
  for entry in table:
    cells = ["n/a" if entry.get(k) is None else (f"{entry[k]:.3f}" if "/" in k else
                                                f"{entry[k]:.0f}") for k in keys]
    lines.append(f"  {entry['batch']:5d} " + " ".join(f"{c:>22s}" for c in cells))
  return "\n".join(lines)


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
  p.add_argument("--parts", nargs="+", default=["device", "step", "input", "end_to_end"],
                 help="Also: variants, profile.")
  p.add_argument("--width", type=float, default=None, help="config.model.width of every part.")
  p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
  p.add_argument("--xla_flags", nargs="*", default=list(XLA_FLAG_VARIANTS),
                 help="XLA flags without their leading --, each timed in a child process.")
  p.add_argument("--variant_batch", type=int, default=None)
  p.add_argument("--variant_dtype", default="bfloat16")
  p.add_argument("--variant_model", type=int, default=1)
  p.add_argument("--variant_rounds", type=int, default=3)
  p.add_argument("--profile_steps", type=int, default=5)
  p.add_argument("--torch", action="store_true", help="PyTorch's step beside JAX's.")
  p.add_argument("--torch_nets", nargs="+", default=["two_tower", "torchvision"])
  p.add_argument("--torch_modes", nargs="+", default=["eager", "compile"])
  p.add_argument("--child_timeout", type=float, default=1200)
  args = p.parse_args(argv)
  args.batches = args.batches or ([8] if args.smoke else [128, 256, 512])
  args.variant_batch = args.variant_batch or (8 if args.smoke else 128)
  args.step_seconds = args.step_seconds or (0.5 if args.smoke else 3.0)
  args.e2e_batch = args.e2e_batch or (8 if args.smoke else 256)
  args.e2e_steps = args.e2e_steps or (8 if args.smoke else 300)
  return args


def main(argv=None):
  args = parse_args(argv)
  runtime.configure_jax(num_cpu_devices=2 if args.smoke else 0)
  torch_results = run_torch(args) if args.torch else None
  devices = jax.devices()
  kind = devices[0].device_kind
  results = {"jax": jax.__version__, "platform": devices[0].platform, "device_kind": kind,
             "devices": len(devices), "host_cpus": os.cpu_count(),
             "python": platform.python_version(),
             "smoke": args.smoke}
  print(json.dumps(results), flush=True)
  flops = flops_per_image(config_for(args, "float32", 1).model)
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
  if args.torch:
    run_part(results, "torch", torch_section, args, torch_results, results)
  if "variants" in args.parts:
    run_part(results, "variants", variants_section, args)
  if "profile" in args.parts:
    run_part(results, "profile", profile_section, args)
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
