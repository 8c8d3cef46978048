"""ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in the exact layout TFDS's imagenet2012
builder reads from its manual directory (a tar per synset inside the train tar), made from the
shared ImageNet sample photos."""
import io
import tarfile


def member(tar, name, data):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def first_val_labels(n):
  """The wnids TFDS gives the first `n` validation images: it labels them in the order of
  their sorted names, from the challenge's ground truth."""
  import tensorflow_datasets as tfds
  path = tfds.core.tfds_path() / "datasets" / "imagenet2012" / "validation_labels.txt"
  return path.read_text().split()[:n]


def write(manual, photos, per_class=2, val_photos=None, synsets=None):
  """`per_class` training copies of each photo, filed under `synsets[i]` (default: the wnid in
  its file name), and one validation image for each of `val_photos` (default: all)."""
  synsets = synsets or [photo.name.split("_")[0] for photo in photos]
  with tarfile.open(manual / "ILSVRC2012_img_train.tar", "w") as train:
    for photo, wnid in zip(photos, synsets):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w") as synset:
        for k in range(per_class):
          member(synset, f"{wnid}_{k}.JPEG", photo.read_bytes())
      member(train, f"{wnid}.tar", inner.getvalue())
  with tarfile.open(manual / "ILSVRC2012_img_val.tar", "w") as val:
    for k, photo in enumerate(photos if val_photos is None else val_photos):
      member(val, f"ILSVRC2012_val_{k + 1:08d}.JPEG", photo.read_bytes())
