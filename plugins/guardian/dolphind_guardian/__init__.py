"""M20 guardian: playbooks over the daemon's live figures, acting through the control plane."""

from dolphind_guardian.plugin import VERSION as __version__
from dolphind_guardian.plugin import GuardianPlugin

__all__ = ["GuardianPlugin", "__version__"]
