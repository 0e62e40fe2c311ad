"""Tests for nrc_utils.data.standardize (inputs of chapter 6)."""

import torch

from nrc_utils import data


def test_standardize_uses_training_statistics_only():
    g = torch.Generator().manual_seed(0)
    Xtr = torch.rand(50, 1, 3, 3, generator=g)
    Xtr[:, 0, 0, 0] = 0.25  # a constant pixel: only centred
    Xte = torch.rand(20, 1, 3, 3, generator=g) + 5.0
    tr = data.Dataset(Xtr, torch.zeros(50, dtype=torch.long), 2, "a")
    te = data.Dataset(Xte, torch.ones(20, dtype=torch.long), 2, "b")
    str_, ste = data.standardize(tr, te)
    assert str_.X.shape == (50, 9) and ste.X.shape == (20, 9)
    torch.testing.assert_close(str_.X.double().mean(0), torch.zeros(9, dtype=torch.float64), atol=1e-6, rtol=0)
    std = str_.X.double().std(0, unbiased=False)
    assert std[0] == 0 and torch.allclose(std[1:], torch.ones(8, dtype=torch.float64), atol=1e-5)
    # the test set is mapped with the training statistics: its shift of +5 survives
    flat_tr, flat_te = Xtr.reshape(50, 9).double(), Xte.reshape(20, 9).double()
    s = flat_tr.std(0, unbiased=False)
    s[0] = 1.0
    torch.testing.assert_close(ste.X.double(), ((flat_te - flat_tr.mean(0)) / s).float().double())
    assert ste.y.tolist() == [1] * 20 and ste.K == 2
