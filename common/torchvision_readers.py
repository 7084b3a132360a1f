"""torchvision's CIFAR readers without the MD5 check, imported only when files are
decoded: importing ``torchvision.datasets`` costs about 2 s of CPU (it pulls in
``torch._dynamo``), which a ClientApp process that finds the decoded set in the
cache should not pay (a SuperNode starts one process a message)."""

from __future__ import annotations

import os
import pickle

from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_integrity


class NoMD5CIFAR10(CIFAR10):
    """torchvision's CIFAR10 with one check changed: each file must exist, its MD5
    sum is not compared (copies and generated test files are read the same way)."""

    def _check_integrity(self) -> bool:
        return all(
            check_integrity(os.path.join(self.root, self.base_folder, name))
            for name, _ in self.train_list + self.test_list
        )

    def _load_meta(self) -> None:
        path = os.path.join(self.root, self.base_folder, self.meta["filename"])
        if not check_integrity(path):
            raise RuntimeError(f"Dataset metadata file {path} not found")
        with open(path, "rb") as infile:
            data = pickle.load(infile, encoding="latin1")
        self.classes = data[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class NoMD5CIFAR100(NoMD5CIFAR10):
    """torchvision's CIFAR100 (its files and meta key) without the MD5 check."""

    base_folder = CIFAR100.base_folder
    url = CIFAR100.url
    filename = CIFAR100.filename
    tgz_md5 = CIFAR100.tgz_md5
    train_list = CIFAR100.train_list
    test_list = CIFAR100.test_list
    meta = CIFAR100.meta


CIFAR_READERS = {"cifar10": NoMD5CIFAR10, "cifar100": NoMD5CIFAR100}
