import torch

from univid.model.embed import patchify, sincos_1d, sincos_3d, split_3d, unpatchify


def test_patchify_round_trip_and_layout():
    x = torch.randn(2, 3, 4, 8, 12)
    tokens = patchify(x, (2, 4, 4))
    assert tokens.shape == (2, 2 * 2 * 3, 3 * 2 * 4 * 4)
    assert torch.equal(unpatchify(tokens, (2, 4, 4), (3, 4, 8, 12)), x)
    # Token 1 is frame-block 0, row-block 0, column-block 1 (raster order t, h, w).
    assert torch.equal(tokens[0, 1], x[0, :, 0:2, 0:4, 4:8].reshape(-1))
    # Token 3 starts the second row of patches.
    assert torch.equal(tokens[0, 3], x[0, :, 0:2, 4:8, 0:4].reshape(-1))


def test_sincos_positions():
    pe = sincos_1d(torch.tensor([0.0, 1.0]), 8)
    assert torch.allclose(pe[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert torch.allclose(pe[1, 0], torch.sin(torch.tensor(1.0)))
    assert sum(split_3d(20)) == 20 and all(w % 2 == 0 for w in split_3d(20))
    grid = sincos_3d((2, 3, 4), 24, torch.device("cpu"))
    assert grid.shape == (24, 24)
    # Every token of the grid gets a distinct code, and tokens sharing a frame share its band.
    assert torch.unique(grid, dim=0).shape[0] == 24
    wt = split_3d(24)[0]
    assert torch.equal(grid[0, :wt], grid[11, :wt])
    assert not torch.equal(grid[0, :wt], grid[12, :wt])


def test_per_sample_linear_follows_its_weights_when_sampling_and_training():
    from univid.model.embed import per_sample_linear

    linear = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with torch.no_grad():
        first = per_sample_linear(linear, x)
        torch.testing.assert_close(first, linear(x))
        linear.weight.mul_(2.0)  # an optimiser step or a merged adapter: in place
        torch.testing.assert_close(per_sample_linear(linear, x), linear(x))
        linear.weight = torch.nn.Parameter(torch.randn(4, 8))  # a new tensor
        torch.testing.assert_close(per_sample_linear(linear, x), linear(x))
    per_sample_linear(linear, x).sum().backward()  # with autograd: gradients reach the weights
    torch.testing.assert_close(linear.weight.grad, x.sum(0).expand(4, 8))
