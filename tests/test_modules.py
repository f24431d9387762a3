"""Building blocks (m2lcodec.modules): the edge-padding modes of the convolutions."""

import pytest
import torch
import torch.nn as nn

from m2lcodec.modules import EdgeConv2d, EdgeConvTranspose2d, pad_time, resampling_conv


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


@pytest.mark.parametrize("transpose", [False, True])
def test_non_overlapping_layers_have_no_edge_to_pad(transpose):
    torch.manual_seed(0)
    layers = [resampling_conv(3, 4, (2, 2), overlap=False, transpose=transpose, edge=e)
              for e in ("zeros", "replicate", "context")]
    for layer in layers[1:]:
        same_weights(layers[0], layer)
    x = torch.randn(4, 3, 8, 8)
    for layer in layers[1:]:
        torch.testing.assert_close(layer(x, 2), layers[0](x, 2))


def test_pad_time_context_takes_the_previous_chunks_frames():
    x = torch.arange(2 * 2 * 5, dtype=torch.float32).view(4, 1, 1, 5)  # 2 examples x 2 chunks of 5 frames
    y = pad_time(x, 2, chunks=2, context=True)
    assert y.shape == (4, 1, 1, 9)
    for row in range(4):
        left = x[row, ..., :1].expand(-1, -1, 2) if row % 2 == 0 else x[row - 1, ..., -2:]
        torch.testing.assert_close(y[row, ..., :2], left)
        torch.testing.assert_close(y[row, ..., -2:], x[row, ..., -1:].expand(-1, -1, 2))
    torch.testing.assert_close(pad_time(x, 2, chunks=2), pad_time(x, 2))  # no context: replicate


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
def test_context_conv_over_a_pair_is_one_conv_over_both_chunks(stride, transpose):
    """With "context" the right chunk's output equals the matching part of one replicate-padded conv over
    the two chunks joined in time; the left chunk's output is the replicate layer's (it does not see the
    right chunk)."""
    torch.manual_seed(0)
    context = resampling_conv(3, 4, stride, overlap=True, transpose=transpose, edge="context")
    replicate = resampling_conv(3, 4, stride, overlap=True, transpose=transpose, edge="replicate")
    same_weights(context, replicate)
    x = torch.randn(2, 2, 3, 8, 6)  # (examples, chunks of the pair, C, F, T)
    y = context(x.flatten(0, 1), 2).view(2, 2, 4, *context(x[:, 0], 1).shape[-2:])
    joined = replicate(torch.cat([x[:, 0], x[:, 1]], dim=-1))
    frames = y.shape[-1]
    torch.testing.assert_close(y[:, 1], joined[..., frames:])
    torch.testing.assert_close(y[:, 0], replicate(x[:, 0]))
    assert not torch.allclose(y[:, 1], replicate(x[:, 1]), atol=1e-4)


def test_unknown_edge_mode_is_refused():
    with pytest.raises(ValueError, match="edge padding"):
        resampling_conv(3, 4, (2, 2), overlap=True, edge="reflect")
