r"""The paper's network and torchvision's `alexnet` in PyTorch, timed as JAX's step is timed:
for benchmarks/accelerator.py --torch, which runs this file in a process of its own before JAX
starts on the device (JAX reserves most of a GPU's memory when it starts).

    python benchmarks/torch_nets.py --spec='{"batches": [128], ...}' --out=torch.json

Both nets train with SGD (momentum 0.9, weight decay 5e-4, torch.optim's rule) under bfloat16
autocast in channels_last, eager and under torch.compile, on whatever device torch finds. The
batch sits on the device as uint8 images [B, R, R, 3], as JAX's does; each step cuts one crop
of the batch (a random offset and mirror for the whole batch, where JAX draws them per image),
converts it to float and subtracts a mean, then runs the network, the loss and the update.
torch is imported by the functions here only: it is no dependency of the package.
"""
import argparse
import collections
import json
import math
import os
import pathlib
import sys
import time

# What accelerator.torch_spec passes; these defaults are the paper's network at batch 128.
DEFAULT_SPEC = {
    "widths": {"conv1": 48, "conv2": 128, "conv3": 192, "conv4": 192, "conv5": 128,
               "fc6": 2048, "fc7": 2048},  # Per tower, as alexnet.tower_widths gives them.
    "image_size": 224, "overhang": 3, "resize_size": 256, "pool5": 6, "num_classes": 1000,
    "lrn": {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}, "pool": [3, 2], "dropout": 0.5,
    "batches": [128], "nets": ["two_tower", "torchvision"], "modes": ["eager", "compile"],
    "dtype": "bfloat16", "seconds": 3.0, "min_steps": 5, "warmup": 3,
}


def two_tower(torch, spec):
  """Figure 2 with the towers as grouped convolutions: conv2, conv4 and conv5 read their own
  tower (groups=2), conv3 and the dense layers both. torch's LocalResponseNorm divides alpha
  by the window (Caffe's convention), so the paper's alpha is passed times n. 224x224 inputs
  get conv1's overhang as zero rows and columns below and right, as alexnet.conv1_overhang."""
  nn, w, t = torch.nn, spec["widths"], 2
  lrn = spec["lrn"]
  norm = lambda: nn.LocalResponseNorm(lrn["size"], alpha=lrn["alpha"] * lrn["size"],
                                      beta=lrn["beta"], k=lrn["k"])
  pool = lambda: nn.MaxPool2d(*spec["pool"])
  o, fc_in = spec["overhang"], t * w["conv5"] * spec["pool5"] ** 2
  layers = [
      ("overhang", nn.ZeroPad2d((0, o, 0, o))),
      ("conv1", nn.Conv2d(3, t * w["conv1"], 11, stride=4)), ("relu1", nn.ReLU()),
      ("norm1", norm()), ("pool1", pool()),
      ("conv2", nn.Conv2d(t * w["conv1"], t * w["conv2"], 5, padding=2, groups=t)),
      ("relu2", nn.ReLU()), ("norm2", norm()), ("pool2", pool()),
      ("conv3", nn.Conv2d(t * w["conv2"], t * w["conv3"], 3, padding=1)), ("relu3", nn.ReLU()),
      ("conv4", nn.Conv2d(t * w["conv3"], t * w["conv4"], 3, padding=1, groups=t)),
      ("relu4", nn.ReLU()),
      ("conv5", nn.Conv2d(t * w["conv4"], t * w["conv5"], 3, padding=1, groups=t)),
      ("relu5", nn.ReLU()), ("pool5", pool()), ("flatten", nn.Flatten()),
      ("fc6", nn.Linear(fc_in, t * w["fc6"])), ("relu6", nn.ReLU()),
      ("drop6", nn.Dropout(spec["dropout"])),
      ("fc7", nn.Linear(t * w["fc6"], t * w["fc7"])), ("relu7", nn.ReLU()),
      ("drop7", nn.Dropout(spec["dropout"])),
      ("fc8", nn.Linear(t * w["fc7"], spec["num_classes"]))]
  return nn.Sequential(collections.OrderedDict(layers))


def load_jax_params(torch, net, params, spec):
  """Copies alexnet_jax's global parameters (NumPy, tower axis first) into two_tower's layers:
  tower t's outputs are channels [t F, (t + 1) F), and fc6's inputs are reordered from the
  flattened HWC of JAX's pool5 to torch's CHW."""
  towers, size = 2, spec["pool5"]
  for name, p in params.items():
    k, b = p["kernel"], p["bias"]
    if name == "fc6":
      k = k.reshape(towers, size, size, -1, k.shape[-1]).transpose(0, 4, 3, 1, 2)
    elif name.startswith("conv"):
      k = k.transpose(0, 4, 3, 1, 2)  # [T, F, C, kh, kw]
    else:
      k = k.transpose(0, 2, 1)
    layer = getattr(net, name)
    with torch.no_grad():
      layer.weight.copy_(torch.from_numpy(k.reshape(layer.weight.shape).copy()))
      layer.bias.copy_(torch.from_numpy(b.reshape(-1).copy()))


def torchvision_alexnet(torch, spec):
  """torchvision's one-tower variant (64-192-384-256-256 kernels, no LRN, an adaptive average
  pool to 6x6), at its own width whatever spec's."""
  import torchvision
  return torchvision.models.alexnet(num_classes=spec["num_classes"])


NETS = {"two_tower": two_tower, "torchvision": torchvision_alexnet}


def count_params(net):
  return sum(p.numel() for p in net.parameters())


def make_step(torch, net, spec, device, batch, compiled):
  """run() -> loss tensor: one crop of the uint8 batch (eager: its offset changes every step,
  which torch.compile would specialise on), then the network, backward and SGD (compiled
  with `compiled`), on `device`."""
  r, s = spec["resize_size"], spec["image_size"]
  gen = torch.Generator().manual_seed(0)
  images = torch.randint(0, 256, (batch, r, r, 3), dtype=torch.uint8, generator=gen)
  images = images.to(device).permute(0, 3, 1, 2)  # NCHW view of NHWC memory: channels_last.
  labels = torch.randint(0, spec["num_classes"], (batch,), generator=gen).to(device)
  opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
  loss_fn = torch.nn.CrossEntropyLoss()
  dtype = getattr(torch, spec["dtype"])

  def train(crop):
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
      loss = loss_fn(net(crop), labels)
    loss.backward()
    opt.step()
    return loss

  if compiled:  # Every case compiles afresh: dynamo would fall back to eager after 8 versions.
    torch._dynamo.reset()
    train = torch.compile(train)
  offsets = torch.randint(0, r - s + 1, (64, 2), generator=gen).tolist()
  calls = [0]

  def run():
    y, x = offsets[calls[0] % len(offsets)]
    calls[0] += 1
    crop = images[:, :, y:y + s, x:x + s]
    crop = torch.flip(crop, dims=(3,)) if calls[0] % 2 else crop
    return train((crop.float() - 120.0).contiguous(memory_format=torch.channels_last))

  return run


def time_case(torch, spec, net_name, mode, batch, device):
  """{"images_per_s", "step_ms", "first_s", "loss_finite", "params"} of one net and mode."""
  torch.manual_seed(0)
  net = NETS[net_name](torch, spec).to(device).to(memory_format=torch.channels_last)
  run = make_step(torch, net, spec, device, batch, compiled=mode == "compile")
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  t = time.perf_counter()
  for _ in range(spec["warmup"]):
    loss = run()
  sync()
  first = time.perf_counter() - t
  steps, t = 0, time.perf_counter()
  while time.perf_counter() - t < spec["seconds"] or steps < spec["min_steps"]:
    loss = run()
    steps += 1
  sync()
  elapsed = time.perf_counter() - t
  return {"images_per_s": steps * batch / elapsed, "step_ms": 1e3 * elapsed / steps,
          "first_s": first, "loss_finite": bool(math.isfinite(float(loss.detach()))),
          "params": count_params(net)}


def run_all(spec):
  """Every (batch, net, mode) of `spec` as rows; a case that fails is a row with its error."""
  import torch
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  torch.backends.cudnn.benchmark = True  # Tunes convolutions, as XLA's autotuner does.
  if device.type == "cpu":
    torch.set_num_threads(os.cpu_count())
  rows = []
  for batch in spec["batches"]:
    for net_name in spec["nets"]:
      for mode in spec["modes"]:
        row = {"net": net_name, "mode": mode, "batch": batch}
        try:
          row.update(time_case(torch, spec, net_name, mode, batch, device))
        except Exception as e:  # No torchvision, no compiler, out of memory: say, go on.
          row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
        rows.append(row)
        print(row_text(row), flush=True)
  return {"torch": torch.__version__, "device": str(device),
          "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
          "rows": rows}


def row_text(row):
  head = f"  torch {row['net']:11s} {row['mode']:7s} batch {row['batch']:4d}: "
  if "error" in row:
    return head + row["error"]
  return head + (f"{row['images_per_s']:9.0f} images/s, {row['step_ms']:7.2f} ms/step, "
                 f"first steps {row['first_s']:.0f} s")


def main(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--spec", default="{}", help="JSON; keys of DEFAULT_SPEC to override.")
  p.add_argument("--out", required=True)
  args = p.parse_args(argv)
  spec = {**DEFAULT_SPEC, **json.loads(args.spec)}
  pathlib.Path(args.out).write_text(json.dumps(run_all(spec), indent=2) + "\n")


if __name__ == "__main__":
  main(sys.argv[1:])
