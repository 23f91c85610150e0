"""vaekit explore: the latent-space explorer, a local web page over a trained run."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from ..errors import VaekitError
from ..extras import install_hint
from .common import add_data_flags, add_split, add_threads, load_run, run_dataset

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    help = "serve a web page to explore a run's latent space: sliders, the latent map, interpolation, attributes"
    p = sub.add_parser("explore", help=help, description=help + ". Needs the optional extra: pip install "
                       "'vaekit[explore]'. The JSON API is documented at /docs on the same address.")
    p.add_argument("run", help="run folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only; "
                   "the explorer has no authentication)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--map-items", type=int, default=2000, help="the first N items of --split on the latent map")
    p.add_argument("--attr-file", help="CSV or CelebA list_attr_celeba.txt table of 0/1 attributes, one row per item "
                   "of --split, in order: its columns become attributes (their vectors from --split's codes)")
    add_split(p)
    add_data_flags(p)
    add_threads(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..serve import Explorer, bind, serve
    from ..serve.server import address, is_loopback

    import importlib.util

    # say so before loading anything (python-multipart reads uploads; FastAPI fails without it only when serving)
    for modules, package in ((("fastapi",), "fastapi"), (("uvicorn",), "uvicorn"),
                             (("python_multipart", "multipart"), "python-multipart")):  # its module's old name too
        found = False
        for module in modules:
            try:
                found = found or importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):  # a module set to None in sys.modules, or a broken install
                pass
        if not found:
            raise VaekitError(f"vaekit explore needs {package}: {install_hint('explore')}")
    sock = bind(args.host, args.port)  # a busy port fails before minutes of loading
    if not is_loopback(sock.getsockname()[0]):  # the address bound, whatever name --host gave it
        log.warning("warning: serving on %s: anyone who can reach this machine can use the explorer (it has no "
                    "authentication); use --host 127.0.0.1 to keep it to this machine", args.host)
    try:
        model = load_run(args.run)
        dataset = run_dataset(args.run, args)
        explorer = Explorer(model, dataset, split=args.split, map_items=args.map_items, run=str(args.run),
                            attribute_table=args.attr_file,
                            edit_method=model.run_config.edits.method)
    except BaseException:
        sock.close()
        raise
    print(f"vaekit explorer for {args.run}: {address(sock)}  (API docs: {address(sock)}docs; Ctrl-C stops)", flush=True)
    try:
        serve(explorer, sock, host=args.host)
    except KeyboardInterrupt:
        pass
    sys.stderr.write("vaekit explorer stopped\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # A score may still be running on its thread, inside torch or scikit-learn; an interpreter finalising under it
    # aborts (SIGABRT). The server has stopped and written everything it will: leave at once.
    os._exit(0)
