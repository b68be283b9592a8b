"""The data layer: images and labels as uint8 arrays in host memory, from any source.

- dataset.py   the Dataset and Split every source produces; the validation carve, class subsets
               and caps, whatever the source
- sources.py   a config's dataset from its source (`load`, `from_config`)
- tfds_source.py, idx.py, folder.py: the sources (tfds array_record files; the IDX files of
               mnist, fashion_mnist and kmnist; a directory of images)
- download.py  fetches missing IDX files from the dataset's mirrors, verified, written atomically
- cache.py     the decoded-data cache (.npz keyed by a fingerprint of the source)
- images.py    image files -> model inputs (MNIST's box-and-centre); also predict's reader
- augment.py   on-device augmentation inside the jitted train step

May import: training.errors (and the other base modules). Nothing here knows of models,
checkpoints or training.
"""

from training.data.dataset import Dataset, Split, member_carves, select
from training.data.sources import from_config, load

__all__ = ["Dataset", "Split", "from_config", "load", "member_carves", "select"]
