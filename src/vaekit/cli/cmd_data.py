"""`vaekit data list` shows every data set and where file-backed ones were found; `vaekit data get` fetches one."""
from __future__ import annotations

import argparse

from ..data import available_datasets, faces
from ..data.idx_datasets import SPECS, fetch, locate, search_dirs
from ..errors import VaekitError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="list the data sets; download MNIST, Fashion-MNIST or the face sets")
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION")
    actions.required = True
    actions.add_parser("list", help="every named data set, and whether its files are on this machine")
    get = actions.add_parser(
        "get", help="download and checksum a data set's files (default into ~/.cache/vaekit/NAME/, or "
        "$XDG_CACHE_HOME/vaekit/NAME/ where that is set)"
    )
    get.add_argument("name", choices=sorted([*SPECS, *faces.SPECS]), help="the data set to fetch")
    get.add_argument("--dest", metavar="DIR", help="put the files here instead of vaekit's cache folder")
    get.add_argument("--from", dest="source", metavar="FILE", help="a face set: convert this copy of its public file "
                     "(the archive or .mat `vaekit data get` would download) instead of downloading it")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return ACTIONS[args.data_action](args)


def list_datasets(args: argparse.Namespace) -> int:
    descriptions = available_datasets()
    width = max(len(name) for name in descriptions)
    for name in sorted(descriptions):
        print(f"{name:<{width}}  {descriptions[name]}")
        found = locate(name) if name in SPECS else faces.locate(faces.SPECS[name]) if name in faces.SPECS else False
        if found is not False:
            status = f"found in {found}" if found else f"not found (run `vaekit data get {name}`)"
            print(f"{'':<{width}}  {status}")
    print("Or give a path: a .npy/.npz file, a table (.csv/.tsv/.parquet) or a folder of images.")
    return 0


def get_dataset(args: argparse.Namespace) -> int:
    if args.name in faces.SPECS:
        spec = faces.SPECS[args.name]
        path = faces.fetch_faces(args.name, args.dest, args.source)
        print(f"{args.name}: {len(spec.arrays)} arrays verified in {path}")
        if path.parent not in search_dirs(spec.folder):  # --data-dir DIR searches DIR/FOLDER and DIR itself
            print(f"use it with --data-dir {path.parent} (or export VAEKIT_DATA={path.parent})")
        return 0
    if args.source is not None:
        raise VaekitError(f"--from converts a face set's file; {args.name} is fetched with its own checksums: drop --from")
    dest = fetch(args.name, args.dest)
    print(f"{args.name}: 4 files verified in {dest}")
    if dest not in search_dirs(args.name):
        # A --dest outside the search path needs pointing at, or loading will not find it.
        hint = dest.parent if dest.name == args.name else dest
        print(f"use it with --data-dir {hint} (or export VAEKIT_DATA={hint})")
    return 0


ACTIONS = {"list": list_datasets, "get": get_dataset}
