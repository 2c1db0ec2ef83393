"""Shared test fixtures: the real data root (../shared/data) and a clean per-test cwd."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"real data folder absent: {SHARED_DATA / 'mnist'}")
    return SHARED_DATA


BRAIN_MAT = SHARED_DATA / "mri_kspace_espirit_brain8ch" / "brain_alias_8ch.mat"


def brain_kspace_numpy():
    """The real 8-coil brain k-space (8, 320, 168) on its acquired phase-encode lines, straight from the .mat with
    scipy/numpy only (no flowcs code): the reference for the multi-coil readers."""
    import numpy as np
    import scipy.io

    if not BRAIN_MAT.is_file():
        pytest.skip(f"real data file absent: {BRAIN_MAT}")
    k = scipy.io.loadmat(BRAIN_MAT)["DATA"]  # (readout, phase-encode, coil), zero-padded in phase-encode
    used = np.flatnonzero(np.abs(k).sum(axis=(0, 2)) > 0)
    return np.transpose(k[:, used[0]:used[-1] + 1], (2, 0, 1)).astype(np.complex64)


def numpy_images(k):
    """Centred orthonormal inverse FFT over the last two axes, numpy only."""
    import numpy as np

    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


@pytest.fixture(scope="session")
def brain_multicoil(tmp_path_factory) -> Path:
    """The real brain k-space written in fastMRI's multi-coil layout: kspace (1, 8, 320, 168) + reconstruction_rss;
    its native grid is its own 168 acquired phase-encode lines."""
    import h5py
    import numpy as np

    k = brain_kspace_numpy()
    path = tmp_path_factory.mktemp("brain") / "brain_multicoil.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k[None])
        f.create_dataset("reconstruction_rss",
                         data=np.sqrt((np.abs(numpy_images(k)) ** 2).sum(0))[None].astype(np.float32))
        f.attrs["acquisition"] = "AXT1"
    return path
