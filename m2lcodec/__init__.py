"""m2lcodec: a neural audio codec for music (Music2Latent2: summary embeddings + consistency decoding)."""

from m2lcodec.version import __version__


def load_codec(model=None, device: str = "auto", **kwargs):
    """The codec with the bundled default model, or with the weights file `model` (see codec.Codec)."""
    from m2lcodec.codec import load_codec as _load

    return _load(model, device, **kwargs)


__all__ = ["__version__", "load_codec"]
