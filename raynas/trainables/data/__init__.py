"""Data sources: a name (or ``package.module:function``) in, train/validation arrays out.

Built-in sources:

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images), the offline default.
- ``mnist``, ``fashion_mnist``: the published IDX files in a local folder (``download: true``
  fetches them).
- ``cifar10``: the published python-pickle batches (``cifar-10-batches-py``).
- ``csv``: a CSV file with a ``target`` column.

A user source ``package.module:function`` is called as ``function(**params)`` and returns a
:class:`Dataset`, a tuple ``(x, y)`` or a dict ``{x_train, y_train, x_val, y_val}``.

Every source's training data is split into train and validation sets with a seeded, stratified
(where the class counts allow it) split; the test sets of the published data sets are left alone
for a final evaluation. The result holds plain contiguous numpy arrays: it is put into Ray's
object store once per experiment and read zero-copy by every trial.

This module imports neither torch nor scikit-learn, and pandas only for the csv source, so that
the command line starts fast.

Example:
    >>> data = load_dataset("digits", seed=0)
    >>> data.x_train.shape, data.x_val.shape, data.num_classes
    ((1438, 1, 8, 8), (359, 1, 8, 8), 10)
"""

from raynas.trainables.data.dataset import Dataset
from raynas.trainables.data.sources import check_data_args, load_dataset, register_source, source_names

__all__ = ["Dataset", "load_dataset", "check_data_args", "register_source", "source_names"]
