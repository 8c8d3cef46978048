"""Whether a checkpoint fits the run that reads it: `model_fingerprint`, stored with each step,
and `check`, naming every difference; `upgrade` brings an older run's config.json to today's
fields where it is read."""
import json

import jax
import ml_collections

from alexnet_jax import errors
from alexnet_jax.configs import paper

_MAX_LISTED = 20


class IncompatibleCheckpointError(errors.UserError, ValueError):
  """A checkpoint whose tree, shapes, dtypes or model config differ from this run's."""


# What a run's layout is, not its computation: a run may resume on another mesh.
LAYOUT_FIELDS = ("mesh.model",)
# What a reader of a trained run may change: they change the steps to come, not the parameters.
READING_FIELDS = ("model.dtype", "train.batch_size")


def model_fingerprint(config):
  """The fields that fix what a checkpoint computes, flat: config.model and the global batch;
  not the mesh, not config.impl (docs/design.md, "Checkpoints")."""
  fp = {f"model.{k}": v for k, v in config.model.to_dict().items()}
  if "train" in config:
    fp["train.batch_size"] = config.train.batch_size
  return json.loads(json.dumps(fp))


def check(abstract_state, stored_tree, extra=None, fingerprint=None, *,
          where="checkpoint", ignore=()):
  """Raises `IncompatibleCheckpointError` naming every leaf and config field that differs."""
  problems = _tree_differences(abstract_state, stored_tree)
  stored_fp = (extra or {}).get("fingerprint")
  fields = []
  if fingerprint is not None and stored_fp is not None:
    model = upgrade_model({k.removeprefix("model."): v for k, v in stored_fp.items()
                           if k.startswith("model.")})
    stored_fp = {k: v for k, v in stored_fp.items() if not k.startswith("model.")} | {
        f"model.{k}": v for k, v in model.items()}
    fields = _dict_differences(stored_fp, json.loads(json.dumps(fingerprint)), ignore)
  if not problems and not fields:
    return
  lines = [f"Checkpoint {where} does not fit this run and was not restored."]
  if fields:
    lines.append("Config fields that differ (checkpoint vs this run):")
    lines += [f"  {line}" for line in fields]
  if problems:
    lines.append("Arrays that differ (checkpoint vs model):")
    lines += [f"  {line}" for line in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
      lines.append(f"  ... and {len(problems) - _MAX_LISTED} more.")
  lines.append("Use the config the checkpoint was written with, or a fresh --workdir.")
  raise IncompatibleCheckpointError("\n".join(lines))


def _tree_differences(abstract_state, stored_tree):
  model = _flat(abstract_state)
  stored = _flat(stored_tree)
  problems = [f"{p}: in the checkpoint, not in the model" for p in stored if p not in model]
  problems += [f"{p}: in the model, not in the checkpoint" for p in model if p not in stored]
  for path in (p for p in model if p in stored):
    (m_shape, m_dtype), (s_shape, s_dtype) = model[path], stored[path]
    if m_shape != s_shape:
      problems.append(f"{path}: checkpoint {s_shape} vs model {m_shape}")
    elif None not in (m_dtype, s_dtype) and m_dtype != s_dtype:  # None: a Python scalar.
      problems.append(f"{path}: checkpoint dtype {s_dtype} vs model {m_dtype}")
  return problems


def _flat(tree):
  """{"params/conv1/kernel": (shape, dtype name)}, alike for orbax's tree and the state's."""
  flat = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(
      tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype")):
    shape, dtype = tuple(getattr(leaf, "shape", ()) or ()), getattr(leaf, "dtype", None)
    flat[jax.tree_util.keystr(path, simple=True, separator="/")] = (
        shape, None if dtype is None else jax.numpy.dtype(dtype).name)
  return flat


def _dict_differences(stored, now, ignore=()):
  """The fields both fingerprints hold that differ (a newer field cannot be compared)."""
  return [f"{k}: {stored[k]!r} vs {now[k]!r}"
          for k in sorted((stored.keys() & now.keys()) - set(LAYOUT_FIELDS) - set(ignore))
          if stored[k] != now[k]]


# What runs did before each field whose default is not the old behaviour: add every such field.
BEFORE_THE_FIELD = {
    "model.dropout_scaling": "inverted",  # Outputs x2 while training, before section 4.2's.
    "data.resize": "fast",                # 4-pixel bilinear, before the antialiased resize.
    "impl.product_output": "float32",     # bfloat16 products returned float32 before the field.
}
# How layers were computed, config.model's fields before config.impl; lrn_grad's alternative,
# autodiff, computed the same gradient and is gone.
MOVED_TO_IMPL = ("pool_grad", "lrn_dtype", "tower_conv", "conv1_channels", "model1_gathers",
                 "product_output")


def upgrade(config):
  """An older run's `config` with today's fields: BEFORE_THE_FIELD's, the rest at their
  defaults (configs/paper.py)."""
  _read_older(config)
  _fill_defaults(config, paper.get_config())
  return config


def upgrade_model(model):
  """A model config (ConfigDict or dict) with `lrn` (True/False, before batch normalisation
  joined it) read into `norm` ("lrn"/"none"), and without the fields config.impl took."""
  if "lrn" in model and "norm" not in model:
    model["norm"] = "lrn" if model["lrn"] else "none"
  for field in ("lrn", "lrn_grad", *MOVED_TO_IMPL):
    if field in model:
      del model[field]
  return model


def _read_older(config):
  if "model" in config and "impl" not in config:
    config.impl = ml_collections.ConfigDict(
        {k: config.model[k] for k in MOVED_TO_IMPL if k in config.model})
  if "model" in config:
    upgrade_model(config.model)
  for dotted, value in BEFORE_THE_FIELD.items():
    section, field = dotted.split(".")
    if section in config and field not in config[section]:
      config[section][field] = value
  evaluation = config.get("eval", {})
  if "split" in evaluation:  # Once a second field naming the evaluation split.
    split = evaluation["split"]
    del evaluation["split"]
    if split and "data" in config:
      config.data.eval_split = split


def _fill_defaults(config, defaults):
  for key, value in defaults.items():
    if key not in config:
      config[key] = value
    elif isinstance(value, ml_collections.ConfigDict) and isinstance(
        config[key], ml_collections.ConfigDict):
      _fill_defaults(config[key], value)
