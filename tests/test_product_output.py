"""config.impl.product_output: what bfloat16 convolutions and matmuls return. "compute" (the
default) asks every convolution and dot of the training gradient for bfloat16 operands and a
bfloat16 result (the library sums in float32 inside); "float32" asks for float32 results, and
JAX's transposes then run the backward convolutions and dots on float32 operands, which XLA:GPU
computes as float32 (TF32) products (benchmarks/README.md, "What bfloat16 computes")."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from alexnet_jax.configs import paper
from alexnet_jax.nets import alexnet
from alexnet_jax.nets import layers
from benchmarks import gpu_session
from tests import tiny_config


def _loss_and_lowered(product_output):
  cfg = tiny_config.model_config(dtype="bfloat16")
  alexnet.check_config(cfg)
  net = alexnet.AlexNet(ml_collections.FrozenConfigDict(cfg),
                        layers.impl_config({"product_output": product_output}), model_axis=None,
                        data_axis=None)
  params = alexnet.init_params(cfg, jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (4, 67, 67, 3), jnp.float32) * 60
  labels = jnp.arange(4) % cfg.num_classes

  def loss(p):
    logits = net.apply({"params": p}, x)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])

  f = jax.jit(jax.value_and_grad(loss))
  value, grads = f(params)
  return float(value), grads, f.lower(params).as_text()


def test_the_default_is_compute_and_unknown_values_are_refused():
  assert paper.get_config().impl.product_output == layers.IMPL["product_output"][0]
  assert layers.IMPL["product_output"][0] == "compute"
  with pytest.raises(ValueError, match="config.impl.product_output"):
    layers.impl_config({"product_output": "bfloat16"})


@pytest.mark.slow  # Two compiled steps (24 s under load); the switch's dtype is checked fast above.
def test_product_output_sets_the_types_jax_asks_for_and_the_losses_stay_close():
  """"compute": all 5 convolutions and 3 dots of the forward pass and their input and kernel
  gradients on bfloat16 operands with bfloat16 results. "float32": the forward products return
  float32 and every backward one runs on float32 operands. The loss and the gradients differ by
  bfloat16's rounding of the products' results: on this CPU XLA keeps float32 intermediates
  where it may (xla_allow_excess_precision): the losses were equal and the kernel gradients'
  cosines 0.999998 or more."""
  loss_c, grads_c, text_c = _loss_and_lowered("compute")
  loss_f, grads_f, text_f = _loss_and_lowered("float32")
  compute = gpu_session.lowered_products(text_c)
  floats = gpu_session.lowered_products(text_f)
  # 2 towers x (conv1..conv5) forward, and their input gradients (but conv1's) and kernel ones.
  assert compute["convolution"] == {"(bf16, bf16) -> bf16": 2 * (5 + 4 + 5)}, compute
  assert floats["convolution"] == {"(bf16, bf16) -> f32": 10, "(f32, f32) -> f32": 18}, floats
  assert set(compute["dot_general"]) == {"(bf16, bf16) -> bf16"}, compute
  assert floats["dot_general"]["(bf16, bf16) -> f32"] == 6 and "(f32, f32) -> f32" in floats[
      "dot_general"], floats
  assert abs(loss_c - loss_f) <= 1e-3 * abs(loss_f), (loss_c, loss_f)
  for layer in grads_f:
    a, b = (np.asarray(g[layer]["kernel"], np.float32).ravel() for g in (grads_c, grads_f))
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99, layer


def test_the_gpu_audit_reads_cudnn_and_cublas_calls_and_their_operand_types():
  """A compiled GPU module prints operands by name: the audit looks their types up, leaves the
  cuDNN workspace out of the result, and calls an upcast convolution float32."""
  text = "\n".join([
      "  %p.1 = bf16[8,227,227,3]{3,2,1,0} parameter(0)",
      "  %p.2 = bf16[11,11,3,48]{3,2,1,0} parameter(1)",
      "  %convert.5 = f32[8,227,227,3]{3,2,1,0} convert(%p.1)",
      "  %convert.6 = f32[11,11,3,48]{3,2,1,0} convert(%p.2)",
      '  %cudnn-conv.1 = (f32[8,55,55,48]{3,2,1,0}, u8[0]{0}) custom-call(%convert.5, '
      '%convert.6), window={size=11x11 stride=4x4}, dim_labels=b01f_01io->b01f, '
      'custom_call_target="__cudnn$convForward", backend_config={"cudnn_conv_backend_config":{}}',
      '  %cudnn-conv.2 = (bf16[8,55,55,48]{3,2,1,0}, u8[1024]{0}) custom-call(%p.1, %p.2), '
      'window={size=11x11 stride=4x4}, custom_call_target="__cudnn$convBackwardFilter"',
      "  %bias = f32[48]{0} parameter(2)",
      '  %fused = (bf16[8,55,55,48]{3,2,1,0}, u8[0]{0}) custom-call(%p.1, %p.2, %bias), '
      'custom_call_target="__cudnn$convBiasActivationForward"',
      '  %gemm = (f32[8,4096]{1,0}, s8[4194304]{0}) custom-call(%convert.5, %convert.6), '
      'custom_call_target="__cublas$lt$matmul"',
      "  %add = f32[8]{0} add(%convert.5, %convert.6)",
  ])
  result = gpu_session.audit(text)
  rows = {r["name"]: r for r in result["ops"]}
  assert list(rows) == ["cudnn-conv.1", "cudnn-conv.2", "fused", "gemm"]
  assert rows["cudnn-conv.1"]["operands"] == ["f32", "f32"]
  assert rows["cudnn-conv.1"]["result"] == ["f32"] and rows["cudnn-conv.1"]["runs_as"] == "float32"
  assert rows["cudnn-conv.2"]["runs_as"] == "bfloat16"
  assert rows["fused"]["operands"] == ["bf16", "bf16", "f32"]  # A float32 bias, bf16 products.
  assert rows["fused"]["runs_as"] == "bfloat16"
  assert rows["gemm"]["target"] == "__cublas$lt$matmul"
  assert result["counts"] == {"convolution": {"float32": 1, "bfloat16": 2},
                              "matmul": {"float32": 1}}
  assert not result["all_bfloat16"]


@pytest.mark.parametrize("product_output,want", [("compute", "(bf16, bf16) -> bf16"),
                                                 ("float32", "(bf16, bf16) -> f32")])
def test_the_cifar_nets_follow_the_same_switch(product_output, want):
  from alexnet_jax.configs import common
  from alexnet_jax.nets import cifar
  cfg = common.cifar_model_config("relu", layout="18pct", lrn=True)
  cfg.dtype = "bfloat16"
  net = cifar.CifarNet(cfg.lock(), layers.impl_config({"product_output": product_output}))
  params = cifar.init_params(cfg, jax.random.key(0))
  x = jnp.zeros((2, cfg.image_size, cfg.image_size, 3), jnp.float32)
  text = jax.jit(lambda p: net.apply({"params": p}, x)).lower(params).as_text()
  found = gpu_session.lowered_products(text)
  assert found["convolution"] == {want: 3} and found["dot_general"] == {want: 1}, found
