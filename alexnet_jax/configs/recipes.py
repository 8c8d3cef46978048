r"""Recipes by name: `paper` (section 5 as printed), `cuda_convnet` (the authors' layer files,
cuda-convnet2's layers-imagenet-2gpu-model.cfg), `caffe` (bvlc_alexnet's prototxts) and `owt`
(the 2014 network as torchvision's weights were trained); experiments/README.md, "Three recipes
on Tiny ImageNet", has what the first three did.

    python -m alexnet_jax.main --config=configs/paper.py:caffe ...
"""
NAMES = ("paper", "cuda_convnet", "caffe", "owt")
# One ImageNet epoch, in images: Caffe's schedule is written in iterations of 256.
IMAGENET_TRAIN_IMAGES = 1_281_167


def apply(config, name):
  """Sets `config` (a configs/paper.py config) to the recipe `name`; returns it."""
  if name not in NAMES:
    raise ValueError(f"Recipe {name!r}: choose one of {NAMES}.")
  if name == "cuda_convnet":
    _cuda_convnet(config)
  elif name == "caffe":
    _caffe(config)
  elif name == "owt":
    _owt(config)
  config.recipe = name
  return config


def _cuda_convnet(config):
  """cuda-convnet2's 2-GPU model-parallel ImageNet net (file:line of each value)."""
  m, t = config.model, config.train
  # layers-imagenet-2gpu-model.cfg: initW=0.01 in conv1a/b (17, 30), conv2a/b (73, 88) and the
  # fc layers (242, 251, 268, 277, 294); initW=0.03 in conv3a/b (143, 157), conv4a/b (172, 186),
  # conv5a/b (200, 214). initB=1 in conv2, conv4, conv5, fc2048a/b and fc2048ba/bb (74, 89,
  # 173, 187, 201, 215, 243, 252, 269, 278), 0 elsewhere: the paper's biased layers.
  m.weight_std = 0.01
  m.layer_weight_std.update(conv3=0.03, conv4=0.03, conv5=0.03)
  m.bias_init = 1.0
  # rnorm1a/b, rnorm2a/b (layer-params 156-174): scale=0.0001, pow=0.75, minDiv=2, size=5
  # (layers 39); cuda-convnet divides the scale by the size: the "caffe" convention, k = 2.
  m.lrn_convention = "caffe"
  m.lrn_k = 2.0
  # dropout1a/b, dropout2a/b (layer-params 140-154): keep=0.5; DropoutLayer multiplies the kept
  # units by 1/keep while training (cudaconvnet/include/layer.cuh:634-643), inverted dropout.
  m.dropout_scaling = "inverted"
  # layer-params, every layer (2-3, 11-12, ...): epsW=dexp[base=0.02;tgtFactor=250;numSteps=4],
  # epsB=dexp[base=0.04;tgtFactor=25;numSteps=2], momW=momB=0.9, wc=0.0005 (weights only:
  # cuda-convnet has no decay for biases). Gradients are averaged over the batch of 128
  # (layer.cu:853-872, eps / numCases), as here.
  t.learning_rate = 0.02
  t.bias_lr_mult = 2.0
  t.bias_decay_mult = 0.0
  t.momentum = 0.9
  t.weight_decay = 5e-4
  # dexp (cudaconvnet/src/lr.cu:94-113): base x 250^(-i/3) over the four quarters of the run,
  # i = 0..3: a step schedule dividing by 250^(1/3) = 6.3 at 1/4, 1/2 and 3/4 of the epochs.
  # The biases' own dexp (/25 once, at half-way) is not expressed: here they follow the
  # weights' schedule at twice their rate, which is the file's ratio for the first quarter.
  t.schedule = "step"
  t.lr_drop_factor = 250 ** (1 / 3)
  t.step_epochs = tuple(t.num_epochs * q for q in (0.25, 0.5, 0.75))
  # Not expressed: cnorm2a/b (layers 107-117), a 5x5 spatial contrast normalisation after
  # rnorm2 (scale 0.001, pow 0.75) that the paper does not describe.


def _caffe(config):
  """bvlc_alexnet's train_val.prototxt and solver.prototxt (file:line of each value)."""
  m, d, t = config.model, config.data, config.train
  # train_val.prototxt: weight_filler gaussian std 0.01 (59, 115, 170, 204, 238), 0.005 in fc6
  # and fc7 (280, 320), 0.01 in fc8; bias_filler 0.1 in conv2, conv4, conv5, fc6, fc7 (119,
  # 208, 242, 284, 324), 0 in conv1, conv3, fc8.
  m.weight_std = 0.01
  m.layer_weight_std.update(fc6=0.005, fc7=0.005)
  m.bias_init = 0.1
  m.image_size = 227                   # crop_size: 227 (12, 31).
  m.dropout_scaling = "inverted"       # Caffe's Dropout scales by 1/(1 - ratio) while training.
  # norm1, norm2 (79-81, 135-137): local_size 5, alpha 0.0001, beta 0.75, and Caffe's default
  # k = 1 (caffe.proto, LRNParameter); Caffe divides alpha by local_size.
  m.lrn_convention = "caffe"
  m.lrn_k = 1.0
  d.pca_noise_std = 0.0                # readme: "not training with the relighting".
  d.flip = True                        # mirror: true (11).
  d.mean = "image"                     # mean_file: imagenet_mean.binaryproto (13).
  # Every layer: lr_mult 1 / decay_mult 1 for weights, lr_mult 2 / decay_mult 0 for biases.
  t.bias_lr_mult = 2.0
  t.bias_decay_mult = 0.0
  # solver.prototxt: base_lr 0.01, momentum 0.9, weight_decay 0.0005, lr_policy "step" with
  # gamma 0.1 and stepsize 100,000, max_iter 450,000; batch_size 256 (train_val 17).
  t.batch_size = 256
  t.learning_rate = 0.01
  t.momentum = 0.9
  t.weight_decay = 5e-4
  t.schedule = "step"
  t.lr_drop_factor = 10.0
  epochs_per_step = 100_000 * 256 / IMAGENET_TRAIN_IMAGES    # 19.98
  t.num_epochs = round(450_000 * 256 / IMAGENET_TRAIN_IMAGES)  # 90
  t.step_epochs = tuple(round(k * epochs_per_step, 2) for k in range(1, 5))
  config.eval.batch_size = 50          # TEST batch_size (36); the counts are exact either way.
  # Not expressed: Caffe's images are warped to 256x256 (convert_imageset), not cut from a
  # shorter side of 256; the validation error is measured on the centre crop alone.


def _owt(config):
  """Krizhevsky 2014's one-column network (arXiv:1404.5997; torchvision/models/alexnet.py, which
  cites it) trained as torchvision's weights were: pytorch/examples' imagenet/main.py with
  README's "--lr 0.01" for AlexNet and its defaults."""
  m, d, t = config.model, config.data, config.train
  m.name = "owt"                       # 64-192-384-256-256 kernels, 4096-4096 units, one column.
  m.norm = "none"                      # No LRN in the 2014 network.
  m.dropout_scaling = "inverted"       # torch.nn.Dropout scales the kept units by 1 / (1 - p).
  m.init, m.bias_init = "he", 0.0      # Not torch's uniform fan-in init: He's, the nearest here.
  m.input_scale = 1 / 57.63            # Over torchvision's std: 0.226 x 255, its three's mean.
  d.pca_noise_std = 0.0                # main.py: RandomResizedCrop and flips only.
  config.mesh.model = 1                # One column: data parallel ("hybrid" splits the fc layers).
  t.batch_size = 256                   # main.py: -b 256.
  t.learning_rate = 0.01               # README: "Use 0.01 ... for AlexNet or VGG".
  t.momentum = 0.9                     # main.py: --momentum 0.9.
  t.weight_decay = 1e-4                # main.py: --wd 1e-4, on every parameter, biases too.
  t.bias_decay_mult = 1.0
  t.schedule = "step"                  # main.py: divided by 10 every 30 epochs, 90 epochs.
  t.lr_drop_factor = 10.0
  t.step_epochs = (30, 60)
  t.num_epochs = 90
  # Not expressed: RandomResizedCrop's scale and aspect jitter (the crops here are section
  # 4.1's 224 of 256) and torch's SGD, whose velocity holds gradients rather than steps (the
  # same updates at a constant rate).

