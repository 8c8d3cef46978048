r"""The three recipes of configs/recipes.py at full width on Tiny ImageNet, on one GPU, each for
as many epochs as its share of --budget_s allows: long enough to see whether section 5's biases
of 1 (the paper's recipe) leave chance where the CPU study's 300 steps could not say.

    python -m experiments.gpu_recipes --pack=../shared/data/tinyimagenet200.tar.gz \
        --data=.device/tiny.tar.gz                           # here: 150 + 50 a class, < 64 MiB
    python -m experiments.gpu_recipes --data=.device/tiny.tar.gz --out=$OUT --budget_s=540
    python -m experiments.gpu_recipes --smoke --out=/tmp/gpu_recipes   # any CPU, ~1 min

The GPU machine has JAX but no TensorFlow, so this runs without tf.data: the JPEGs are decoded
once with PIL (all cores) into uint8 256x256 arrays (kept as .npy files with --cache), which
are copied to the device whole (150 images a class are 5.9 GB), and each batch is gathered
there; the crops, mirrors, mean and colour noise are the training step's own
(steps.make_train_step). The mean image and the RGB eigenvectors are computed from
the same decoded images. PIL's IDCT differs from the pipeline's by about one grey level
(benchmarks/README.md), which no recipe's outcome hangs on. Each recipe uses its config's
schedule (the paper's plateau on the centre-crop validation error, evaluated every
--eval_every epochs), batch 128, bfloat16. Written under --out: recipes.csv, recipes.md and
recipes.png (experiments/tiny_imagenet_recipes.py's report), recipes.json (each run's epochs,
speed and rate drops).
"""
import argparse
import json
import math
import multiprocessing
import os
import pathlib
import sys
import tarfile
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from experiments import tiny_imagenet_recipes as cpu_recipes  # noqa: E402  (the path above)


def pack(src, dest, train_per_class, val_per_class):
  """A .tar.gz of Tiny ImageNet's layout with the first `train_per_class` training images
  (files _0.._N-1) and the first `val_per_class` validation images of each class, from the
  dataset's archive `src`: what travels to a device machine. Returns the images kept."""
  with tempfile.TemporaryDirectory() as tmp:
    with tarfile.open(src) as t:
      t.extractall(tmp, filter="data")
    (root,) = [p.parent for p in pathlib.Path(tmp).glob("*/wnids.txt")]
    kept, per_class = [], {}
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
      wnid = line.split("\t")[1]
      per_class[wnid] = per_class.get(wnid, 0) + 1
      if per_class[wnid] <= val_per_class:
        kept.append(line)
    (root / "val" / "val_annotations.txt").write_text("\n".join(kept) + "\n")
    names = {line.split("\t")[0] for line in kept}
    count = 0
    with tarfile.open(dest, "w:gz") as out:
      for path in sorted(root.rglob("*")):
        rel = path.relative_to(root.parent)
        if path.suffix == ".JPEG":
          if path.parent.name == "images" and path.parent.parent.name == "val":
            if path.name not in names:
              continue
          elif int(path.stem.rsplit("_", 1)[1]) >= train_per_class:
            continue
          count += 1
        if path.is_file():
          out.add(path, arcname=str(rel))
  return count


def fabricate(root, classes=4, train=6, val=2, seed=0):
  """A tiny dataset in Tiny ImageNet's layout: 64x64 JPEGs, each class a tint of noise."""
  from PIL import Image
  rng = np.random.default_rng(seed)
  wnids = [f"n{k:08d}" for k in range(classes)]
  os.makedirs(os.path.join(root, "val", "images"), exist_ok=True)
  with open(os.path.join(root, "wnids.txt"), "w") as f:
    f.write("\n".join(wnids) + "\n")
  with open(os.path.join(root, "words.txt"), "w") as f:
    f.write("".join(f"{w}\tclass {k}\n" for k, w in enumerate(wnids)))
  tint = rng.uniform(40, 215, (classes, 3))
  image = lambda k: Image.fromarray(np.clip(rng.normal(tint[k], 40, (64, 64, 3)), 0, 255)
                                    .astype(np.uint8))
  lines = []
  for k, w in enumerate(wnids):
    os.makedirs(os.path.join(root, "train", w, "images"), exist_ok=True)
    for i in range(train):
      image(k).save(os.path.join(root, "train", w, "images", f"{w}_{i}.JPEG"), quality=90)
    for i in range(val):
      name = f"val_{k * val + i}.JPEG"
      image(k).save(os.path.join(root, "val", "images", name), quality=90)
      lines.append(f"{name}\t{w}\t0\t0\t63\t63")
  with open(os.path.join(root, "val", "val_annotations.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")


def _decode(args):
  path, size = args
  from PIL import Image
  with Image.open(path) as im:  # 64x64: scaled up, the shorter side to `size` (section 2).
    return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), np.uint8)


def decoded(root, split, size, cache=""):
  """(images uint8 [N, size, size, 3], labels int32 [N], classes): `split` decoded with all
  cores; with `cache`, kept there as .npy and read back by later runs instead."""
  from alexnet_jax.data import tiny_imagenet
  _, count, names, paths, labels = tiny_imagenet.read_split(root, split, lambda *a: a)
  file = os.path.join(cache, f"{split}-{size}-{count}.npy") if cache else ""
  if file and os.path.exists(file):
    return np.load(file, mmap_mode="r"), labels, names
  with multiprocessing.Pool(os.cpu_count()) as pool:
    images = np.stack(pool.map(_decode, [(p, size) for p in paths], chunksize=64))
  if file:
    np.save(file + ".tmp.npy", images)
    os.replace(file + ".tmp.npy", file)
  return images, labels, names


def constants(images, config):
  """preprocess.constants' {"mean", "pca"} from the decoded training images themselves."""
  from alexnet_jax import preprocess
  d = config.data
  total, outer, count = np.zeros(images.shape[1:]), np.zeros((3, 3)), 0
  for i in range(0, len(images), 1024):
    chunk = np.asarray(images[i:i + 1024], np.float64)
    total += chunk.sum(0)
    pixels = chunk.reshape(-1, 3)
    outer += pixels.T @ pixels
    count += len(chunk)
  mean_image = total / count
  channel = mean_image.mean((0, 1))
  eigval, eigvec = np.linalg.eigh(outer / (count * mean_image[..., 0].size) -
                                  np.outer(channel, channel))
  order = np.argsort(eigval)[::-1]
  eigval, eigvec = eigval[order], eigvec[:, order]
  mean = {"image": mean_image, "channel": np.broadcast_to(channel, mean_image.shape),
          "none": np.zeros_like(mean_image)}[d.mean]
  pca = (eigvec * preprocess.pca_scale(eigval, d.pca_scale)[None, :] if d.pca_noise_std > 0
         else np.zeros((3, 3)))
  return {"mean": mean.astype(np.float32), "pca": pca.astype(np.float32)}


def recipe_config(name, args, num_classes):
  from alexnet_jax.configs import tiny_imagenet
  config = tiny_imagenet.get_config(name)
  config.model.num_classes = num_classes
  config.model.dtype = "float32" if args.smoke else "bfloat16"
  config.mesh.model = 1
  config.train.batch_size = args.batch
  if args.smoke:
    config.model.update(width=0.125, image_size=67)
    config.data.resize_size = 72
  return config


def run_recipe(name, args, data, slot_s, workdir):
  """Trains recipe `name` for whole epochs while `slot_s` seconds last (the last evaluation
  included); writes <workdir>/<name>/metrics.jsonl as the program does. Returns its summary."""
  import jax
  import jax.numpy as jnp
  from alexnet_jax import parallel, schedule, steps
  start = time.time()
  config = recipe_config(name, args, len(data["classes"]))
  mesh = parallel.make_mesh(config)
  state = steps.create_train_state(config, mesh)
  train_step = steps.make_train_step(config, mesh)
  eval_step = steps.make_eval_step(config, mesh)
  consts = parallel.place_replicated(mesh, data["consts"][config.data.mean, config.data.pca_scale,
                                                           config.data.pca_noise_std > 0])
  batch_sharding = parallel.batch_sharding(mesh)
  gather = jax.jit(lambda images, labels, idx: {"image": images[idx], "label": labels[idx]},
                   out_shardings=batch_sharding)
  n, b = len(data["train_labels"]), config.train.batch_size
  steps_per_epoch = n // b
  sched = schedule.create(config.train, steps_per_epoch)
  run_dir = os.path.join(workdir, name)
  os.makedirs(run_dir, exist_ok=True)
  log = open(os.path.join(run_dir, "metrics.jsonl"), "w")
  write = lambda row: log.write(json.dumps(row) + "\n") or log.flush()
  rng = np.random.default_rng(config.seed)
  step, epoch, window, eval_s, drops, epoch_times = 0, 0, [], 0.0, [], []

  def evaluate():
    errors = []
    for i in range(0, len(data["val_labels"]), args.eval_batch):
      idx = jnp.arange(i, min(i + args.eval_batch, len(data["val_labels"])))
      logits = eval_step(state.params, data["val"][idx], consts, False)
      top5 = jnp.argsort(-logits, axis=-1)[:, :5] == data["val_y"][idx][:, None]
      errors.append(np.stack([np.asarray(~top5[:, 0]), np.asarray(~top5.any(-1))], 1))
    e = np.concatenate(errors).mean(0)
    return float(e[0]), float(e[1])

  epoch_s = None
  while True:
    left = slot_s - (time.time() - start)
    if epoch_s is not None and left < epoch_s + eval_s + 2:
      break
    t = time.time()
    order = rng.permutation(n)
    for k in range(steps_per_epoch):
      idx = jnp.asarray(order[k * b:(k + 1) * b])
      state, m = train_step(state, gather(data["train"], data["train_y"], idx),
                            np.float32(sched.rate(step)), consts)
      step += 1
      window.append(m)
      if step % args.log_every == 0:
        ms = jax.device_get(window)
        write({"step": step, "epoch": step / steps_per_epoch,
               "learning_rate": sched.rate(step - 1),
               **{f"train_{k}": float(np.mean([w[k] for w in ms]))
                  for k in ("loss", "top1_error", "top5_error")}})
        window = []
        if not all(math.isfinite(float(w["loss"])) for w in ms):
          raise FloatingPointError(f"{name}: a non-finite loss by step {step}")
    jax.block_until_ready(state)
    epoch += 1
    epoch_s = time.time() - t
    epoch_times.append(epoch_s)
    left = slot_s - (time.time() - start)
    if epoch % args.eval_every == 0 or left < 2 * epoch_s + eval_s + 2:
      t = time.time()
      top1, top5 = evaluate()
      eval_s = time.time() - t
      write({"step": step, "epoch": epoch, "val_top1_error": top1, "val_top5_error": top5,
             "learning_rate": sched.rate(step)})
      if sched.update(top1):
        drops.append(step)
      print(f"  {name}: epoch {epoch} step {step}, validation top-1 {100 * top1:.1f}%, top-5 "
            f"{100 * top5:.1f}%, rate {sched.rate(step):g}", flush=True)
  log.close()
  return {"recipe": name, "epochs": epoch, "steps": step, "seconds": time.time() - start,
          # The first epoch holds the compile: the speed is the later epochs' (or none).
          "train_images_per_s": (steps_per_epoch * b / np.median(epoch_times[1:])
                                 if len(epoch_times) > 1 else None),
          "rate_drops_at_steps": drops, "final_rate": sched.rate(step)}


def decode_all(args, workdir):
  """The splits decoded (before JAX starts: the decoding forks), and the step constants of each
  recipe's (mean, pca) setting."""
  root = args.root
  if args.smoke and not root:
    root = os.path.join(workdir, "fabricated")
    fabricate(root)
  elif args.data:
    with tarfile.open(args.data) as t:
      t.extractall(os.path.join(workdir, "data"), filter="data")
    (root,) = [str(p.parent) for p in pathlib.Path(workdir, "data").glob("*/wnids.txt")]
  size = 72 if args.smoke else 256
  if args.cache:
    os.makedirs(args.cache, exist_ok=True)
  t = time.time()
  train, train_y, classes = decoded(root, "train", size, args.cache)
  val, val_y, _ = decoded(root, "val", size, args.cache)
  print(f"decoded {len(train_y)} training and {len(val_y)} validation images of "
        f"{len(classes)} classes in {time.time() - t:.0f} s", flush=True)
  consts = {}
  for name in args.recipes:
    d = recipe_config(name, args, len(classes)).data
    key = (d.mean, d.pca_scale, d.pca_noise_std > 0)
    if key not in consts:
      consts[key] = constants(train, recipe_config(name, args, len(classes)))
  return {"train": train, "train_y": train_y, "val": val, "val_y": val_y, "train_labels": train_y,
          "val_labels": val_y, "classes": classes, "consts": consts}


def to_device(data):
  """The images and labels copied to the (first) device whole: batches are gathered there."""
  import jax
  for k in ("train", "train_y", "val", "val_y"):
    data[k] = jax.device_put(np.asarray(data[k]))
  return data


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default="gpu_recipes")
  p.add_argument("--budget_s", type=float, default=540.0)
  p.add_argument("--smoke", action="store_true", help="A fabricated dataset, width 1/8, a CPU.")
  p.add_argument("--data", default="", help="A .tar.gz that --pack wrote.")
  p.add_argument("--root", default="", help="A Tiny ImageNet folder instead of --data.")
  p.add_argument("--cache", default="", help="A folder keeping the decoded .npy files.")
  p.add_argument("--pack", default="", help="The dataset's archive: write --data from it, stop.")
  p.add_argument("--train_per_class", type=int, default=150)
  p.add_argument("--val_per_class", type=int, default=50)
  p.add_argument("--recipes", nargs="+", default=["paper", "cuda_convnet", "caffe"])
  p.add_argument("--batch", type=int, default=None)
  p.add_argument("--eval_every", type=int, default=2, help="Epochs between evaluations.")
  p.add_argument("--eval_batch", type=int, default=None)
  p.add_argument("--log_every", type=int, default=None, help="Steps per logged window.")
  p.add_argument("--reserve_s", type=float, default=None, help="Kept for the report.")
  args = p.parse_args(argv)
  args.batch = args.batch or (8 if args.smoke else 128)
  args.eval_batch = args.eval_batch or (8 if args.smoke else 500)
  args.log_every = args.log_every or (1 if args.smoke else 20)
  args.reserve_s = args.reserve_s if args.reserve_s is not None else (2 if args.smoke else 15)
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.pack:
    kept = pack(args.pack, args.data, args.train_per_class, args.val_per_class)
    print(f"{args.data}: {kept} images, {os.path.getsize(args.data) / 2**20:.1f} MiB")
    return 0
  start = time.time()
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory() as workdir:
    data = decode_all(args, workdir)
    from alexnet_jax import runtime
    runtime.configure_jax()
    import jax
    print(json.dumps({"jax": jax.__version__, "device": jax.devices()[0].device_kind,
                      "budget_s": args.budget_s, "smoke": args.smoke}), flush=True)
    data = to_device(data)
    runs = []
    for i, name in enumerate(args.recipes):
      left = args.budget_s - (time.time() - start) - args.reserve_s
      slot = left / (len(args.recipes) - i)
      print(f"{name}: {slot:.0f} s", flush=True)
      runs.append(run_recipe(name, args, data, slot, workdir))
      print(f"  {json.dumps(runs[-1])}", flush=True)
    chance_classes = len(data["classes"])
    rows = cpu_recipes.write_report(workdir, args.recipes, str(out / "recipes"), chance_classes)
  summary = {"runs": runs, "table": rows, "elapsed_s": time.time() - start,
             "classes": chance_classes, "train_images": int(len(data["train_labels"]))}
  (out / "recipes.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
  print(cpu_recipes.markdown(rows, chance_classes), flush=True)
  print(f"Wrote {out}/recipes.{{csv,md,png,json}} after {summary['elapsed_s']:.0f} s", flush=True)
  return summary


if __name__ == "__main__":
  main(sys.argv[1:])
