"""The pip command that adds one of vaekit's optional extras, as this copy of vaekit was installed."""
from __future__ import annotations

import json
import shlex
import urllib.parse
import urllib.request


def install_hint(extra: str, options: str = "") -> str:
    """`pip install 'vaekit[EXTRA]'` where vaekit came from a package index; where it was installed from a folder (a
    checkout: pip install . or -e .) or a file, which no index knows by that name, the command names that folder or
    file (pip's record of where it came from: direct_url.json). `options`: pip's, before the target (-U)."""
    target = "vaekit"
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        try:
            record = distribution("vaekit").read_text("direct_url.json")
        except PackageNotFoundError:  # (run from a source tree on sys.path, not installed)
            record = None
        url = json.loads(record).get("url", "") if record else ""
        if isinstance(url, str) and url.startswith("file://"):
            target = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    except (OSError, ValueError, AttributeError):  # an unreadable or odd record: the name, as from an index
        target = "vaekit"
    return f"pip install {options + ' ' if options else ''}{shlex.quote(f'{target}[{extra}]')}"
