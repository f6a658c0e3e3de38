"""The sample member whose filled copy the check looks at (and `build` and `preview` show): links
made as for a real send, with a stand-in secret when none is set."""

from __future__ import annotations

import dataclasses

from newsletter import render
from newsletter.config import Config
from newsletter.render import Edition

# Check never needs the real secret: sample links are only looked at, never sent.
SAMPLE_SECRET = "check-sample-secret-never-used-to-send"


class _SampleSecretConfig(Config):
    """The user's settings with a stand-in secret, so check can build sample member links."""

    @property
    def secret(self) -> str | None:
        return super().secret or SAMPLE_SECRET


def _with_sample_secret(cfg: Config) -> Config:
    return _SampleSecretConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})


def sample_links(cfg: Config, edition: Edition) -> dict[str, str]:
    """Link tokens → URLs for the sample member, made as for a real send (any secret will do)."""
    return render.sample_links(_with_sample_secret(cfg), edition)


def sample_values(cfg: Config, edition: Edition) -> dict[str, str]:
    """Token → value for the sample member of `newsletter build`: links and greeting."""
    return render.sample_values(_with_sample_secret(cfg), edition)
