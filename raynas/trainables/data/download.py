"""Downloads on request (``download: true``), checked and written atomically; never in tests."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence


from raynas.experiment import atomic_file

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Downloads (only on request; never in tests)
# ----------------------------------------------------------------------------------------------


def _md5(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # the published checksums are MD5
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(urls: Sequence[str], dest: str, md5: str | None) -> None:
    """Fetches the first URL that works into ``dest`` atomically, checked against ``md5``."""
    import urllib.request  # here: it costs start-up time and only downloads need it
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    errors = []
    for url in urls:
        try:
            logger.info("downloading %s to %s", url, dest)
            request = urllib.request.Request(url, headers={"User-Agent": "raynas"})
            with atomic_file(dest, "wb") as out, urllib.request.urlopen(request, timeout=60) as resp:
                digest = hashlib.md5()
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
                if md5 is not None and digest.hexdigest() != md5:  # raised inside: dest is untouched
                    raise ValueError(f"checksum mismatch: md5 {digest.hexdigest()}, expected {md5}")
            return
        except (OSError, ValueError) as err:
            errors.append(f"{url}: {err}")
    raise OSError(f"could not download {os.path.basename(dest)}: " + "; ".join(errors))
