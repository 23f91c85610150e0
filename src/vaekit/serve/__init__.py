"""The latent-space explorer: a local web page and JSON API over a trained run (`vaekit explore`)."""
from .explorer import Explorer
from .server import bind, serve

__all__ = ["Explorer", "bind", "serve"]
