"""Data sets: locating the data root, reading and downloading MNIST."""

from __future__ import annotations

from .download import download_mnist
from .mnist import MNIST_MD5, MnistSplit, load_mnist, load_mnist_split, pad_images, read_idx, train_val_split
from .root import resolve_data_root, user_cache_dir

__all__ = [
    "MNIST_MD5",
    "MnistSplit",
    "download_mnist",
    "load_mnist",
    "pad_images",
    "read_idx",
    "resolve_data_root",
    "train_val_split",
    "load_mnist_split",
    "user_cache_dir",
]
