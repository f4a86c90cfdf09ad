"""M25 governor: hard policy, checked before every order and after every fill."""

from dolphind_governor.plugin import VERSION as __version__
from dolphind_governor.plugin import GovernorPlugin

__all__ = ["GovernorPlugin", "__version__"]
