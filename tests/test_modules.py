"""Building blocks (m2lcodec.modules): the edge-padding modes of the convolutions."""

import pytest
import torch
import torch.nn as nn

from m2lcodec.modules import EdgeConv2d, EdgeConvTranspose2d, resampling_conv


def constant_in_time(channels: int = 3, freq: int = 8, frames: int = 8, seed: int = 0) -> torch.Tensor:
    """A feature map that varies over channels and frequency but not over time."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, channels, freq, 1, generator=g).expand(-1, -1, -1, frames).contiguous()


def same_weights(a: nn.Module, b: nn.Module) -> None:
    b.load_state_dict(a.state_dict())


@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (4, 2)])
def test_replicate_conv_keeps_a_steady_input_steady_at_the_edges(stride):
    """With zeros beyond the edge a steady input gives edge frames unlike the rest; with the edge frame
    repeated the output is as steady at the edges as inside, and inside it equals the zero-padded conv."""
    torch.manual_seed(0)
    zeros = resampling_conv(3, 4, stride, overlap=True)
    edge = resampling_conv(3, 4, stride, overlap=True, edge="replicate")
    assert isinstance(edge, EdgeConv2d)
    same_weights(zeros, edge)
    x = constant_in_time(frames=16)
    y_edge, y_zeros = edge(x), zeros(x)
    assert y_edge.shape == y_zeros.shape == (2, 4, 8 // stride[0], 16 // stride[1])
    torch.testing.assert_close(y_edge, y_edge[..., :1].expand_as(y_edge))
    assert not torch.allclose(y_zeros[..., :1], y_zeros[..., 1:2], atol=1e-4)
    torch.testing.assert_close(y_edge[..., 1:-1], y_zeros[..., 1:-1])


@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (4, 2)])
def test_replicate_transposed_conv_gives_edge_rows_two_patches(stride):
    """A steady input through an overlapping transposed conv gives a pattern of period `stride` in time;
    the zero-padded layer breaks it at both edges (one patch instead of two), the replicate layer does not,
    and away from the edges both layers agree."""
    torch.manual_seed(0)
    zeros = resampling_conv(3, 4, stride, overlap=True, transpose=True)
    edge = resampling_conv(3, 4, stride, overlap=True, transpose=True, edge="replicate")
    assert isinstance(edge, EdgeConvTranspose2d)
    same_weights(zeros, edge)
    x = constant_in_time(frames=6)
    y_edge, y_zeros = edge(x), zeros(x)
    s = stride[1]
    assert y_edge.shape == y_zeros.shape == (2, 4, 8 * stride[0], 6 * s)
    period = y_edge[..., s:2 * s].repeat(1, 1, 1, 6)
    torch.testing.assert_close(y_edge, period)
    assert not torch.allclose(y_zeros, period, atol=1e-4)
    torch.testing.assert_close(y_edge[..., s:-s], y_zeros[..., s:-s])


def test_non_overlapping_layers_have_no_edge_to_pad():
    for transpose in (False, True):
        layer = resampling_conv(3, 4, (2, 2), overlap=False, transpose=transpose, edge="replicate")
        assert type(layer) in (nn.Conv2d, nn.ConvTranspose2d)


def test_unknown_edge_mode_is_refused():
    with pytest.raises(ValueError, match="edge padding"):
        resampling_conv(3, 4, (2, 2), overlap=True, edge="reflect")
