"""Fixtures of the harness tests."""

import pytest

from tests.train.helpers import write_cifar_archive


@pytest.fixture
def cifar10_dir(tmp_path):
  write_cifar_archive(tmp_path, 'cifar10')
  return tmp_path
