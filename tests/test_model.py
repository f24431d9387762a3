"""Music2Latent2 network properties (m2lcodec.model)."""

import dataclasses

import pytest
import torch

from m2lcodec import schedule
from m2lcodec.model import PRESETS, ModelConfig, Music2Latent2, chunk_causal_mask, get_config


def tiny(seed: int = 0) -> Music2Latent2:
    torch.manual_seed(seed)
    return Music2Latent2(get_config("tiny")).eval()


def randomise(model: Music2Latent2, scale: float = 0.05) -> Music2Latent2:
    """Give zero-initialised layers (adaLN gates, last convs) non-zero weights so every path is live."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


@pytest.mark.parametrize("overlap,edge", [(False, "zeros"), (True, "zeros"), (True, "replicate"), (True, "context")])
@pytest.mark.parametrize("name", list(PRESETS))
def test_shapes_every_preset(name, overlap, edge):
    cfg = dataclasses.replace(get_config(name), resample_overlap=overlap, edge_padding=edge)
    with torch.device("meta"):
        model = Music2Latent2(cfg)
        x = torch.empty(2, 2, 2, 1024, 64)
        z = model.encode(x.flatten(0, 1))
        assert z.shape == (4, cfg.num_latents, cfg.latent_dim)
        feats = model.decoder_features(z)
        assert len(feats) == len(cfg.channels)
        for level, (f, c) in enumerate(zip(feats, cfg.channels)):
            assert f.shape[:2] == (4, c), level
        y = model.denoise(x, torch.empty(2, 2), feats)
        assert y.shape == x.shape
        assert model.denoise(x[:, :1], torch.empty(2, 1), [f[::2] for f in feats]).shape == x[:, :1].shape


def test_paper_parameter_count():
    with torch.device("meta"):
        total = Music2Latent2(get_config("paper")).param_counts()["total"]
    assert 90e6 <= total <= 110e6


def test_config_round_trip_and_validation():
    cfg = get_config("small")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        ModelConfig(stem=(3, 2))
    with pytest.raises(ValueError):
        get_config("huge")


def test_chunk_causal_mask():
    m = chunk_causal_mask(2, 3)
    assert m[:3, :3].all() and m[3:, :].all()
    assert not m[:3, 3:].any()


def tiny_with_edge(edge: str) -> Music2Latent2:
    torch.manual_seed(0)
    cfg = dataclasses.replace(get_config("tiny"), resample_overlap=edge != "zeros", edge_padding=edge)
    return randomise(Music2Latent2(cfg).eval())


@pytest.mark.parametrize("edge", ["zeros", "replicate", "context"])
def test_right_chunk_does_not_change_left_output(edge):
    model = tiny_with_edge(edge)
    torch.manual_seed(2)
    x = torch.randn(2, 2, 2, 1024, 64) * 0.3
    sigma = torch.tensor([[0.5, 3.0], [1.0, 10.0]])
    z = model.encode(x.flatten(0, 1))
    feats = model.decoder_features(z)
    with torch.no_grad():
        y1 = model.denoise(x, sigma, feats)
        x2 = x.clone()
        x2[:, 1] = torch.randn_like(x2[:, 1])
        y2 = model.denoise(x2, sigma, feats)
        # and the left chunk alone gives the same result as the pair
        y_alone = model.denoise(x[:, :1], sigma[:, :1], [f.view(2, 2, *f.shape[1:])[:, 0] for f in feats])
    torch.testing.assert_close(y1[:, 0], y2[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y1[:, 0], y_alone[:, 0], atol=1e-5, rtol=1e-5)
    assert (y1[:, 1] - y2[:, 1]).abs().max() > 1e-3  # the right chunk does see its own input


def test_left_chunk_changes_right_output():
    model = randomise(tiny())
    x = torch.randn(1, 2, 2, 1024, 64) * 0.3
    sigma = torch.tensor([[0.5, 3.0]])
    with torch.no_grad():
        feats = model.decoder_features(model.encode(x.flatten(0, 1)))
        y1 = model.denoise(x, sigma, feats)
        x2 = x.clone()
        x2[:, 0] += 0.5
        y2 = model.denoise(x2, sigma, feats)
    assert (y1[:, 1] - y2[:, 1]).abs().max() > 1e-4


def test_boundary_condition_identity_at_sigma_min():
    model = randomise(tiny())
    x = torch.randn(2, 2, 2, 1024, 64) * 0.3
    sigma = torch.full((2, 2), schedule.SIGMA_MIN)
    with torch.no_grad():
        feats = model.decoder_features(model.encode(x.flatten(0, 1)))
        y = model.denoise(x, sigma, feats)
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


def test_latents_inside_open_interval_and_deterministic():
    x = torch.randn(3, 2, 1024, 64) * 3.0  # loud input pushes tanh hard
    z1 = randomise(tiny(0), scale=1.0).encode(x)
    z2 = randomise(tiny(0), scale=1.0).encode(x)
    assert bool((z1.abs() < 1).all())
    torch.testing.assert_close(z1, z2, rtol=0, atol=0)
    assert not torch.equal(z1, randomise(tiny(1), scale=1.0).encode(x))


def test_latents_depend_on_input_at_init():
    """Encoder health at initialisation: the summary embeddings must vary with the input."""
    model = tiny()
    torch.manual_seed(3)
    t = torch.linspace(0, 1, 64)
    x = torch.stack([torch.sin(2 * torch.pi * (k + 1) * t).expand(2, 1024, 64) * 0.3 for k in range(6)])
    spread = model.encode(x).std(0).mean().item()
    assert spread > 0.02


def test_per_chunk_modulation_equals_per_token():
    """The CM's transformer modulates each chunk's tokens once per chunk; broadcasting the chunk's
    condition to every token first must give the same result."""
    from m2lcodec.modules import TransformerBlock

    torch.manual_seed(0)
    block = TransformerBlock(32, 2, 2.0, cond_dim=16)
    torch.nn.init.normal_(block.ada.weight, std=0.3)  # adaLN-Zero starts at zero: make it do something
    torch.nn.init.normal_(block.ada.bias, std=0.3)
    x, cond = torch.randn(3, 20, 32), torch.randn(3, 2, 16)
    per_token = cond[:, :, None].expand(-1, -1, 10, -1).reshape(3, 20, 16)
    torch.testing.assert_close(block(x, None, cond), block(x, None, per_token))


def assert_same_function(old: Music2Latent2, new: Music2Latent2) -> tuple[torch.Tensor, ...]:
    """Encoder, decoder and consistency model of `new` compute what `old`'s do (a fine-tune's start);
    returns the probe (x, sigma, latents, old features, new features)."""
    torch.manual_seed(3)
    x = torch.randn(2, 2, 2, 1024, 64)
    sigma = torch.tensor([[0.4, 80.0], [1.0, 5.0]])
    with torch.no_grad():
        z_old, z_new = old.encode(x.flatten(0, 1)), new.encode(x.flatten(0, 1))
        assert torch.allclose(z_old, z_new, atol=1e-6)
        f_old, f_new = old.decoder_features(z_old), new.decoder_features(z_old)
        for a, b in zip(f_old, f_new):
            assert torch.allclose(a, b, atol=1e-5)
        assert torch.allclose(old.denoise(x, sigma, f_old), new.denoise(x, sigma, f_new), atol=1e-5)
    return x, sigma, z_old, f_old, f_new


def test_widened_model_computes_what_the_old_one_did():
    """Fine-tuning onto overlapping resampling starts from the very same function."""
    old = randomise(tiny())
    new = Music2Latent2(dataclasses.replace(old.config, resample_overlap=True)).eval()
    new.load_adapted(old.state_dict(), old.config)
    assert new.cm.patchifier.stem.weight.shape[-2:] == (8, 4)  # stride (4, 2) -> kernel (8, 4)
    x, sigma, _, f_old, f_new = assert_same_function(old, new)
    with torch.no_grad():  # and the new taps are live: perturbing them changes the output
        new.cm.depatchifier.head.weight[..., 0, 0].add_(0.5)
        assert not torch.allclose(old.denoise(x, sigma, f_old), new.denoise(x, sigma, f_new), atol=1e-3)
    with pytest.raises(ValueError):
        tiny().load_adapted(new.state_dict(), new.config)  # overlap cannot be taken away


def test_edge_padding_modes_share_weights_and_differ_only_near_the_edges():
    """A zero-padded model's weights load into the replicate model as they are (fine-tuning switches
    mode); the outputs differ, most at the chunk's first and last frames."""
    old = randomise(Music2Latent2(dataclasses.replace(get_config("tiny"), resample_overlap=True)).eval())
    new = Music2Latent2(dataclasses.replace(old.config, edge_padding="replicate")).eval()
    new.load_state_dict(old.state_dict())
    torch.manual_seed(3)
    x = torch.randn(2, 1, 2, 1024, 64)
    sigma = torch.full((2, 1), 80.0)
    with torch.no_grad():
        feats = old.decoder_features(old.encode(x.flatten(0, 1)))
        diff = (old.denoise(x, sigma, feats) - new.denoise(x, sigma, feats)).abs().mean(dim=(0, 1, 2, 3))
    assert diff.max() > 1e-4
    assert diff[[0, -1]].min() > diff[16:48].mean()
    with pytest.raises(ValueError, match="edge padding"):
        ModelConfig(edge_padding="mirror")


def test_context_edges_change_only_the_right_chunk_of_a_pair():
    """"context" differs from "replicate" (same weights) only where the right chunk's convs see the left
    chunk's frames: the left chunk's output and a chunk decoded alone are the same in both modes."""
    replicate, context = tiny_with_edge("replicate"), tiny_with_edge("context")
    context.load_state_dict(replicate.state_dict())
    torch.manual_seed(4)
    x = torch.randn(2, 2, 2, 1024, 64) * 0.3
    sigma = torch.tensor([[0.002, 80.0], [0.4, 80.0]])
    with torch.no_grad():
        feats = replicate.decoder_features(replicate.encode(x.flatten(0, 1)))
        a, b = replicate.denoise(x, sigma, feats), context.denoise(x, sigma, feats)
        left = [f.view(2, 2, *f.shape[1:])[:, 0] for f in feats]
        alone_a, alone_b = replicate.denoise(x[:, :1], sigma[:, :1], left), context.denoise(x[:, :1], sigma[:, :1], left)
    torch.testing.assert_close(a[:, 0], b[:, 0])
    torch.testing.assert_close(alone_a, alone_b)
    assert (a[:, 1] - b[:, 1]).abs().max() > 1e-4


def test_regained_model_computes_what_the_old_one_did_and_its_positions_learn_faster():
    """A fine-tune onto a larger pos_gain starts from the same function; one optimiser step then moves the
    effective position embedding (gain x parameter) pos_gain / old_gain times as far."""
    old = randomise(tiny())
    new = Music2Latent2(dataclasses.replace(old.config, pos_gain=25.0)).eval()
    new.load_adapted(old.state_dict(), old.config)
    assert torch.allclose(new.encoder.pos * 25.0, old.encoder.pos)
    z_old = assert_same_function(old, new)[2]
    moved = {}
    for name, model in (("old", old), ("new", new)):
        opt = torch.optim.Adam([model.decoder.pos], lr=1e-3)
        before = model.decoder.pos.detach() * model.config.pos_gain
        model.decoder_features(z_old)[0].pow(2).sum().backward()
        opt.step()
        moved[name] = float((model.decoder.pos.detach() * model.config.pos_gain - before).abs().mean())
    assert moved["new"] == pytest.approx(25.0 * moved["old"], rel=0.05)


def test_pos_gain_scales_a_fresh_models_position_embeddings():
    """At pos_gain g a fresh model's effective position embeddings are g times the default's (same seed)."""
    torch.manual_seed(0)
    plain = Music2Latent2(get_config("tiny"))
    torch.manual_seed(0)
    strong = Music2Latent2(dataclasses.replace(get_config("tiny"), pos_gain=10.0))
    torch.testing.assert_close(strong.cm.pos * 10.0, plain.cm.pos * 10.0)  # same parameters ...
    x = torch.randn(2, 2, 1024, 64)
    assert not torch.allclose(plain.encode(x), strong.encode(x), atol=1e-4)  # ... entering 10x stronger


def test_grown_model_computes_what_the_old_one_did():
    """Grid paths added to a trained model start at zero: the same function, and they are live after a step."""
    old = randomise(tiny())
    new = Music2Latent2(dataclasses.replace(old.config, grid_code=2)).eval()
    new.load_adapted(old.state_dict(), old.config)
    x = assert_same_function(old, new)[0]
    new.decoder_features(new.encode(x.flatten(0, 1)))[0].pow(2).sum().backward()
    for path in (new.encoder.grid_path.mix, new.decoder.grid_path.widen):  # the zero layers get gradient
        assert path.weight.grad.abs().max() > 0
    with pytest.raises(ValueError):
        tiny().load_adapted(new.state_dict(), new.config)  # grid paths cannot be dropped
    with pytest.raises(ValueError):  # a state that does not fit its config
        new.load_adapted({k: v for k, v in old.state_dict().items() if not k.startswith("cm.")}, old.config)
    with pytest.raises(ValueError):  # another geometry
        new.load_adapted(old.state_dict(), dataclasses.replace(old.config, heads=1))


def test_grid_paths_carry_where_in_the_chunk_things_happen():
    """With live grid paths the latents tell a chunk from its time reversal and the decoder's tokens differ
    across time even where its transformer input is otherwise the same for every token."""
    model = randomise(Music2Latent2(dataclasses.replace(get_config("tiny"), grid_code=2)).eval(), scale=0.2)
    torch.manual_seed(3)
    x = torch.randn(3, 2, 1024, 64) * 0.3
    plain = randomise(tiny(), scale=0.2)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if ".grid_path." not in k})
    with torch.no_grad():
        def reversal_change(m: Music2Latent2) -> float:
            z, zr = m.encode(x), m.encode(x.flip(-1))
            return float((z - zr).norm() / z.norm())
        assert reversal_change(model) > 3 * reversal_change(plain)
        z = model.encode(x)
        grid = model.decoder.grid_path(z)  # (B, tokens, width): one reading per token
        assert grid.std(1).mean() > 0.1 * grid.abs().mean()
