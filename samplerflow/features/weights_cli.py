"""``samplerflow weights fetch``: stage checkpoints into a cache folder before an offline run.

:func:`add_subcommands` registers the parser on the main command line and
:func:`dispatch` runs it; both are called from :mod:`samplerflow.cli`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from samplerflow.errors import InputError

log = logging.getLogger(__name__)


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``weights`` with its ``fetch`` action on the main parser's subcommands."""
    weights = subparsers.add_parser(
        "weights", help="stage backbone checkpoints into a cache folder for offline extraction"
    )
    actions = weights.add_subparsers(dest="weights_action", required=True, metavar="ACTION")
    fetch = actions.add_parser(
        "fetch",
        help="copy or download each backbone's checkpoint once into --cache-dir and record its sha256",
        description=(
            "Stage the checkpoint of each backbone into CACHE_DIR/BACKBONE/ and record it in "
            "CACHE_DIR/manifest.json. Parallel fetches into one folder wait on a file lock. Gated "
            "Hugging Face repositories read the access token from HF_TOKEN."
        ),
    )
    fetch.add_argument(
        "--backbone", action="append", required=True, metavar="NAME",
        help="backbone whose weights to stage; repeat or comma-separate for several. See 'samplerflow backbones'",
    )
    fetch.add_argument(
        "--weights", action="append", metavar="BACKBONE=SPEC",
        help="where a backbone's checkpoint comes from: a local file or hf-hub:ORG/NAME[/FILE] "
        "(default: the backbone's published hub repository; required for ctranspath)",
    )
    fetch.add_argument("--cache-dir", required=True, type=Path, help="folder that receives the checkpoints and manifest.json")
    fetch.add_argument(
        "--lock-timeout", type=float, default=6 * 3600.0, metavar="SECONDS",
        help="how long to wait for another fetch into the same folder (default: %(default)g s)",
    )


def dispatch(args: argparse.Namespace) -> int:
    """Run the ``weights`` action in ``args``; print one JSON line per staged backbone and return 0."""
    from samplerflow.cli import parse_weights_option
    from samplerflow.features.fetch import MANIFEST_NAME, fetch_weights

    if args.weights_action != "fetch":
        raise InputError(f"Unknown weights action {args.weights_action!r}: use fetch")
    names = [name.strip() for item in args.backbone for name in item.split(",") if name.strip()]
    specs: dict[str, str | None] = {name: None for name in names}
    for name, spec in parse_weights_option(args.weights).items():
        if name not in specs:
            raise InputError(f"--weights given for backbone '{name}', which is not in --backbone {','.join(names)}")
        specs[name] = spec

    staged = fetch_weights(specs, args.cache_dir, lock_timeout_s=args.lock_timeout)
    for name, record in staged.items():
        print(json.dumps({
            "backbone": name,
            "path": str(record.path),
            "sha256": record.sha256,
            "size_bytes": record.size_bytes,
            "reused": record.reused,
        }))
    log.info("Manifest: %s", Path(args.cache_dir).resolve() / MANIFEST_NAME)
    return 0

