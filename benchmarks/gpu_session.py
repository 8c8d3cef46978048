r"""One GPU session's open questions, in one command that stops by itself inside --budget_s:

    python benchmarks/gpu_session.py --out=$OUT --budget_s=540        # one H200, < 9 min
    python benchmarks/gpu_session.py --smoke --out=/tmp/gpu_session   # any CPU, ~1 min

The parts, in this order, each begun only while the budget left covers its estimate (a part
skipped says so), the JSON rewritten after each one so that a kill keeps what was done:
  audit     the default bfloat16 training step compiled; its convolutions and matrix products
            (HLO `convolution` and `dot`, or on a GPU the cuDNN and cuBLAS custom calls) with
            their operand and result types, and whether each runs on bfloat16 operands;
  products  config.impl.product_output "compute" (the default: bfloat16 results, float32
            sums inside the library) against "float32" (float32 results, which XLA:GPU
            computes as float32 convolutions), timed in interleaved rounds at batch 128 and 512,
            each with its compiled HLO's audit and its first losses;
  profile   the default step's top XLA ops at batch 128 and 512 (alexnet_jax/profiling.py);
  variants  pool_grad, conv1_channels=4, tower_conv=grouped and model1_gathers=False
            against the default, in interleaved rounds (accelerator.py's VARIANTS);
  torch     with --torch: benchmarks/torch_nets.py (torch.compile, bfloat16 autocast) at batch
            128 and 512 beside JAX's step, in a child process given what time is left.

Everything is written under --out: session.json (and, from benchmarks/device_run.sh,
session.log). The timing and profiling functions are accelerator.py's.
"""
import argparse
import json
import os
import pathlib
import re
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import accelerator  # noqa: E402  (the path above, for `python benchmarks/...`)

TRIMMED_VARIANTS = ("default", "pool_grad=reduce_window", "conv1_channels=4",
                    "tower_conv=grouped", "model1_gathers=False")
PRODUCT_OUTPUTS = ("compute", "float32")
# Seconds each part takes on one H200 (compiles of 13-16 s measured there, the rest estimated);
# a part starts only while the budget left covers its estimate times --estimate_scale.
ESTIMATES = {"audit": 25, "products": 100, "profile": 30, "variants": 170, "torch": 150}
_DEF = re.compile(r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*(?P<type>.+?)\s+"
                  r"(?P<op>[a-z][\w\-]*)\((?P<args>.*)$")
_TYPE = re.compile(r"\b(pred|[subf]\d+|bf16|f8\w*|c64|c128)\[")
_LIBRARY = re.compile(r'custom_call_target="(?P<t>__cudnn\$conv\w*|__cublas\$\w*(?:\$\w+)*)"')


def product_ops(hlo_text):
  """[{name, op, target, operands, result}] of the convolutions and matrix products of a
  compiled module's text: `convolution` and `dot` instructions (also inside fusions, where a
  GPU's Triton GEMMs keep theirs) and the cuDNN convolution and cuBLAS custom calls, each with
  its operands' element types (looked up by name: compiled HLO prints operands by name only)
  and its result's (a custom call's workspace, a u8 or s8 buffer, left out)."""
  types, rows = {}, []
  for line in hlo_text.splitlines():
    m = _DEF.match(line)
    if not m:
      continue
    result = _TYPE.findall(m["type"])
    types[m["name"]] = result[0] if result else None
    target = _LIBRARY.search(line)
    if m["op"] not in ("convolution", "dot") and not (m["op"] == "custom-call" and target):
      continue
    args = m["args"].split(")", 1)[0] if m["op"] != "custom-call" else m["args"].split("),")[0]
    names = re.findall(r"%([\w.\-]+)", args)
    inline = _TYPE.findall(args)
    operands = [types.get(n) for n in names] if names else inline
    rows.append({"name": m["name"], "op": m["op"], "target": target["t"] if target else "",
                 "operands": operands, "result": [t for t in result if t not in ("u8", "s8")]})
  return rows


def verdict(row):
  """"bfloat16" when both multiplied operands are (the first two: a fused cuDNN convolution's
  bias and side input follow them), "float32" when both are (TF32 on an NVIDIA GPU at XLA's
  default precision), else "mixed"."""
  kinds = set(row["operands"][:2])
  return {frozenset({"bf16"}): "bfloat16", frozenset({"f32"}): "float32"}.get(frozenset(kinds),
                                                                             "mixed")


def lowered_products(stablehlo_text):
  """{"convolution"|"dot_general": {"(operand types) -> result type": count}}: what JAX asks the
  compiler for, before any platform's passes."""
  counts = {}
  for line in stablehlo_text.splitlines():
    m = re.search(r"stablehlo\.(convolution|dot_general)\b.*:\s*\((.*)\)\s*->\s*(.*)$", line)
    if m:
      elem = lambda s: re.findall(r"x?(bf16|f32|f16|f64)>", s)
      key = f"({', '.join(elem(m[2]))}) -> {', '.join(elem(m[3]))}"
      counts.setdefault(m[1], {}).setdefault(key, 0)
      counts[m[1]][key] += 1
  return counts


def audit(compiled_text):
  rows = product_ops(compiled_text)
  for row in rows:
    row["runs_as"] = verdict(row)
  counts = {}
  for row in rows:
    kind = "convolution" if row["op"] == "convolution" or "conv" in row["target"] else "matmul"
    counts.setdefault(kind, {}).setdefault(row["runs_as"], 0)
    counts[kind][row["runs_as"]] += 1
  return {"ops": rows, "counts": counts,
          "all_bfloat16": bool(rows) and all(r["runs_as"] == "bfloat16" for r in rows)}


def audit_text(result, title):
  lines = [f"  {title}: " + ", ".join(f"{kind} {dict(c)}" for kind, c in result["counts"].items())]
  for row in result["ops"]:
    what = row["target"] or row["op"]
    lines.append(f"    {row['name']:<32s} {what:<30s} ({', '.join(map(str, row['operands']))})"
                 f" -> {', '.join(row['result'])}: {row['runs_as']}")
  return "\n".join(lines)


def audit_part(args):
  """The default bfloat16 step's compiled HLO, audited; the module's text kept beside it."""
  config = accelerator.config_for(args, "bfloat16", args.variant_batch)
  step, state, batch, consts = accelerator.prepared_step(config, args.variant_model)
  import numpy as np
  lowered = step.lower(state, batch, np.float32(0.01), consts)
  text = lowered.compile().as_text()
  (pathlib.Path(args.out) / "default_step.hlo.txt").write_text(text)
  result = {"lowered": lowered_products(lowered.as_text()), **audit(text)}
  print(f"  asked for (StableHLO): {result['lowered']}", flush=True)
  print(audit_text(result, f"compiled, product_output={config.impl.product_output}, "
                   f"batch {args.variant_batch}"), flush=True)
  return {"product_output": config.impl.product_output, **result}


def products_part(args, batches, deadline):
  """product_output "compute" against "float32" at each batch: both compiled and audited, then
  timed in args.variant_rounds interleaved rounds; the first three losses of each."""
  import numpy as np
  rows = []
  for batch in batches:
    if time.time() + ESTIMATES["products"] / 2 * args.estimate_scale > deadline:
      rows.append({"batch": batch, "skipped": "budget"})
      continue
    cases = {}
    for out in PRODUCT_OUTPUTS:
      config = accelerator.config_for(args, "bfloat16", batch, {"impl.product_output": out})
      cases[out] = accelerator.compiled_step(config, args.variant_model)
      step, state, b, consts = cases[out]["run"]
      lowered = step.lower(state, b, np.float32(0.01), consts)
      cases[out]["audit"] = {"lowered": lowered_products(lowered.as_text()),
                             **audit(lowered.compile().as_text())}
    timings = {out: [] for out in cases}
    for i in range(args.variant_rounds):
      for out in (PRODUCT_OUTPUTS if i % 2 == 0 else PRODUCT_OUTPUTS[::-1]):
        timings[out].append(accelerator.run_steps(cases[out],
                                                  args.step_seconds / args.variant_rounds))
    row = {"batch": batch}
    for out, case in cases.items():
      row[out] = {**case["row"], **accelerator._speed(case, timings[out]),
                  "lowered": case["audit"]["lowered"], "counts": case["audit"]["counts"]}
    a, b = (np.asarray(row[o]["first_losses"]) for o in PRODUCT_OUTPUTS)
    row["loss_rel_diff"] = float(np.max(np.abs(a - b) / np.abs(b)))
    row["compute_over_float32"] = row["compute"]["images_per_s"] / row["float32"]["images_per_s"]
    print(f"  batch {batch}: " + ", ".join(
        f"{o} {row[o]['images_per_s']:.0f} images/s (spread {100 * row[o]['spread']:.1f}%), "
        f"losses {[round(x, 5) for x in row[o]['first_losses']]}" for o in PRODUCT_OUTPUTS)
        + f"; compute/float32 {row['compute_over_float32']:.3f}, losses' largest relative "
        f"difference {row['loss_rel_diff']:.2e}", flush=True)
    rows.append(row)
    cases.clear()
  return rows


def profile_part(args, batches, deadline):
  result = {}
  for batch in batches:
    if time.time() + ESTIMATES["profile"] / 2 * args.estimate_scale > deadline:
      result[str(batch)] = {"skipped": "budget"}
      continue
    args.variant_batch = batch
    result[str(batch)] = accelerator.profile_section(args)
  args.variant_batch = batches[0]
  return result


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default="gpu_session")
  p.add_argument("--budget_s", type=float, default=540.0)
  p.add_argument("--smoke", action="store_true", help="Tiny width and batches, for a CPU.")
  p.add_argument("--parts", nargs="+", default=["audit", "products", "profile", "variants"],
                 choices=list(ESTIMATES))
  p.add_argument("--torch", action="store_true", help="Also the torch part, last.")
  p.add_argument("--batches", type=int, nargs="+", default=None)
  p.add_argument("--estimate_scale", type=float, default=None,
                 help="Multiplies ESTIMATES (default 1 on an accelerator, 0.2 with --smoke).")
  own, rest = p.parse_known_args(argv)
  batches = own.batches or ([8, 16] if own.smoke else [128, 512])
  if "--variants" not in rest:
    rest = ["--variants", *TRIMMED_VARIANTS, *rest]
  shared = accelerator.parse_args(
      [*(["--smoke"] if own.smoke else []), "--batches", *map(str, batches),
       f"--variant_batch={batches[0]}", "--torch_nets", "two_tower", "torchvision",
       "--torch_modes", "compile", *rest])
  shared.xla_flags = []  # Child processes cost a compile each: accelerator.py times them.
  for k, v in vars(own).items():
    setattr(shared, k, v)
  shared.batches = batches
  shared.estimate_scale = own.estimate_scale or (0.2 if own.smoke else 1.0)
  return shared


def main(argv=None):
  args = parse_args(argv)
  start = time.time()
  deadline = start + args.budget_s
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  if args.torch:  # The torch child runs last, beside this process's JAX: leave it room.
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
  from alexnet_jax import runtime
  runtime.configure_jax(num_cpu_devices=2 if args.smoke else 0)
  import jax
  device = jax.devices()[0]
  results = {"jax": jax.__version__, "platform": device.platform,
             "device_kind": device.device_kind, "budget_s": args.budget_s, "smoke": args.smoke,
             "batches": args.batches, "parts": {}}
  print(json.dumps({k: v for k, v in results.items() if k != "parts"}), flush=True)
  parts = {"audit": lambda: audit_part(args),
           "products": lambda: products_part(args, args.batches, deadline),
           "profile": lambda: profile_part(args, args.batches, deadline),
           "variants": lambda: accelerator.variants_section(args),
           "torch": lambda: accelerator.torch_section(args, accelerator.run_torch(args),
                                                      results)}
  for name in [*args.parts, *(["torch"] if args.torch and "torch" not in args.parts else [])]:
    left = deadline - time.time()
    if left < ESTIMATES[name] * args.estimate_scale:
      print(f"{name}: skipped, {left:.0f} s of the budget left (estimate "
            f"{ESTIMATES[name] * args.estimate_scale:.0f} s)", flush=True)
      results["parts"][name] = {"skipped": f"budget: {left:.0f} s left"}
      continue
    args.child_timeout = max(10.0, left - 15)
    accelerator.run_part(results["parts"], name, parts[name])
    results["elapsed_s"] = time.time() - start
    (out / "session.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
  results["elapsed_s"] = time.time() - start
  (out / "session.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
  print(f"Wrote {out / 'session.json'} after {results['elapsed_s']:.0f} s", flush=True)
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
