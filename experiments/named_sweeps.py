"""Ready-made sweeps: name -> base config and the points to run (each a dict of overrides).

The ImageNet ablations start from configs/paper.py (the paper's recipe); shorten them for a
try-out with `--config=configs/paper.py:smoke` or `--set train.num_epochs=...`. Each ablation
changes one thing against the paper's setting, first point = the paper.
"""
import dataclasses
import itertools

from alexnet_jax.configs import cifar10_fig1

PAPER = "configs/paper.py"


@dataclasses.dataclass
class Sweep:
  config: str                          # --config of every point, "file[:arg]".
  points: list                         # [{"model.norm": "lrn"}, ...]: --config.k=v per point.
  sets: dict = dataclasses.field(default_factory=dict)  # Overrides shared by every point.
  about: str = ""                      # The claim it tests, with the paper's section.
  threshold: float = 0.0               # > 0: report epochs to reach this training error.
  prepare_cifar10: bool = False        # Extract CIFAR-10 and its statistics first.
  module: str = "alexnet_jax.main"     # What each point runs as `python -m`.


def grid(**axes):
  """The product of several override axes: grid(a=[1, 2], b=[3]) -> [{a:1,b:3}, {a:2,b:3}]."""
  keys = list(axes)
  return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def fig1_points():
  """ReLU at its rate; tanh at 0.01 (its fastest in full), 0.03 (the 100-step sweep's best,
  which stalls near 40% error after ~8 epochs) and 0.003 (experiments/README.md). The report
  takes each activation's fastest run."""
  relu = {"model.activation": "relu", "train.learning_rate": cifar10_fig1.LEARNING_RATES["relu"]}
  return [relu] + [{"model.activation": "tanh", "train.learning_rate": r} for r in
                   (cifar10_fig1.LEARNING_RATES["tanh"], 0.03, 0.003)]


# Section 3's choices at Tiny ImageNet's 200 classes on a CPU: each point changes one thing
# against the paper's network (LRN, overlapping pooling, dropout, ReLU), narrow and short, with
# the start that lets a narrow net learn at once (He's init on pixels / 60, biases 0) and a
# linear decay of the rate to 0. About 17 minutes a point on 2 CPU cores.
TINY_SHORT = {"model.width": 0.125, "train.num_epochs": 3, "model.init": "he",
              "model.input_scale": 1 / 60, "model.bias_init": 0.0, "train.learning_rate": 0.03,
              "train.schedule": "poly", "train.poly_power": 1.0, "mesh.model": 2,
              "mesh.num_cpu_devices": 2, "data.decoded_cache": "mmap", "eval.ten_crop": False,
              "train.log_every_steps": 50, "checkpoint.every_steps": 130}

SWEEPS = {
    "relu_vs_tanh": Sweep(PAPER, grid(**{"model.activation": ["relu", "tanh"]}),
                          about="3.1: ReLUs train several times faster than tanh units."),
    "lrn": Sweep(PAPER, [{"model.norm": "lrn"}, {"model.norm": "none"},
                         {"model.norm": "lrn", "model.lrn_convention": "caffe"}],
                 about="3.3: LRN lowers top-1/top-5 error by 1.4%/1.2%. Third point: the "
                       "authors' own layer files, whose cuda-convnet divides alpha by n "
                       "(alpha = 2e-5 in effect, five times weaker than the printed formula)."),
    "norm": Sweep(PAPER, grid(**{"model.norm": ["lrn", "batch", "none"]}),
                  about="3.3's LRN against batch normalisation after every convolution (Ioffe "
                        "& Szegedy 2015; You et al. 2017 scaled 'AlexNet-BN' to batches of "
                        "32K) and against neither."),
    "pooling": Sweep(PAPER, [{"model.pool_window": 3, "model.pool_stride": 2},
                             {"model.pool_window": 2, "model.pool_stride": 2}],
                     about="3.4: overlapping pooling (z=3, s=2) lowers top-1/top-5 error by "
                           "0.4%/0.3% against z=2, s=2."),
    "pca_noise": Sweep(PAPER, grid(**{"data.pca_noise_std": [0.1, 0.0]}),
                       about="4.1: PCA colour noise lowers top-1 error by over 1%."),
    "dropout": Sweep(PAPER, grid(**{"model.dropout_rate": [0.5, 0.0]}),
                     about="4.2: without dropout the network overfits substantially."),
    "model_parallel": Sweep(PAPER, grid(**{"mesh.model": [2, 1]}),
                            about="3.2: the same network on one tower per device or both "
                                  "towers per device; the numbers should be the same."),
    "ten_crop": Sweep(PAPER, grid(**{"eval.ten_crop": [True, False]}),
                      about="4.1: averaging the softmax over ten patches at test time."),
    "cifar10_fig1": Sweep("configs/cifar10_fig1.py", fig1_points(), threshold=0.25,
                          prepare_cifar10=True,
                          about="3.1, figure 1: ReLU reaches 25% training error on CIFAR-10 six "
                                "times faster (in epochs) than tanh."),
    "fig1_lr": Sweep("configs/cifar10_fig1.py",
                     grid(**{"model.activation": ["relu"],
                             "train.learning_rate": [0.001, 0.003, 0.01, 0.03]}) +
                     grid(**{"model.activation": ["tanh"],
                             "train.learning_rate": [0.003, 0.01, 0.03, 0.1]}),
                     sets={"train.num_steps": 100, "train.log_every_steps": 25,
                           "eval.every_epochs": 1000},
                     prepare_cifar10=True,
                     about="Figure 1's learning rates: for each activation, the rate with the "
                           "lowest training error over steps 76-100 (final_train_top1_error; "
                           "ties: lower loss)."),
    "tiny_ablations": Sweep(
        "configs/tiny_imagenet.py",
        [{}, {"model.norm": "none"}, {"model.pool_window": 2}, {"model.dropout_rate": 0.0},
         {"model.activation": "tanh"}], sets=TINY_SHORT,
        about="Against the paper's network (base): 3.3, LRN lowers top-1/top-5 error by "
              "1.4%/1.2%; 3.4, overlapping pooling (3/2 against 2/2) by 0.4%/0.3%; 4.2, "
              "without dropout the network overfits; 3.1, ReLUs train several times faster "
              "than tanh units. One seed, 3 epochs at width 0.125."),
    "cifar10_lrn": Sweep("configs/cifar10_lrn.py", grid(**{"model.norm": ["lrn", "none"]}),
                         prepare_cifar10=True,
                         about="3.3: a four-layer CNN on CIFAR-10, 13% test error without "
                               "normalisation and 11% with it."),
}


def get(name):
  if name not in SWEEPS:
    raise ValueError(f"--sweep={name!r}: choose one of {sorted(SWEEPS)}.")
  return SWEEPS[name]
